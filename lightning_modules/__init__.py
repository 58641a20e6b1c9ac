"""One LitModule per method. A method registers itself when its class is defined (`FieldGenerativeModule.registry`,
keyed by `method_name`); importing this package imports each of its modules, so a new method's file is found
with no edit anywhere else."""
import importlib
import pkgutil

from datamodules.fields import DOMAIN_KINDS
from lightning_modules.base import FieldGenerativeModule

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):  # not __main__
        importlib.import_module(f"{__name__}.{_module.name}")

METHODS = FieldGenerativeModule.registry


def methods_table() -> str:
    """The README's methods x domains table, derived from the registered methods' capabilities."""
    columns = ["method", "`method=`", *DOMAIN_KINDS.values(), "any resolution", "likelihood", "completion",
               "orders", "views"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, method in sorted(METHODS.items()):
        capabilities = method.capabilities
        title = importlib.import_module(method.__module__).__doc__.split(":")[0].strip()
        mark = lambda flag: "yes" if flag else "—"  # noqa: E731
        cells = [title, f"`{name}`", *(mark(kind in capabilities.domains) for kind in DOMAIN_KINDS),
                 mark(capabilities.resolution_free), capabilities.likelihood or "—", mark(capabilities.completion),
                 mark(capabilities.orders), mark(capabilities.renders_views)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
