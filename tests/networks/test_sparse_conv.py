"""The lattice sparse convolution (depthwise, and regular for Table 2's ablation): every backend against a dense
masked conv and brute force (values and gradients; spconv, regular kernels only, where it imports), the
neighbour-count normaliser, kernel resizing, refusals."""
import importlib.util
import sys

import pytest
import torch
import torch.nn.functional as F

from datamodules.points import draw_distinct
from networks import sparse_conv as sparse_conv_module
from networks.sparse_conv import (BACKENDS, DEPTHWISE_BACKENDS, check_lattice_index, neighbour_count, resize_kernel,
                                  resized_kernel_size, sparse_conv, support_normaliser)

F64 = torch.float64


def sparse_points(batch=2, shape=(9, 7), fraction=0.3, channels=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    count = max(1, int(fraction * shape[0] * shape[1]))
    index = draw_distinct(batch, shape[0] * shape[1], count, torch.device("cpu"), g)
    values = torch.randn(batch, count, channels, dtype=F64, generator=g)
    return values, index


def brute_force(values, index, shape, weight):
    """out_i = sum over sampled points j within the window of i of w[:, :, dy + p, dx + p] x_j (elementwise for a
    depthwise weight, a matrix product for a regular one), one point at a time."""
    size, width = weight.shape[-1], shape[1]
    pad = size // 2
    depthwise = weight.shape[1] == 1
    out = values.new_zeros(*values.shape[:2], weight.shape[0])
    for b in range(values.shape[0]):
        for i, cell in enumerate(index[b].tolist()):
            for j, other in enumerate(index[b].tolist()):
                dy, dx = other // width - cell // width, other % width - cell % width
                if abs(dy) <= pad and abs(dx) <= pad:
                    taps = weight[:, :, dy + pad, dx + pad]
                    out[b, i] += taps[:, 0] * values[b, j] if depthwise else taps @ values[b, j]
    return out


def masked_dense(values, index, shape, weight):
    """A zero-padded dense conv (depthwise or regular) of the image that is zero off the points, read at the points."""
    batch, _, channels = values.shape
    dense = torch.zeros(batch, shape[0] * shape[1], channels, dtype=values.dtype)
    for b in range(batch):
        dense[b, index[b]] = values[b]
    image = dense.transpose(1, 2).reshape(batch, channels, *shape)
    out = F.conv2d(image, weight, padding=weight.shape[-1] // 2, groups=channels if weight.shape[1] == 1 else 1)
    flat = out.reshape(batch, out.shape[1], -1).transpose(1, 2)
    return torch.stack([flat[b, index[b]] for b in range(batch)])


@pytest.mark.parametrize("backend", DEPTHWISE_BACKENDS)
@pytest.mark.parametrize("kernel_size,fraction", [(3, 0.3), (5, 0.6), (7, 1.0)])
def test_every_backend_is_a_masked_dense_conv_and_brute_force(backend, kernel_size, fraction):
    shape = (9, 7)
    values, index = sparse_points(shape=shape, fraction=fraction)
    weight = torch.randn(3, 1, kernel_size, kernel_size, dtype=F64, generator=torch.Generator().manual_seed(1))
    out = sparse_conv(values, index, shape, weight, backend)
    assert torch.allclose(out, masked_dense(values, index, shape, weight), atol=1e-12)
    assert torch.allclose(out, brute_force(values, index, shape, weight), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_regular_conv_is_a_masked_dense_conv_and_brute_force_with_gradients(backend):
    if backend == "spconv":
        pytest.importorskip("spconv")
    shape = (7, 6)
    values, index = sparse_points(shape=shape, fraction=0.4, channels=3, seed=6)
    weight = torch.randn(4, 3, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(7))
    out = sparse_conv(values, index, shape, weight, backend)
    assert out.shape == (2, values.shape[1], 4)
    assert torch.allclose(out, masked_dense(values, index, shape, weight), atol=1e-12)
    assert torch.allclose(out, brute_force(values, index, shape, weight), atol=1e-12)
    values.requires_grad_(True)
    weight.requires_grad_(True)
    torch.autograd.gradcheck(lambda v, w: sparse_conv(v, index, shape, w, backend), (values, weight))
    cotangent = torch.randn_like(out)
    got = torch.autograd.grad((sparse_conv(values, index, shape, weight, backend) * cotangent).sum(),
                              (values, weight))
    expected = torch.autograd.grad((masked_dense(values, index, shape, weight) * cotangent).sum(), (values, weight))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(got, expected))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_regular_conv_runs_under_bf16_autocast(backend):
    if backend == "spconv":
        pytest.importorskip("spconv")
    values, index = sparse_points(channels=4, seed=12)
    weight = torch.randn(5, 4, 3, 3, generator=torch.Generator().manual_seed(13))
    expected = masked_dense(values, index, (9, 7), weight.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sparse_conv(values.float(), index, (9, 7), weight, backend)
    assert torch.allclose(out.double(), expected, atol=0.1, rtol=0.02)


def test_spconv_matches_the_reference_on_dilated_float32_kernels_with_gradients():
    pytest.importorskip("spconv")
    shape = (12, 10)
    values, index = sparse_points(shape=shape, fraction=0.3, channels=5, seed=10)
    values = values.float().requires_grad_(True)
    weight = torch.randn(6, 5, 5, 5, generator=torch.Generator().manual_seed(11)).requires_grad_(True)
    cotangent = torch.randn(*values.shape[:2], 6)
    outs = {backend: sparse_conv(values, index, shape, weight, backend, dilation=2)
            for backend in ("spconv", "kernel_map")}
    assert torch.allclose(outs["spconv"], outs["kernel_map"], atol=1e-5)
    got, expected = (torch.autograd.grad((outs[b] * cotangent).sum(), (values, weight)) for b in outs)
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(got, expected))


def test_spconv_refuses_depthwise_kernels_and_names_the_install_when_absent(monkeypatch):
    values, index = sparse_points(channels=3)
    if importlib.util.find_spec("spconv") is not None:
        with pytest.raises(ValueError, match="'spconv' has no depthwise convolution.*dense_scatter, kernel_map"):
            sparse_conv(values, index, (9, 7), torch.zeros(3, 1, 3, 3, dtype=F64), "spconv")
    monkeypatch.setitem(sys.modules, "spconv", None)
    sparse_conv_module._spconv_module.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"pip install spconv.*peers"):
            sparse_conv(values, index, (9, 7), torch.zeros(4, 3, 3, 3, dtype=F64), "spconv")
    finally:
        sparse_conv_module._spconv_module.cache_clear()


@pytest.mark.parametrize("backend", DEPTHWISE_BACKENDS)
def test_a_dilated_conv_is_a_masked_dense_dilated_conv_and_its_normaliser_counts_the_taps(backend):
    shape = (9, 8)
    values, index = sparse_points(shape=shape, fraction=0.5, channels=2, seed=8)
    weight = torch.randn(2, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(9))
    image = torch.zeros(2, 2, shape[0] * shape[1], dtype=F64)
    for b in range(2):
        image[b, :, index[b]] = values[b].T
    dense = F.conv2d(image.view(2, 2, *shape), weight, padding=2, dilation=2, groups=2).flatten(2)
    expected = torch.stack([dense[b, :, index[b]].T for b in range(2)])
    assert torch.allclose(sparse_conv(values, index, shape, weight, backend, dilation=2), expected, atol=1e-12)
    present = torch.zeros(2, shape[0] * shape[1])
    for b in range(2):
        present[b, index[b]] = 1
    taps = F.conv2d(present.view(2, 1, *shape), torch.ones(1, 1, 3, 3), padding=2, dilation=2).flatten(1)
    counts = neighbour_count(index, shape, 3, dilation=2)[..., 0]
    assert torch.equal(counts, torch.stack([taps[b, index[b]] for b in range(2)]))


def test_on_the_full_lattice_it_is_a_zero_padded_conv2d():
    shape = (6, 8)
    image = torch.randn(2, 4, *shape, dtype=F64)
    weight = torch.randn(4, 1, 5, 5, dtype=F64)
    index = torch.arange(48).expand(2, -1)
    values = image.flatten(2).transpose(1, 2)
    for backend in DEPTHWISE_BACKENDS:
        out = sparse_conv(values, index, shape, weight, backend)
        expected = F.conv2d(image, weight, padding=2, groups=4).flatten(2).transpose(1, 2)
        assert torch.allclose(out, expected, atol=1e-12)


def test_a_delta_kernel_reads_the_neighbour_at_its_offset():
    """w = 1 at row 0, col 2 of a 3x3 kernel: out(y, x) = in(y - 1, x + 1) (cross-correlation orientation)."""
    shape = (5, 5)
    weight = torch.zeros(1, 1, 3, 3, dtype=F64)
    weight[0, 0, 0, 2] = 1.0
    index = torch.arange(25)[None]
    values = torch.arange(25, dtype=F64).reshape(1, 25, 1)
    for backend in DEPTHWISE_BACKENDS:
        out = sparse_conv(values, index, shape, weight, backend).reshape(5, 5)
        assert out[2, 2] == (2 - 1) * 5 + (2 + 1)
        assert out[0, 2] == 0 and out[2, 4] == 0  # beyond the lattice: nothing


@pytest.mark.parametrize("backend", DEPTHWISE_BACKENDS)
def test_gradients_match_the_dense_reference_and_gradcheck(backend):
    shape = (6, 5)
    values, index = sparse_points(shape=shape, fraction=0.4, channels=2, seed=3)
    weight = torch.randn(2, 1, 3, 3, dtype=F64, generator=torch.Generator().manual_seed(4))
    values.requires_grad_(True)
    weight.requires_grad_(True)
    torch.autograd.gradcheck(lambda v, w: sparse_conv(v, index, shape, w, backend), (values, weight))
    cotangent = torch.randn_like(values)
    got = torch.autograd.grad((sparse_conv(values, index, shape, weight, backend) * cotangent).sum(),
                              (values, weight))
    expected = torch.autograd.grad((masked_dense(values, index, shape, weight) * cotangent).sum(), (values, weight))
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(got, expected))


