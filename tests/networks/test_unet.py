"""DDPM U-Net: shapes, zero-init output, time conditioning, attention placement, parameter counts, errors."""
import pytest
import torch
from torch import nn

from networks.unet import AttentionBlock, UNet

TINY = dict(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_resolutions=(4,), num_groups=8)


def unzeroed(model: UNet, seed: int = 0) -> UNet:
    """Re-initialise the zero-init layers (as training would move them) so every path carries signal."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d) and not module.weight.any():
                module.weight.copy_(0.1 * torch.randn(module.weight.shape, generator=generator))
    return model


@pytest.mark.parametrize(
    "in_channels, out_channels, image_size, config",
    [
        (3, 3, 8, TINY),
        (1, 2, 16, dict(base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8, 4),
                        num_groups=4, num_heads=2, dropout=0.1)),
        (3, 6, 4, dict(base_channels=8, channel_mults=(1,), num_res_blocks=1, attention_resolutions=(), num_groups=4)),
    ],
)
def test_output_shape(in_channels, out_channels, image_size, config):
    model = UNet(in_channels, out_channels, image_size, **config)
    x = torch.randn(2, in_channels, image_size, image_size)
    assert model(x, torch.tensor([0, 999])).shape == (2, out_channels, image_size, image_size)


def test_fresh_network_outputs_zero():
    torch.manual_seed(0)
    model = UNet(3, 3, 8, **TINY)
    out = model(torch.randn(2, 3, 8, 8), torch.tensor([3, 700]))
    assert torch.equal(out, torch.zeros_like(out))


def test_time_conditioning_changes_output():
    torch.manual_seed(0)
    model = unzeroed(UNet(3, 3, 8, **TINY)).eval()
    x = torch.randn(1, 3, 8, 8).expand(2, -1, -1, -1)
    out = model(x, torch.tensor([1, 500]))
    assert (out[0] - out[1]).abs().max() > 1e-3
    # float and integer timesteps are the same timestep
    torch.testing.assert_close(model(x, torch.tensor([1.0, 500.0])), out)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = unzeroed(UNet(3, 3, 8, **TINY))
    model(torch.randn(2, 3, 8, 8), torch.tensor([5, 50])).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
        assert torch.isfinite(param.grad).all(), name


def test_fresh_network_gradient_only_reaches_output_conv():
    # zero-init: the output conv receives gradient first, as in Ho et al.; everything before it is cut off by its
    # zero weights (d out / d h = W_out = 0), so its weight and bias are the only parameters with any gradient
    model = UNet(3, 3, 8, **TINY)
    model(torch.randn(2, 3, 8, 8), torch.tensor([5, 50])).sum().backward()
    output_conv = {id(model.out[-1].weight), id(model.out[-1].bias)}
    assert model.out[-1].weight.grad.abs().sum() > 0 and model.out[-1].bias.grad.abs().sum() > 0
    others = [(name, param) for name, param in model.named_parameters() if id(param) not in output_conv]
    assert len(others) > 50  # every other layer of the tiny net
    for name, param in others:
        assert param.grad is None or not param.grad.any(), name


def test_attention_is_placed_at_requested_resolutions():
    model = UNet(1, 1, 16, base_channels=8, channel_mults=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8,),
                 num_groups=4)
    seen = []
    for module in model.modules():
        if isinstance(module, AttentionBlock):
            module.register_forward_hook(lambda mod, inputs, output: seen.append(inputs[0].shape[-1]))
    model(torch.randn(1, 1, 16, 16), torch.tensor([0]))
    # level at 8: 2 blocks down + 3 blocks up; the middle block (at 4) always has one
    assert sorted(seen) == [4] + [8] * 5


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    model = unzeroed(UNet(3, 3, 8, **TINY)).eval()
    x = torch.randn(2, 3, 8, 8)
    t = torch.tensor([10, 20])
    reference = model(x, t)
    model = model.to(memory_format=torch.channels_last)
    torch.testing.assert_close(model(x.to(memory_format=torch.channels_last), t), reference, atol=1e-5, rtol=1e-5)


def test_traces_as_one_graph():
    # fullgraph=True fails on any graph break (data-dependent control flow); the eager backend skips codegen
    torch._dynamo.reset()
    model = UNet(3, 3, 8, **TINY).eval()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    torch.testing.assert_close(compiled(x, t), model(x, t))
    torch._dynamo.reset()


@pytest.mark.parametrize(
    "config, expected, paper",
    [
        (dict(image_size=32, channel_mults=(1, 2, 2, 2), dropout=0.1), 35_746_307, 35.7e6),
        (dict(image_size=256, channel_mults=(1, 1, 2, 2, 4, 4)), 113_673_219, 114e6),
    ],
)
def test_parameter_counts_match_ho_et_al(config, expected, paper):
    with torch.device("meta"):  # count only: no memory, no init cost
        model = UNet(3, 3, base_channels=128, num_res_blocks=2, attention_resolutions=(16,), **config)
    count = sum(p.numel() for p in model.parameters())
    print(f"UNet {config['channel_mults']}: {count / 1e6:.2f}M params, paper {paper / 1e6:.1f}M")
    assert count == expected
    assert abs(count - paper) < 0.5e6  # the paper rounds to 0.1M (35.7M) and 1M (114M)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=10, channel_mults=(1, 2, 2)), "divisible by 4"),
        (dict(image_size=8, base_channels=12), "GroupNorm"),
        (dict(image_size=8, attention_resolutions=(2,)), "not resolutions"),
        (dict(image_size=8, num_heads=3), "num_heads"),
    ],
)
def test_bad_config_raises(kwargs, message):
    config = {**TINY, **kwargs}
    with pytest.raises(ValueError, match=message):
        UNet(3, 3, **config)


@pytest.mark.parametrize(
    "shape, t, message",
    [
        ((2, 3, 16, 16), torch.tensor([0, 1]), "expects x of shape"),
        ((2, 1, 8, 8), torch.tensor([0, 1]), "expects x of shape"),
        ((2, 3, 8, 8), torch.tensor([0]), "one timestep per image"),
    ],
)
def test_bad_input_raises(shape, t, message):
    model = UNet(3, 3, 8, **TINY)
    with pytest.raises(ValueError, match=message):
        model(torch.randn(shape), t)
