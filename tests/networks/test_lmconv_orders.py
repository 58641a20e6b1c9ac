"""Generation orders: permutations, unit steps of the Hamiltonian curves, the 8 dihedral variants, refusals."""
import pytest
import torch

from networks.lmconv.orders import (BASE_ORDERS, check_order, expand_order_names, named_order, observed_first,
                                    puts_last, rank_of)

SIZES = [(8, 8), (28, 28), (7, 5), (6, 10)]


def cells(order, width):
    return torch.stack([order // width, order % width], 1)


@pytest.mark.parametrize("base", ["raster", "s_curve", "gilbert", "center_quarter_last"])
@pytest.mark.parametrize("shape", SIZES)
def test_every_named_order_is_a_permutation(base, shape):
    variants = range(8) if shape[0] == shape[1] else range(4)
    orders = [named_order(f"{base}_{v}", *shape) for v in variants]
    for order in orders:
        check_order(order, shape[0] * shape[1])
    assert len({tuple(order.tolist()) for order in orders}) == len(orders), "variants must differ"


@pytest.mark.parametrize("base", ["s_curve", "gilbert"])
@pytest.mark.parametrize("shape", [(8, 8), (28, 28), (6, 10)])
def test_hamiltonian_curves_move_one_pixel_per_step(base, shape):
    variants = range(8) if shape[0] == shape[1] else range(4)
    for v in variants:
        steps = cells(named_order(f"{base}_{v}", *shape), shape[1]).diff(dim=0).abs().sum(1)
        assert (steps == 1).all(), (base, v, shape)


def test_hilbert_is_a_unit_step_curve_on_powers_of_two_and_refused_elsewhere():
    for side in (2, 4, 8, 16):
        order = named_order("hilbert_0", side, side)
        check_order(order, side * side)
        assert (cells(order, side).diff(dim=0).abs().sum(1) == 1).all()
    with pytest.raises(ValueError, match="power of two.*gilbert"):
        named_order("hilbert_0", 28, 28)


def test_variants_follow_the_authors_numbering():
    h = w = 4
    start = lambda name: tuple(cells(named_order(name, h, w), w)[0].tolist())  # noqa: E731
    second = lambda name: tuple(cells(named_order(name, h, w), w)[1].tolist())  # noqa: E731
    assert start("s_curve_0") == (0, 0) and second("s_curve_0") == (0, 1)  # along the top row
    assert start("s_curve_1") == (3, 0)  # rows reflected: from the bottom left
    assert start("s_curve_2") == (0, 3) and start("s_curve_3") == (3, 3)
    assert start("s_curve_4") == (0, 0) and second("s_curve_4") == (1, 0)  # transposed: down the first column
    assert start("s_curve_6") == (0, 3) and second("s_curve_6") == (1, 3)


def test_max_context_orders_of_the_halves_are_the_papers():
    h = w = 8
    rows = torch.arange(h * w) // w
    cols = torch.arange(h * w) % w
    top, bottom, left = rows < h // 2, rows >= h // 2, cols < w // 2
    last = lambda hidden: [v for v in range(8) if puts_last(named_order(f"s_curve_{v}", h, w), hidden)]  # noqa
    assert last(top) == [1, 3] and last(bottom) == [0, 2] and last(left) == [6, 7]
    centre = ((rows >= 2) & (rows < 6) & (cols >= 2) & (cols < 6))
    assert all(puts_last(named_order(f"center_quarter_last_{v}", h, w), centre) for v in range(8))


def test_observed_first_keeps_a_max_context_order_and_reorders_others():
    order = named_order("s_curve_0", 4, 4)
    bottom = (torch.arange(16) >= 8)
    top_observed = ~bottom
    assert torch.equal(observed_first(order, top_observed[None])[0], order)
    moved = observed_first(order, bottom[None])[0]
    check_order(moved, 16)
    assert bottom[moved[:8]].all() and puts_last(moved, top_observed)
    assert torch.equal(moved[:8], order[bottom[order]])  # relative order kept


def test_rank_is_the_inverse_permutation():
    order = torch.randperm(30)
    rank = rank_of(order)
    assert torch.equal(rank[order], torch.arange(30)) and torch.equal(order[rank], torch.arange(30))


def test_bad_orders_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="not a permutation"):
        check_order(torch.tensor([0, 1, 1, 3]), 4)
    with pytest.raises(ValueError, match="not a permutation"):
        check_order(torch.arange(5), 4)
    with pytest.raises(ValueError, match="needs a square image.*variants 0-3"):
        named_order("s_curve_4", 6, 10)
    with pytest.raises(ValueError, match="unknown order 'zigzag_0'"):
        named_order("zigzag_0", 4, 4)
    with pytest.raises(ValueError, match="variant"):
        named_order("s_curve_9", 4, 4)
    assert expand_order_names(["s_curve", "raster_0"]) == [f"s_curve_{v}" for v in range(8)] + ["raster_0"]
    assert set(BASE_ORDERS) >= {"raster", "s_curve", "hilbert", "gilbert", "center_quarter_last"}
    with pytest.raises(ValueError, match="each once"):
        expand_order_names(["s_curve_0", "s_curve_0"])