def test_permuting_the_points_permutes_the_output_and_fields_do_not_mix():
    shape = (8, 8)
    values, index = sparse_points(shape=shape, fraction=0.5, seed=5)
    weight = torch.randn(3, 1, 5, 5, dtype=F64)
    order = torch.randperm(values.shape[1])
    out = sparse_conv(values, index, shape, weight)
    assert torch.allclose(sparse_conv(values[:, order], index[:, order], shape, weight), out[:, order])
    changed = values.clone()
    changed[1] += 1.0
    assert torch.equal(sparse_conv(changed, index, shape, weight)[0], out[0])


def test_the_normaliser_is_the_neighbour_count_over_the_training_window():
    shape = (7, 9)
    _, index = sparse_points(shape=shape, fraction=0.35, seed=6)
    width = shape[1]
    for size in (3, 7):
        count = neighbour_count(index, shape, size)
        for b in range(index.shape[0]):
            cells = index[b].tolist()
            for i, cell in enumerate(cells):
                expected = sum(abs(o // width - cell // width) <= size // 2 and abs(o % width - cell % width)
                               <= size // 2 for o in cells)
                assert count[b, i, 0] == expected
    full = torch.arange(63)[None]
    assert support_normaliser(full, shape, 7, 7)[0, 3 * 9 + 4, 0] == 1.0  # an interior point of a full lattice


def test_resized_kernel_sizes_follow_the_official_table():
    table = {0.25: 3, 0.5: 3, 1: 7, 1.5: 11, 2: 13, 4: 29, 8: 57}
    assert {ratio: resized_kernel_size(7, ratio) for ratio in table} == table
    weight = torch.randn(4, 1, 7, 7)
    assert resize_kernel(weight, 2).shape == (4, 1, 13, 13) and resize_kernel(weight, 1) is weight
    constant = torch.ones(1, 1, 7, 7)
    assert torch.allclose(resize_kernel(constant, 4), torch.ones(1, 1, 29, 29))


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="kernel_size=4 must be an odd int"):
        neighbour_count(torch.zeros(1, 2, dtype=torch.long), (4, 4), 4)
    with pytest.raises(ValueError, match="repeat a point"):
        check_lattice_index(torch.tensor([[0, 3, 3]]), (4, 4))
    with pytest.raises(ValueError, match=r"lie in \[0, 16\) for a 4x4 lattice"):
        check_lattice_index(torch.tensor([[0, 16]]), (4, 4))
    with pytest.raises(ValueError, match="unknown sparse convolution backend 'torchsparse'"):
        sparse_conv(torch.zeros(1, 2, 1), torch.tensor([[0, 1]]), (4, 4), torch.zeros(1, 1, 3, 3), "torchsparse")
    with pytest.raises(ValueError, match=r"kernel for 2 channels is \(2, 1, k, k\) \(depthwise\) or \(C_out, 2, k, k\)"):
        sparse_conv(torch.zeros(1, 2, 2), torch.tensor([[0, 1]]), (4, 4), torch.zeros(1, 1, 3, 3))
