"""Tile layouts: coverage, edge alignment, overlap, the shifted partition, costs, padding."""
import pytest
import torch
import torch.nn.functional as F

from pipeline.sampling.tiles import (Tiling, canvas_size, cut_tiles, reflect_pad, shifted_axis, spread_axis,
                                     step_offset, window_profile)


@pytest.mark.parametrize("n", [16, 17, 30, 31, 32, 47, 226, 301])
@pytest.mark.parametrize("overlap", [0, 2, 8])
def test_spread_axis_covers_with_the_fewest_tiles(n, overlap):
    a = spread_axis(n, 16, overlap)
    assert a.origins[0] == 0 and a.origins[-1] == n - 16          # first at 0, last at the edge
    gaps = [b - c for c, b in zip(a.origins, a.origins[1:])]
    assert all(0 < g <= 16 - overlap for g in gaps)                # overlaps ≥ overlap, no hole
    assert a.count == (1 if n == 16 else -(-(n - overlap) // (16 - overlap)))
    if a.count > 1:                                               # one tile fewer would leave a gap
        assert (a.count - 2) * (16 - overlap) + 16 < n
    assert a.cells == tuple((o, o + 16) for o in a.origins)
    covered = torch.zeros(n, dtype=torch.bool)
    for o in a.origins:
        covered[o:o + 16] = True
    assert covered.all()


@pytest.mark.parametrize("n", [16, 20, 33, 301])
def test_shifted_axis_is_a_partition_with_edge_aligned_tiles(n):
    for offset in range(16):
        a = shifted_axis(n, 16, offset)
        owner = torch.zeros(n, dtype=torch.long)
        for o, (lo, hi) in zip(a.origins, a.cells):
            assert 0 <= o <= n - 16 and o <= lo < hi <= o + 16    # a tile inside the canvas holds its cell
            owner[lo:hi] += 1
        assert (owner == 1).all()                                 # every pixel written exactly once
        assert a.count <= -(-n // 16) + 1
        if n == 16:
            assert a.count == 1                                   # one tile whatever the offset


def test_canvas_smaller_than_a_tile_is_refused():
    with pytest.raises(ValueError, match="pad the image"):
        spread_axis(15, 16, 2)
    with pytest.raises(ValueError, match="pad the image"):
        Tiling(16, "shifted").layout(40, 3)


def test_window_is_a_smooth_symmetric_ramp_with_a_floor():
    w = window_profile(16, 2, 1e-3)
    assert torch.equal(w, w.flip(0)) and (w >= 1e-3).all() and w.max() == 1.0
    assert torch.equal(w[2:14], torch.ones(12, dtype=torch.float64))
    # two neighbours overlapping by the ramp cross-fade to a partition of unity (floor aside)
    raw = window_profile(16, 2, 0.0)
    assert torch.allclose(raw[14:] + raw[:2], torch.ones(2, dtype=torch.float64), atol=1e-15)
    assert torch.equal(window_profile(16, 0, 1e-3), torch.ones(16, dtype=torch.float64))


def test_layout_weights_vanish_outside_cells_only():
    lay = Tiling(16, "shifted").layout(40, 37, seed=3, k=5)
    w = lay.weights()
    assert w.shape == (lay.y.count, lay.x.count, 16, 16)
    total = torch.zeros(40, 37, dtype=torch.float64)
    for i, oy in enumerate(lay.y.origins):
        for j, ox in enumerate(lay.x.origins):
            total[oy:oy + 16, ox:ox + 16] += w[i, j]
    assert torch.equal(total, torch.ones_like(total))             # shifted: each pixel one weight of 1
    over = Tiling(16, "overlap", 2).layout(40, 37).weights()
    assert (over > 0).all()


def test_default_costs_against_a_non_overlapping_cut():
    h, w = 301, 226
    cut = cut_tiles(h, w, 16)
    assert Tiling(16, "overlap", 0).layout(h, w).num_tiles == cut == 285
    default = Tiling(16).layout(h, w).num_tiles
    assert default <= 1.5 * cut and default == 352
    half = Tiling(16, "overlap", 8).layout(h, w).num_tiles
    assert 3.3 * cut < half < 4.2 * cut                           # the peers' 50 % overlap
    shifted = [Tiling(16, "shifted").layout(h, w, seed=1, k=k).num_tiles for k in range(200)]
    assert cut <= min(shifted) and sum(shifted) / len(shifted) <= 1.1 * cut


def test_step_offsets_are_stateless_and_vary():
    assert step_offset(5, 10, 16) == step_offset(5, 10, 16)
    offs = {step_offset(5, k, 16) for k in range(100)}
    assert len(offs) > 50 and all(0 <= a < 16 and 0 <= b < 16 for a, b in offs)
    assert step_offset(6, 10, 16) != step_offset(5, 10, 16) or step_offset(6, 11, 16) != step_offset(5, 11, 16)
    lay = Tiling(16, "shifted").layout(64, 64, seed=5, k=10)
    assert (lay.y.cells[0][1], lay.x.cells[0][1]) == tuple(16 - o if o else 16 for o in step_offset(5, 10, 16))


def test_tiling_checks_its_fields():
    for bad in ({"mode": "spiral"}, {"overlap": 16}, {"overlap": -1}, {"floor": 0.0}):
        with pytest.raises(ValueError):
            Tiling(16, **bad)


def test_padding_to_a_canvas():
    assert canvas_size(226, 301, 4, 16) == (228, 304)
    assert canvas_size(10, 300, 4, 16) == (64, 300)
    x = torch.arange(2 * 5 * 7, dtype=torch.float64).view(1, 2, 5, 7)
    assert torch.equal(reflect_pad(x, 8, 10), F.pad(x, (0, 3, 0, 3), mode="reflect"))
    big = reflect_pad(x, 20, 30)                                  # more than the image: folds back and forth
    assert big.shape == (1, 2, 20, 30) and torch.equal(big[..., :5, :7], x)
    assert torch.equal(big[..., 8, :7], x[..., 0, :]) and torch.equal(big[..., 9, :7], x[..., 1, :])
    one = reflect_pad(torch.ones(1, 3, 1, 1), 64, 64)
    assert torch.equal(one, torch.ones(1, 3, 64, 64))
