import pytest
import torch
from torch import nn

from datamodules.fields import FieldBatch, Grid, Sphere
from diffusion_references import closed_form
from lightning_modules.dpf import DPF

TINY_NET = {"_target_": "networks.score_fields.PerceiverIO", "num_latents": 4, "latent_dim": 16, "num_blocks": 1,
            "self_attends_per_block": 1, "num_decoder_blocks": 1, "coord_bands": 4, "time_bands": 8}
DIFFUSION = {"_target_": "lightning_modules.diffusion.GaussianDiffusion", "num_timesteps": 10,
             "variance_type": "fixed_large"}


def make_dpf(domain=Grid((4, 4)), net=TINY_NET, **overrides):
    kwargs = dict(net=net, point_sampler={"num_context": 6, "num_query": 8}, diffusion=DIFFUSION,
                  sampler={"name": "ancestral"}, optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
                  domain=domain.spec(), signal_dim=1, num_levels=256)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return DPF(**kwargs)


def fields(b=3, domain=Grid((4, 4))):
    return FieldBatch.from_values(torch.rand(b, domain.num_points, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1,
                                  domain)


class ZeroScore(nn.Module):
    """A score field that predicts zero noise and records what it was given."""

    coord_dim = 2

    def __init__(self, **kwargs):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, context_coords, context_values, query_coords, query_values, t):
        self.calls.append((context_coords, context_values, query_coords, query_values, t))
        return torch.zeros_like(query_values) + self.weight


def test_loss_is_on_query_noise_only(monkeypatch):
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"}, overlap_noise="independent")
    noises = []
    real_randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda x: noises.append(real_randn_like(x)) or noises[-1])
    losses = model.compute_losses(fields())
    context_noise, query_noise = noises
    assert context_noise.shape == (3, 6, 1) and query_noise.shape == (3, 8, 1)
    # a zero prediction leaves exactly the query noise in the loss; the context noise never enters it
    assert torch.allclose(losses["loss"], query_noise.pow(2).mean(dim=(1, 2)))
    context_coords, context_values, query_coords, query_values, t = model.net.calls[0]
    assert context_values.shape == (3, 6, 1) and query_values.shape == (3, 8, 1)


def test_context_and_queries_are_noised_at_the_querys_t(monkeypatch):
    """Algorithm 1: context and query values are sqrt(a_bar_t) x + sqrt(1 - a_bar_t) eps at one t per field, the
    t the network is given (the literal Algorithm 1: independent context and query noise)."""
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"}, overlap_noise="independent")
    batch = fields()
    monkeypatch.setattr(model, "sample_timesteps", lambda batch_size: torch.tensor([1, 5, 9]))
    noises = []
    real_randn_like = torch.randn_like
    monkeypatch.setattr(torch, "randn_like", lambda x: noises.append(real_randn_like(x)) or noises[-1])
    model.compute_losses(batch)
    context_coords, context_values, query_coords, query_values, t = model.net.calls[0]
    assert t.tolist() == [1, 5, 9]
    alpha_bar = torch.from_numpy(closed_form(model.diffusion.betas)["alpha_bar"])[t].float()[:, None, None]
    for coords, values, noise in [(context_coords, context_values, noises[0]), (query_coords, query_values, noises[1])]:
        # which field point each input point is, found by its coordinates
        match = (coords.unsqueeze(2) == batch.coords.unsqueeze(1)).all(-1)
        assert (match.sum(-1) == 1).all()
        clean = torch.einsum("bmn,bnc->bmc", match.float(), batch.values)
        torch.testing.assert_close(values, alpha_bar.sqrt() * clean + (1 - alpha_bar).sqrt() * noise)


@pytest.mark.parametrize("num_context, num_query", [(16, 16), (10, 12)])
def test_shared_noise_gives_overlapping_points_one_draw(num_context, num_query):
    """The default: a point drawn into both sets has one noisy value, as at sampling (context = query values)."""
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"},
                     point_sampler={"num_context": num_context, "num_query": num_query})
    assert model.overlap_noise == "shared"
    model.compute_losses(fields())
    context_coords, context_values, query_coords, query_values, t = model.net.calls[0]
    same_point = (context_coords.unsqueeze(2) == query_coords.unsqueeze(1)).all(-1)  # (B, Nc, Nq)
    assert same_point.any(-1).sum() >= 3 * (num_context + num_query - 16)  # overlap is forced by the counts
    difference = context_values.unsqueeze(2) - query_values.unsqueeze(1)  # (B, Nc, Nq, 1)
    assert difference[same_point].abs().max() < 1e-6


