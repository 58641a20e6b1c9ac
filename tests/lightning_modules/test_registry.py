"""Methods register themselves with their capabilities; errors and the README's table are derived from them."""
from pathlib import Path

import pytest
import torch

from datamodules.fields import Grid, LatLon
from evaluation.likelihood import LikelihoodModel
from evaluation.protocol import Capabilities, MetricNotApplicableError, check_metrics, default_metrics
from lightning_modules import METHODS, methods_table
from lightning_modules.base import DomainNotSupportedError, FieldGenerativeModule

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def scratch_registry(monkeypatch):
    """Methods defined in a test are registered into a copy of the registry that the test drops afterwards."""
    monkeypatch.setattr(FieldGenerativeModule, "registry", dict(FieldGenerativeModule.registry))
    return FieldGenerativeModule.registry


def test_the_package_registers_every_method_module():
    assert {"ddpm", "dpf"} <= set(METHODS)
    for name, method in METHODS.items():
        assert method.method_name == name and isinstance(method.capabilities, Capabilities)


def test_a_new_class_registers_itself_and_is_named_in_errors(scratch_registry):
    class LatLonOnly(FieldGenerativeModule):
        method_name = "latlon_only"
        capabilities = Capabilities(domains=("latlon",))

    assert scratch_registry["latlon_only"] is LatLonOnly
    assert "latlon_only" in FieldGenerativeModule.methods_where(lambda c: "latlon" in c.domains)
    with pytest.raises(DomainNotSupportedError, match=r"accept 'grid2d': \[[^]]*'ddpm'") as error:
        LatLonOnly.check_domain(Grid((4, 4)))
    assert "latlon_only" not in str(error.value).split("accept")[1]
    LatLonOnly.check_domain(LatLon((4, 8)))


def test_capabilities_must_match_the_interfaces_implemented(scratch_registry):
    with pytest.raises(TypeError, match="capabilities.likelihood"):
        type("Claims", (FieldGenerativeModule,), {"method_name": "claims", "capabilities": Capabilities(
            domains=("grid2d",), likelihood="exact")})
    with pytest.raises(TypeError, match="capabilities.likelihood"):
        type("Hides", (FieldGenerativeModule, LikelihoodModel), {
            "method_name": "hides", "capabilities": Capabilities(domains=("grid2d",)),
            "bits_per_dim": lambda self, batch: {}})
    with pytest.raises(TypeError, match="capabilities.completion"):
        type("Completes", (FieldGenerativeModule,), {
            "method_name": "completes", "capabilities": Capabilities(domains=("grid2d",)),
            "complete": lambda self, fields, observed, **options: fields})
    with pytest.raises(TypeError, match="is taken by"):
        type("Impostor", (FieldGenerativeModule,), {"method_name": "ddpm",
                                                    "capabilities": Capabilities(domains=("grid2d",))})
    with pytest.raises(ValueError, match="non-empty subset"):
        Capabilities(domains=("torus",))


def test_metrics_follow_the_domain_and_the_capabilities():
    ddpm, dpf = METHODS["ddpm"].capabilities, METHODS["dpf"].capabilities
    assert default_metrics("grid2d", ddpm, True) == ["loss", "bpd", "fid", "kid", "is", "precision_recall", "confidence"]
    assert default_metrics("grid3d", dpf, True) == ["loss", "coverage_mmd"]
    # spherical images are scored on their read-back onto the image plane
    assert default_metrics("sphere", dpf, True) == ["loss", "fid", "kid", "is", "precision_recall", "confidence"]
    assert default_metrics("latlon", dpf, True) == ["loss"]
    assert default_metrics("grid2d", None, False) == ["fid", "kid", "is", "precision_recall", "confidence"]
    with pytest.raises(MetricNotApplicableError, match="method 'dpf' declares none"):
        check_metrics(["bpd"], "grid2d", dpf, "dpf")
    with pytest.raises(MetricNotApplicableError, match=r"coverage_mmd scores grid 3-D \(voxels\) fields"):
        check_metrics(["coverage_mmd"], "grid2d", ddpm, "ddpm")
    with pytest.raises(MetricNotApplicableError, match="needs the model"):
        check_metrics(["loss"], "grid2d", None)
    with pytest.raises(ValueError, match="list of names"):
        check_metrics("/runs/a", "grid2d", ddpm)


def test_the_readme_table_is_the_registry_s():
    assert methods_table() in README.read_text(), "README's methods table is stale: paste `python -m lightning_modules`"


def test_networks_are_every_child_with_parameters(scratch_registry):
    class TwoNets(FieldGenerativeModule):
        method_name = "two_nets"
        capabilities = Capabilities(domains=("grid2d",))

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.coarse, self.fine, self.activation = torch.nn.Linear(2, 2), torch.nn.Linear(2, 3), torch.nn.ReLU()

    module = TwoNets(domain=Grid((2, 2)), signal_dim=1, num_levels=None, optimizer={})
    assert list(module.networks()) == ["coarse", "fine"]


def test_a_trained_module_that_is_no_method_stays_out_of_the_registry(scratch_registry):
    from lightning_modules.base import FieldModule

    class Encoder(FieldModule):
        method_name = "encoder"  # ignored: only FieldGenerativeModule registers

    module = Encoder(domain=Grid((2, 2)), signal_dim=3, num_levels=None, optimizer={})
    assert "encoder" not in scratch_registry and not isinstance(module, FieldGenerativeModule)
