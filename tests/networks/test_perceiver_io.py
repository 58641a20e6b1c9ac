"""PerceiverIO score field: set invariances, query independence, resolution-free shapes, errors, parameter counts."""
import math

import pytest
import torch
from einops import rearrange
from score_field_inputs import field

from networks.score_fields import PerceiverIO

TINY = dict(coord_bands=4, time_bands=8, num_timesteps=100, num_latents=8, latent_dim=32, num_blocks=2,
            self_attends_per_block=1, num_cross_heads=2, num_self_heads=2, num_decoder_blocks=2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PerceiverIO(2, 3, **TINY).eval()


@pytest.fixture(scope="module")
def inputs():
    context_coords, context_values = field(2, 12, seed=1)
    query_coords, query_values = field(2, 7, seed=2)
    return context_coords, context_values, query_coords, query_values, torch.tensor([3, 90])


def test_output_shape_and_coord_dim(model, inputs):
    assert model.coord_dim == 2
    assert model(*inputs).shape == (2, 7, 3)
    model_3d = PerceiverIO(3, 1, out_dim=2, **TINY)
    assert model_3d(*field(1, 5, 3, 1), *field(1, 4, 3, 1), torch.tensor([0])).shape == (1, 4, 2)


@pytest.mark.parametrize("num_queries", [1, 5, 40])
def test_any_number_of_queries(model, inputs, num_queries):
    context_coords, context_values, _, _, t = inputs
    query_coords, query_values = field(2, num_queries, seed=3)
    assert model(context_coords, context_values, query_coords, query_values, t).shape == (2, num_queries, 3)


def test_permuting_context_leaves_output_unchanged(model, inputs):
    context_coords, context_values, query_coords, query_values, t = inputs
    perm = torch.randperm(context_coords.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(*inputs)
        permuted = model(context_coords[:, perm], context_values[:, perm], query_coords, query_values, t)
    torch.testing.assert_close(permuted, reference, atol=1e-5, rtol=1e-5)


def test_permuting_queries_permutes_output(model, inputs):
    context_coords, context_values, query_coords, query_values, t = inputs
    perm = torch.randperm(query_coords.shape[1], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(*inputs)
        permuted = model(context_coords, context_values, query_coords[:, perm], query_values[:, perm], t)
    torch.testing.assert_close(permuted, reference[:, perm], atol=1e-5, rtol=1e-5)


def test_queries_do_not_interact(model, inputs):
    context_coords, context_values, query_coords, query_values, t = inputs
    with torch.no_grad():
        together = model(*inputs)
        alone = torch.cat(
            [model(context_coords, context_values, query_coords[:, i:i + 1], query_values[:, i:i + 1], t)
             for i in range(query_coords.shape[1])],
            dim=1,
        )
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)


def test_output_depends_on_context_query_value_and_t(model, inputs):
    context_coords, context_values, query_coords, query_values, t = inputs
    with torch.no_grad():
        reference = model(*inputs)
        for changed in (
            model(context_coords, context_values + 1, query_coords, query_values, t),
            model(context_coords, context_values, query_coords, query_values + 1, t),
            model(context_coords, context_values, query_coords, query_values, t.flip(0)),
        ):
            assert (changed - reference).abs().max() > 1e-4


def test_gradients_reach_every_parameter(inputs):
    torch.manual_seed(0)
    model = PerceiverIO(2, 3, **TINY)
    model(*inputs).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_coordinate_dimension_mismatch_raises(model, inputs):
    _, context_values, query_coords, query_values, t = inputs
    with pytest.raises(ValueError, match="coord_dim=2"):
        model(torch.zeros(2, 12, 3), context_values, query_coords, query_values, t)


@pytest.mark.parametrize(
    "replacements, message",
    [
        ({1: torch.zeros(2, 12, 1)}, "signal_dim=3"),
        ({2: torch.zeros(2, 6, 2)}, "must share"),
        ({4: torch.tensor([1])}, "one timestep per field"),
        ({0: torch.zeros(2, 0, 2), 1: torch.zeros(2, 0, 3)}, "at least one context point"),
    ],
)
def test_bad_input_raises(model, inputs, replacements, message):
    args = [replacements.get(i, arg) for i, arg in enumerate(inputs)]
    with pytest.raises(ValueError, match=message):
        model(*args)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by the number of heads"):
        PerceiverIO(2, 3, **{**TINY, "num_self_heads": 3})


def test_cross_attend_blocks_keeps_the_context_in_the_first_blocks_only(inputs):
    torch.manual_seed(0)
    peer_structure = PerceiverIO(2, 3, **{**TINY, "cross_attend_blocks": 1}).eval()
    crosses = [[layer.attention.is_cross for layer in block] for block in peer_structure.encoder_blocks]
    assert crosses == [[True, False], [False]]
    default = PerceiverIO(2, 3, **TINY)
    cross_layer = sum(p.numel() for p in default.encoder_blocks[1][0].parameters())
    assert sum(p.numel() for p in peer_structure.parameters()) == sum(p.numel() for p in default.parameters()) \
        - cross_layer
    # the single cross-attention still reads the context, in any order
    context_coords, context_values, query_coords, query_values, t = inputs
    out = peer_structure(*inputs)
    order = torch.randperm(context_coords.shape[1])
    torch.testing.assert_close(peer_structure(context_coords[:, order], context_values[:, order], query_coords,
                                              query_values, t), out)
    assert not torch.allclose(peer_structure(context_coords, context_values + 0.5, query_coords, query_values, t),
                              out)


@pytest.mark.parametrize("blocks", [0, 3])
def test_cross_attend_blocks_out_of_range_raises(blocks):
    with pytest.raises(ValueError, match=f"cross_attend_blocks={blocks} must be in \\[1, num_blocks=2\\]"):
        PerceiverIO(2, 3, **{**TINY, "cross_attend_blocks": blocks})


# Table 6 of the DPF paper (CelebA-HQ 64^2: 2-D coords, RGB); our exact counts are pinned. Our tokens follow the
# paper's stated recipe (173 wide with geometric time bands) and land 5-8% under the paper; the latent-dim-256 row is 32% under because the
# paper's counts imply ~433-wide tokens whose d-independent weight our tokens lack (see perceiver_io's docstring).
TABLE_6 = [
    ("base", {}, 59_315_771, 62.4e6, 0.10),
    ("latents 256", dict(num_latents=256), 59_184_699, 62.3e6, 0.10),
    ("latent dim 256", dict(latent_dim=256), 15_504_187, 22.8e6, 0.35),
    ("decoder blocks 2", dict(num_decoder_blocks=2), 56_157_755, 59.7e6, 0.10),
    ("blocks 6", dict(num_blocks=6), 32_992_799, 35.4e6, 0.10),
    ("self-attends 1", dict(self_attends_per_block=1), 40_379_963, 43.5e6, 0.10),
]


@pytest.mark.parametrize("name, overrides, expected, paper, tolerance", TABLE_6, ids=[row[0] for row in TABLE_6])
def test_parameter_counts_against_table_6(name, overrides, expected, paper, tolerance):
    with torch.device("meta"):  # count only
        model = PerceiverIO(2, 3, **overrides)
    count = sum(p.numel() for p in model.parameters())
    error = count / paper - 1
    print(f"PerceiverIO {name}: {count / 1e6:.2f}M vs paper {paper / 1e6:.1f}M ({error:+.1%})")
    assert count == expected
    assert abs(error) < tolerance


def test_table_6_deltas_match_the_paper():
    # the paper's deltas isolate one self-attention layer (18.9M / 12) and the learned latents (0.1M)
    def count(**overrides):
        with torch.device("meta"):
            return sum(p.numel() for p in PerceiverIO(2, 3, **overrides).parameters())

    base = count()
    assert (base - count(self_attends_per_block=1)) / 1e6 == pytest.approx(62.4 - 43.5, abs=0.1)
    assert (base - count(num_latents=256)) / 1e6 == pytest.approx(62.4 - 62.3, abs=0.05)


SMALL = dict(coord_bands=4, time_bands=8, num_timesteps=100, num_latents=16, latent_dim=64, num_blocks=2,
             self_attends_per_block=2, num_decoder_blocks=1, widening_factor=2)


def collapse_statistics(init):
    torch.manual_seed(0)
    model = PerceiverIO(2, 1, init=init, **SMALL)
    context_coords, context_values = field(4, 48, signal_dim=1, seed=1)
    query_coords, query_values = field(4, 64, signal_dim=1, seed=2)
    return model.latent_statistics(context_coords, context_values, query_coords, query_values,
                                   torch.tensor([0, 30, 60, 99]))


@pytest.mark.parametrize("init, min_spread, min_entropy_gap", [("hf", 0.2, 1e-5), ("lucidrains", 0.8, 1e-2)])
def test_latents_stay_distinct_after_a_forward_pass(init, min_spread, min_entropy_gap):
    stats = collapse_statistics(init)
    assert (stats["latent_spread"] > min_spread).all(), stats["latent_spread"]
    # the decoder reads different latents differently: its attention is below the uniform entropy ln(num_latents)
    assert (math.log(SMALL["num_latents"]) - stats["decoder_entropy"] > min_entropy_gap).all()


def test_encoder_reach_is_the_share_of_the_context_a_latent_reads():
    torch.manual_seed(0)
    context_coords, context_values = field(4, 48, signal_dim=1, seed=1)
    flat = PerceiverIO(2, 1, init="hf", initializer_range=1e-6, **SMALL)  # logits ~0: every latent reads all 48
    reach = flat.latent_statistics(context_coords, context_values, context_coords, context_values,
                                   torch.tensor([0, 30, 60, 99]))["encoder_reach"]
    torch.testing.assert_close(reach, torch.ones(4), atol=1e-4, rtol=0)
    peaked = collapse_statistics("lucidrains")["encoder_reach"]
    assert ((peaked > 1 / 48) & (peaked < 0.99)).all(), peaked


def test_mixed_init_collapses_the_latents():
    # default Linears with 0.02 latents (the first version): one vector is added to every latent
    assert (collapse_statistics("mixed")["latent_spread"] < 0.1).all()


def test_hf_init_draws_linear_weights_at_initializer_range():
    torch.manual_seed(0)
    model = PerceiverIO(2, 1, init="hf", initializer_range=0.05, **SMALL)
    weight = model.encoder_blocks[0][0].attention.to_q.weight
    assert weight.std().item() == pytest.approx(0.05, rel=0.1) and model.head[1].bias.abs().max() == 0
    assert model.latents.std().item() == pytest.approx(0.05, rel=0.1)
    assert PerceiverIO(2, 1, init="lucidrains", **SMALL).latents.std().item() == pytest.approx(1.0, rel=0.1)
    with pytest.raises(ValueError, match="init='xavier' is not one of"):
        PerceiverIO(2, 1, init="xavier", **SMALL)


def test_attention_weights_are_the_ones_attention_applies(model, inputs):
    context_coords, context_values, *_ , t = inputs
    latents = model.latents.expand(2, -1, -1)
    context = model.tokenizer(context_coords, context_values, t)
    attention = model.encoder_blocks[0][0].attention
    weights = attention.weights(latents, context)
    assert torch.allclose(weights.sum(-1), torch.ones(()))
    _, _, v = attention.heads(latents, context)
    with torch.no_grad():
        expected = attention(latents, context)
    torch.testing.assert_close(attention.to_out(rearrange(weights @ v, "b h n d -> b n (h d)")), expected,
                               atol=1e-5, rtol=1e-5)