def test_independent_noise_draws_overlapping_points_twice():
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"}, overlap_noise="independent",
                     point_sampler={"num_context": 16, "num_query": 16})
    model.compute_losses(fields())
    context_coords, context_values, query_coords, query_values, t = model.net.calls[0]
    same_point = (context_coords.unsqueeze(2) == query_coords.unsqueeze(1)).all(-1)
    difference = context_values.unsqueeze(2) - query_values.unsqueeze(1)
    assert (difference[same_point].abs() > 1e-6).float().mean() > 0.9  # t = 0 rows are nearly noise-free


def test_resolution_free_sampling_on_the_requested_grid():
    model = make_dpf()
    for resolution in (None, 8, (3, 5)):
        out = model.sample(2, generator=torch.Generator().manual_seed(0), resolution=resolution)
        domain = Grid((4, 4)).at_resolution(resolution)
        assert out.values.shape == (2, domain.num_points, 1)
        assert torch.equal(out.coords[0], domain.coords()) and out.domain == domain
        assert out.values.abs().max() <= 1.0 + 1e-6


def test_sampling_context_is_a_fixed_subset_reread_every_step():
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"})
    model.sample(2, generator=torch.Generator().manual_seed(0), resolution=8, num_context=5)
    calls = model.net.calls
    assert len(calls) == 10  # one score evaluation per step
    first_coords = calls[0][0]
    assert first_coords.shape == (2, 5, 2) and all(torch.equal(c[0], first_coords) for c in calls)
    for context_coords, context_values, query_coords, query_values, t in calls:
        # context values are the current query values at the context coordinates
        match = (context_coords.unsqueeze(2) == query_coords.unsqueeze(1)).all(-1)
        assert torch.allclose(context_values, torch.einsum("bcq,bqd->bcd", match.float(), query_values))
    with pytest.raises(ValueError, match="exceeds the 64 query points"):
        model.sample(1, resolution=8, num_context=65)


def test_sampling_context_all_reads_every_query_at_any_resolution():
    model = make_dpf(net={"_target_": f"{__name__}.ZeroScore"}, sampling_context="all")
    model.sample(2, generator=torch.Generator().manual_seed(0), resolution=8)
    context_coords, _, query_coords, _, _ = model.net.calls[0]
    assert torch.equal(context_coords, query_coords) and context_coords.shape == (2, 64, 2)
    for bad in (0, "some", 2.5):
        with pytest.raises(ValueError, match=r"method.sampling_context must be a positive number of points, 'all'"):
            make_dpf(sampling_context=bad)


def test_sphere_coordinates_enter_as_unit_vectors():
    model = make_dpf(domain=Sphere((4, 4)))
    out = model.sample(1, generator=torch.Generator().manual_seed(0), resolution=8)
    assert out.values.shape == (1, 64, 1)
    assert torch.allclose(out.coords.norm(dim=-1), torch.ones(1, 64))


# seeded init (torch.manual_seed(0)), generator seed 0, T=10. The first version's network (init=mixed,
# time_spacing=linear) keeps its pin (re-pinned before when the context draw became O(k), see
# datamodules.points.draw_distinct): sampling itself is unchanged. The defaults' pin changed with the HF
# initialisation and the geometric time bands (issue 13).
GOLDEN = {
    "first version": ({"init": "mixed", "time_spacing": "linear"}, -6.75092887878418,
                      [-0.3004079759120941, -1.0, -0.43246549367904663]),
    "defaults": ({}, -1.514866828918457, [-0.028798969462513924, -1.0, -0.1404448300600052]),
}


@pytest.mark.parametrize("name", GOLDEN)
def test_seeded_sampling_golden_values(name):
    net_options, golden_sum, golden_first = GOLDEN[name]
    model = make_dpf(net={**TINY_NET, **net_options}).eval()
    out = model.sample(2, generator=torch.Generator().manual_seed(0)).values
    assert out.shape == (2, 16, 1)
    torch.testing.assert_close(out.sum(), torch.tensor(golden_sum), atol=1e-4, rtol=0)
    torch.testing.assert_close(out[0, :3, 0], torch.tensor(golden_first), atol=1e-5, rtol=0)


