"""One LitModule per method; `METHODS` maps config names to classes."""
from lightning_modules.ddpm import DDPM
from lightning_modules.dpf import DPF

METHODS = {"ddpm": DDPM, "dpf": DPF}


def methods_for_domain(domain_name: str) -> list[str]:
    """Names of the methods that accept a domain (for error messages)."""
    return sorted(name for name, cls in METHODS.items() if domain_name in cls.supported_domains)
