"""∞-Diff's denoiser: k-NN and bilinear maps between points and the grid, the sparse block, the whole network on
sparse and dense points and at other resolutions."""
import pytest
import torch

from datamodules.fields import Grid
from datamodules.points import draw_distinct
from networks.sparse_operator import (FNOGrid, SparseDownsampleNet, SparseUNO, grid_to_points, knn_interpolate, knn_to_grid,
                                      lattice_coords)


def tiny_net(**overrides):
    settings = dict(signal_dim=1, out_dim=1, train_size=8, channels=8, num_blocks=1, time_channels=16, grid_size=8,
                    grid_channels=8, grid=dict(base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                                               attention_resolutions=[4], num_groups=4), kernel_size=5)
    settings.update(overrides)
    torch.manual_seed(0)
    return SparseUNO(**settings)


def test_lattice_coords_are_the_grid_pixel_centres():
    index = torch.arange(12)[None]
    assert torch.allclose(lattice_coords(index, (3, 4))[0], Grid((3, 4)).coords())


def test_knn_keeps_constants_and_copies_points_that_sit_on_the_nodes():
    index = draw_distinct(2, 64, 20, torch.device("cpu"), torch.Generator().manual_seed(0))
    coords = lattice_coords(index, (8, 8))
    constant = torch.full((2, 20, 3), 0.7)
    assert torch.allclose(knn_to_grid(constant, coords, 6, 3), torch.full((2, 3, 6, 6), 0.7))
    full = torch.randn(2, 64, 3)
    coords_full = lattice_coords(torch.arange(64).expand(2, -1), (8, 8))
    grid = knn_to_grid(full, coords_full, 8, 3, chunk=100)  # small chunks: the same answer
    assert torch.allclose(grid, Grid((8, 8)).to_dense(full), atol=1e-6)
    subset = coords_full[:, ::3]  # points read back at lattice points that are among them: copied
    assert torch.allclose(knn_interpolate(full, coords_full, subset, 3), full[:, ::3], atol=1e-6)


def test_knn_is_the_inverse_squared_distance_mean_of_the_three_nearest():
    coords = torch.tensor([[[0.0, 0.0], [0.5, 0.0], [0.0, -0.75], [0.9, 0.9]]])
    values = torch.tensor([[[1.0], [2.0], [4.0], [8.0]]])
    grid = knn_to_grid(values, coords, 2, 3)  # node (row, col) = (-0.5, -0.5) is at the top left
    node = torch.tensor([-0.5, -0.5])
    distance = ((coords[0] - node) ** 2).sum(-1)
    nearest = distance.argsort()[:3]
    weights = 1 / distance[nearest]
    assert torch.allclose(grid[0, 0, 0, 0], (weights * values[0, nearest, 0]).sum() / weights.sum())


def test_bilinear_reads_the_grid_at_its_centres_and_the_legacy_flag_reads_one_quadrant():
    grid = torch.randn(2, 3, 8, 8)
    coords = lattice_coords(torch.arange(64).expand(2, -1), (8, 8))
    assert torch.allclose(grid_to_points(grid, coords), Grid((8, 8)).from_dense(grid), atol=1e-6)
    legacy = grid_to_points(grid, coords, legacy_grid_sample=True)
    # pixel (3, 5) at (row, col) = (-0.125, 0.375) -> [0, 1]: (0.4375, 0.6875) read as (x, y), i.e. at grid
    # column 5.25 and row 6.25: the transposed lower-right quadrant
    expected = (0.75 * 0.75 * grid[:, :, 6, 5] + 0.75 * 0.25 * grid[:, :, 6, 6] + 0.25 * 0.75 * grid[:, :, 7, 5]
                + 0.25 * 0.25 * grid[:, :, 7, 6])
    assert torch.allclose(legacy.reshape(2, 8, 8, 3)[:, 3, 5], expected, atol=1e-6)
    assert not torch.allclose(legacy, grid_to_points(grid, coords))


def test_the_network_is_equivariant_to_the_order_of_points_and_dense_is_sparse_at_full_density():
    net = tiny_net().eval()
    values, t = torch.randn(2, 64, 1), torch.tensor([3, 17])
    index = torch.arange(64).expand(2, -1)
    order = torch.randperm(64)
    out = net(values, index, (8, 8), t)
    assert out.shape == (2, 64, 1)
    assert torch.allclose(net(values[:, order], index[:, order], (8, 8), t), out[:, order], atol=1e-5)


@pytest.mark.parametrize("downsample", ["grid", "sparse"])
@pytest.mark.parametrize("size", [4, 8, 16, 32])
def test_the_network_runs_at_any_resolution_and_on_sparse_points(size, downsample):
    net = tiny_net(downsample=downsample).eval()
    count = max(3, size * size // 4)
    index = draw_distinct(2, size * size, count, torch.device("cpu"), torch.Generator().manual_seed(1))
    out = net(torch.randn(2, count, 1), index, (size, size), torch.tensor([0, 5]))
    assert out.shape == (2, count, 1) and torch.isfinite(out).all()


@pytest.mark.parametrize("ablation", [{}, dict(depthwise=False), dict(kernel="nonlinear"), dict(downsample="sparse")])
def test_gradients_reach_every_parameter_on_sparse_points(ablation):
    """With the spectral grid (the U-Net's zero-initialised output would stop the first gradient), and with Table 2's
    regular convs and nonlinear kernel."""
    net = tiny_net(grid_type="fno", fno=dict(num_layers=2, modes=3), **ablation)
    assert isinstance(net.grid, SparseDownsampleNet if ablation.get("downsample") == "sparse" else FNOGrid)
    weights = net.down[0].weights
    assert len(weights) == (2 if ablation.get("kernel") == "nonlinear" else 1)
    assert weights[0].shape == ((8, 8, 5, 5) if ablation.get("depthwise") is False else (8, 1, 5, 5))
    index = draw_distinct(3, 64, 16, torch.device("cpu"), torch.Generator().manual_seed(2))
    net(torch.randn(3, 16, 1), index, (8, 8), torch.tensor([1, 2, 3])).pow(2).sum().backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="method.net.kernel_size=6 must be an odd int"):
        tiny_net(kernel_size=6)
    with pytest.raises(ValueError, match="unknown method.net.grid_type 'mlp'"):
        tiny_net(grid_type="mlp")
    with pytest.raises(ValueError, match="unknown method.net.kernel 'quadratic'"):
        tiny_net(kernel="quadratic")
    with pytest.raises(ValueError, match="unknown method.net.downsample 'pool'"):
        tiny_net(downsample="pool")
    with pytest.raises(ValueError, match="method.net.latent_dim=-1 must be >= 0"):
        tiny_net(latent_dim=-1)
    index = torch.arange(64)[None]
    with pytest.raises(ValueError, match="latent_dim=4 takes a latent z"):
        tiny_net(latent_dim=4)(torch.zeros(1, 64, 1), index, (8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="latent_dim=0 takes no latent z"):
        tiny_net()(torch.zeros(1, 64, 1), index, (8, 8), torch.tensor([0]), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="has no encoder"):
        tiny_net().encode(torch.zeros(1, 64, 1), index, (8, 8))
    with pytest.raises(ValueError, match="k=3 needs at least 3 points"):
        knn_to_grid(torch.zeros(1, 2, 1), torch.zeros(1, 2, 2), 4, 3)