def test_coordinate_jitter_reads_each_field_between_its_grid_points():
    model = make_dpf(coordinate_jitter=0.5)
    domain = Grid((4, 4))
    slope = torch.tensor([0.5, -0.25])
    batch = FieldBatch.from_values((domain.coords() @ slope)[None, :, None].expand(3, -1, -1), domain)
    jittered = model.jittered(batch)
    shift = jittered.coords - batch.coords
    # one offset per field, at most half a cell (2 / 4 / 2) per axis, and different fields differ
    assert torch.allclose(shift, shift[:, :1].expand_as(shift)) and shift.abs().max() <= 0.25
    assert not torch.allclose(shift[0], shift[1])
    inside = (jittered.coords.abs() <= 0.75).all(-1)  # within the outermost centres the linear field is exact
    torch.testing.assert_close(jittered.values[..., 0][inside], (jittered.coords @ slope)[inside])
    assert model.compute_losses(batch)["loss"].shape == (3,)


def test_coordinate_jitter_share_leaves_the_other_fields_on_their_grid():
    torch.manual_seed(0)
    model = make_dpf(coordinate_jitter=0.5, coordinate_jitter_share=0.25)
    domain = Grid((4, 4))
    batch = FieldBatch.from_values(torch.randn(4000, domain.num_points, 1), domain)
    jittered = model.jittered(batch)
    moved = (jittered.coords - batch.coords).abs().amax((1, 2)) > 0
    assert 0.22 < moved.float().mean() < 0.28
    torch.testing.assert_close(jittered.values[~moved], batch.values[~moved])  # offset 0 reads the grid values


def test_config_time_errors():
    with pytest.raises(ValueError, match="coordinate_jitter interpolates between grid points"):
        make_dpf(domain=Sphere((4, 4)), coordinate_jitter=0.5)
    with pytest.raises(ValueError, match=r"in \[0, 0.5\]"):
        make_dpf(coordinate_jitter=0.7)
    with pytest.raises(ValueError, match=r"coordinate_jitter_share .* in \(0, 1\]"):
        make_dpf(coordinate_jitter=0.25, coordinate_jitter_share=0.0)
    with pytest.raises(ValueError, match="replacement=true"):
        make_dpf(point_sampler={"num_context": 17, "num_query": 8})
    with pytest.raises(ValueError, match="coord_dim=2 does not match the sphere"):
        make_dpf(domain=Sphere((4, 4)), net={**TINY_NET, "coord_dim": 2})
    with pytest.raises(ValueError, match="overlap_noise='both' is not one of"):
        make_dpf(overlap_noise="both")


@pytest.mark.parametrize("same_points", [False, True])
@pytest.mark.parametrize("chunk", [3, 7, 16])
def test_query_chunks_sample_exactly_what_one_pass_samples(same_points, chunk):
    """PerceiverIO's queries do not interact: scoring them in chunks of any size (ragged last chunks of 16 and 36
    queries, all 16 at once) draws the same samples from the same seed as one pass, at the training resolution and
    at a finer one."""
    point_sampler = {"num_context": 8, "num_query": 8, "same_points": same_points}
    whole, chunked = make_dpf(point_sampler=point_sampler), make_dpf(point_sampler=point_sampler,
                                                                     query_chunk_size=chunk)
    chunked.load_state_dict(whole.state_dict())
    for resolution in (None, 6):
        expected = whole.sample(2, generator=torch.Generator().manual_seed(3), resolution=resolution).values
        values = chunked.sample(2, generator=torch.Generator().manual_seed(3), resolution=resolution).values
        torch.testing.assert_close(values, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("net, options", [
    ("TransformerEncoderField", {"heads": 2}),
    ("MLPMixerField", {"num_points": 16, "token_mlp_dim": 8, "channel_mlp_dim": 8}),
])
def test_query_chunks_are_refused_for_paired_backbones_and_bad_sizes(net, options):
    paired = {"_target_": f"networks.score_fields.{net}", "dim": 16, "depth": 1, "coord_bands": 4, "time_bands": 8,
              **options}
    same = {"num_context": 16, "num_query": 16, "same_points": True}
    with pytest.raises(ValueError, match=f"query_chunk_size=4 cannot split the queries of {net}.*query_chunk_size=null"):
        make_dpf(net=paired, point_sampler=same, query_chunk_size=4)
    make_dpf(net=paired, point_sampler=same).sample(1)  # without chunks it samples
    for size in (0, -2, 2.5):
        with pytest.raises(ValueError, match="query_chunk_size must be a positive number"):
            make_dpf(query_chunk_size=size)
