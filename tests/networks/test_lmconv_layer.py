"""The locally masked convolution and its masks: Algorithm 2 by a loop, F.conv2d, the unfold reference, gradients,
per-sample masks, and the autoregressive property of the whole network under every kind of order."""
import pytest
import torch
import torch.nn.functional as F

from networks.lmconv.conv import BACKENDS, DENSE_REFERENCE, LocallyMaskedConv2d, PositionalNorm
from networks.lmconv.masks import OrderMasks, kernel_masks
from networks.lmconv.orders import named_order, observed_first, rank_of
from networks.lmconv.pixelcnn import LocallyMaskedPixelCNN


def algorithm2(order, height, width, kernel_size, dilation, first_layer):
    """Jain et al. Algorithm 2, literally: walk the order, mark the already generated neighbours."""
    mask = torch.zeros(kernel_size ** 2, height * width)
    generated = set()
    for pixel in order.tolist():
        r, c = divmod(pixel, width)
        for kr in range(kernel_size):
            for kc in range(kernel_size):
                rr, cc = r + dilation * (kr - kernel_size // 2), c + dilation * (kc - kernel_size // 2)
                if 0 <= rr < height and 0 <= cc < width and rr * width + cc in generated:
                    mask[kr * kernel_size + kc, pixel] = 1
        generated.add(pixel)
    if not first_layer:
        mask[kernel_size ** 2 // 2] = 1
    return mask


@pytest.mark.parametrize("shape", [(8, 8), (7, 5)])
@pytest.mark.parametrize("name", ["raster_0", "s_curve_1", "gilbert_2", "center_quarter_last_3", "random"])
def test_vectorised_masks_equal_the_loop_of_algorithm_2(shape, name):
    order = torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(0)) if name == "random" \
        else named_order(name, *shape)
    for kernel_size in (3, 5):
        for dilation in (1, 2):
            for first in (True, False):
                expected = algorithm2(order, *shape, kernel_size, dilation, first)
                got = kernel_masks(rank_of(order), shape, kernel_size, dilation, include_centre=not first)
                assert torch.equal(got, expected), (name, kernel_size, dilation, first)


def test_mask_types_the_first_pixel_and_the_raster_interior():
    order = named_order("raster_0", 6, 6)
    masks = OrderMasks.of(rank_of(order), (6, 6), 3, 2)
    assert (masks.first[4] == 0).all() and (masks.undilated[4] == 1).all()
    assert masks.first[:, order[0]].sum() == 0  # p(x_pi(1)) ignores the image
    interior = 2 * 6 + 3
    pixelcnn_a = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0, 0.])  # PixelCNN's mask A, row-major 3x3
    assert torch.equal(masks.first[:, interior], pixelcnn_a)
    assert masks.first[:, 0].sum() == 0 and masks.first[[0, 3], 6].sum() == 0  # padding is never read


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("backend", [*BACKENDS, DENSE_REFERENCE])
def test_an_all_ones_mask_is_a_plain_convolution(kernel_size, dilation, bias, backend):
    torch.manual_seed(0)
    conv = LocallyMaskedConv2d(4, 6, kernel_size, dilation, bias=bias, backend=backend)
    x = torch.randn(2, 4, 9, 7)
    ones = torch.ones(kernel_size ** 2, 63)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=dilation * (kernel_size // 2), dilation=dilation)
    torch.testing.assert_close(conv(x, ones), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("per_sample", [False, True])
def test_every_backend_equals_the_unfold_reference_with_gradients(kernel_size, per_sample):
    torch.manual_seed(1)
    shape, batch = (6, 5), 3
    orders = [named_order(f"s_curve_{v}", *shape) for v in range(batch)]
    rank = torch.stack([rank_of(o) for o in orders]) if per_sample else rank_of(orders[0])
    mask = kernel_masks(rank, shape, kernel_size, 2).double()
    x = torch.randn(batch, 3, *shape, dtype=torch.double, requires_grad=True)
    reference = LocallyMaskedConv2d(3, 4, kernel_size, 2, backend="unfold").double()
    expected = reference(x, mask)
    grad_out = torch.randn_like(expected)
    expected_grads = torch.autograd.grad(expected, [x, reference.weight, reference.bias], grad_out)
    for backend in BACKENDS:
        conv = LocallyMaskedConv2d(3, 4, kernel_size, 2, backend=backend).double()
        conv.load_state_dict(reference.state_dict())
        out = conv(x, mask)
        torch.testing.assert_close(out, expected)
        grads = torch.autograd.grad(out, [x, conv.weight, conv.bias], grad_out)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_in_float64(backend):
    torch.manual_seed(2)
    shape = (4, 3)
    mask = kernel_masks(rank_of(named_order("gilbert_1", *shape)), shape, 3, 1, include_centre=False).double()
    conv = LocallyMaskedConv2d(2, 2, 3, backend=backend).double()
    x = torch.randn(2, 2, *shape, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inputs: conv(inputs, mask), (x,))
    weight_grad = lambda weight: torch.func.functional_call(conv, {"weight": weight, "bias": conv.bias},  # noqa
                                                            (x.detach(), mask))
    assert torch.autograd.gradcheck(weight_grad, (conv.weight.detach().clone().requires_grad_(),))


def test_per_sample_masks_equal_a_loop_over_samples():
    torch.manual_seed(3)
    shape = (5, 5)
    ranks = torch.stack([rank_of(named_order(f"gilbert_{v}", *shape)) for v in range(4)])
    masks = kernel_masks(ranks, shape, 3, 1)
    conv = LocallyMaskedConv2d(2, 3, 3)
    x = torch.randn(4, 2, *shape)
    looped = torch.cat([conv(x[i:i + 1], masks[i]) for i in range(4)])
    torch.testing.assert_close(conv(x, masks), looped)


def test_bad_layer_inputs_are_refused():
    with pytest.raises(ValueError, match="odd kernel size"):
        LocallyMaskedConv2d(1, 1, 4)
    with pytest.raises(ValueError, match="unknown LMConv backend"):
        LocallyMaskedConv2d(1, 1, 3, backend="cuda_magic")
    with pytest.raises(ValueError, match=r"mask must be \(9, 16\)"):
        LocallyMaskedConv2d(1, 1, 3)(torch.zeros(1, 1, 4, 4), torch.ones(9, 15))
    assert torch.allclose(PositionalNorm()(torch.randn(2, 8, 3, 3) * 5 + 2).mean(1), torch.zeros(2, 3, 3),
                          atol=1e-5)


def dependencies(net, masks, shape, channels=1):
    """D[p, q]: does any output at pixel p depend on the input at pixel q (exact, from the Jacobian)."""
    x = torch.randn(1, channels, *shape, dtype=torch.double)
    jacobian = torch.func.jacrev(lambda inputs: net(inputs, masks))(x)  # (1, C_out, H, W, 1, C, H, W)
    n = shape[0] * shape[1]
    return jacobian.abs().sum((0, 4)).reshape(-1, n, channels, n).sum((0, 2)) > 0


def order_cases(shape):
    names = [f"s_curve_{v}" for v in range(8)] + [f"gilbert_{v}" for v in range(8)] + ["raster_0"]
    cases = [(name, named_order(name, *shape)) for name in names]
    cases.append(("random", torch.randperm(shape[0] * shape[1], generator=torch.Generator().manual_seed(4))))
    bottom_hidden = torch.arange(shape[0] * shape[1]) >= shape[0] * shape[1] // 2
    cases.append(("completion_top_observed", observed_first(named_order("s_curve_0", *shape), ~bottom_hidden[None])[0]))
    cases.append(("completion_bottom_observed", observed_first(named_order("s_curve_0", *shape), bottom_hidden[None])[0]))
    cases.append(("center_quarter_last_5", named_order("center_quarter_last_5", *shape)))
    return cases


@pytest.fixture(scope="module")
def small_net():
    torch.manual_seed(5)
    return LocallyMaskedPixelCNN(1, 3, filters=4, num_res_blocks=1).double()


@pytest.mark.parametrize("name,order", order_cases((8, 8)), ids=[name for name, _ in order_cases((8, 8))])
def test_the_network_is_autoregressive_in_every_order(small_net, name, order):
    shape = (8, 8)
    depends = dependencies(small_net, OrderMasks.of(rank_of(order), shape, 3, 2), shape)
    rank = rank_of(order)
    later_or_same = rank[None, :] >= rank[:, None]  # [p, q]: q is generated at or after p
    assert not (depends & later_or_same).any(), f"{name}: a pixel sees itself or a later pixel"
    previous, current = order[:-1], order[1:]
    neighbours = ((previous // 8 - current // 8).abs() <= 1) & ((previous % 8 - current % 8).abs() <= 1)
    sees_previous = depends[current, previous]
    assert sees_previous[neighbours].all(), f"{name}: a pixel does not see the one generated just before it"
    if name.startswith(("s_curve", "gilbert")):
        assert neighbours.all()


def test_per_sample_masks_make_each_sample_autoregressive_in_its_own_order(small_net):
    shape = (8, 8)
    orders = torch.stack([named_order("s_curve_0", *shape), named_order("gilbert_3", *shape)])
    masks = OrderMasks.of(rank_of(orders), shape, 3, 2)
    x = torch.randn(2, 1, *shape, dtype=torch.double)
    jacobian = torch.func.jacrev(lambda inputs: small_net(inputs, masks))(x)
    for b in range(2):
        depends = jacobian[b].abs().sum(0).reshape(64, 2, 64).sum(1) > 0  # [p, (sample, q)]
        rank = rank_of(orders[b])
        assert not (depends & (rank[None, :] >= rank[:, None])).any()
        cross = jacobian[b, :, :, :, 1 - b].abs().sum()
        assert cross == 0, "samples must not mix"
