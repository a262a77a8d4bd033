"""The canvas denoiser: one tile is the model, blends are normalised, order and batching never matter."""
import pytest
import torch

from pipeline.models.tiled_denoiser import blend, cut, eps_canvas, eps_whole, tile_activity
from pipeline.sampling.tiles import Tiling
from tests.helpers import tiny_latent_diffusion

DT = torch.float64
T = 4  # the tiny prior's latent size


@pytest.fixture(scope="module")
def ldm():
    return tiny_latent_diffusion("kl", DT, num_timesteps=50).eval()


def canvas(b, h, w, seed=0):
    return torch.randn(b, 3, h, w, dtype=DT, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["overlap", "shifted"])
def test_one_tile_canvas_is_the_model_bit_for_bit(ldm, mode):
    z, t = canvas(3, T, T), torch.tensor([3, 20, 49])
    layouts = [Tiling(T, mode, 1).layout(T, T, seed=s, k=7) for s in range(3)]
    eps, calls = eps_canvas(ldm, z, t, layouts)
    assert torch.equal(eps, ldm.eps(z, t)) and calls.tolist() == [1, 1, 1]


def grid_of(field, layout):
    """Every tile's crop of one field, as (N, C, T, T) with its (i, j) index."""
    g = cut(field, layout)
    idx = torch.cartesian_prod(torch.arange(layout.y.count), torch.arange(layout.x.count))
    return g[idx[:, 0], idx[:, 1]], idx


@pytest.mark.parametrize("tiling", [Tiling(T, "overlap", 1), Tiling(T, "overlap", 3), Tiling(T, "overlap", 0),
                                    Tiling(T, "shifted")])
def test_agreeing_predictions_blend_to_themselves_exactly(tiling):
    layout = tiling.layout(11, 9, seed=4, k=2)
    const = torch.full((3, 11, 9), 0.3, dtype=DT) * torch.tensor([1.0, -2.0, 7.0], dtype=DT).view(3, 1, 1)
    field = canvas(1, 11, 9)[0]
    for target in (const, field):   # tiles cut from one field: the blend gives the field back
        preds, idx = grid_of(target, layout)
        assert torch.equal(blend(preds, idx, layout, 3), target)


def test_blend_is_the_normalised_window_mean():
    layout = Tiling(T, "overlap", 2).layout(6, 6)                  # tiles at 0 and 2 on each axis
    preds, idx = grid_of(torch.zeros(3, 6, 6, dtype=DT), layout)
    preds = preds + torch.arange(len(idx), dtype=DT).view(-1, 1, 1, 1)   # tile n predicts n
    out = blend(preds, idx, layout, 3)
    w = layout.weights()
    num = torch.zeros(6, 6, dtype=DT)
    den = torch.zeros(6, 6, dtype=DT)
    for n, (i, j) in enumerate(idx.tolist()):
        num[2 * i:2 * i + 4, 2 * j:2 * j + 4] += n * w[i, j]
        den[2 * i:2 * i + 4, 2 * j:2 * j + 4] += w[i, j]
    assert torch.allclose(out[0], num / den, atol=1e-14, rtol=0)
    assert out[0, 0, 0] == 0 and out[0, 5, 5] == 3               # corners: one tile each


def test_blend_ignores_tile_order():
    layout = Tiling(T, "overlap", 1).layout(10, 13)
    preds, idx = grid_of(canvas(1, 10, 13)[0], layout)
    preds = preds + 0.01 * torch.randn_like(preds)                 # disagreeing tiles
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(1))
    assert torch.equal(blend(preds, idx, layout, 3), blend(preds[perm], idx[perm], layout, 3))


@pytest.mark.parametrize("mode", ["overlap", "shifted"])
def test_tile_batching_and_partners_do_not_change_the_result(ldm, mode):
    z, t = canvas(2, 10, 13, seed=2), torch.tensor([5, 40])
    layouts = [Tiling(T, mode, 1).layout(10, 13, seed=s, k=3) for s in (11, 12)]
    full, calls = eps_canvas(ldm, z, t, layouts)
    # the UNet itself is batch-variant at rounding level on CPU, the tiling adds nothing to that
    for tb in (1, 3, 7):
        part, c = eps_canvas(ldm, z, t, layouts, tile_batch=tb)
        assert torch.allclose(part, full, atol=1e-12, rtol=0) and torch.equal(c, calls)
    alone, c1 = eps_canvas(ldm, z[1:], t[1:], layouts[1:])
    assert torch.allclose(alone[0], full[1], atol=1e-12, rtol=0) and c1.item() == calls[1].item()


def test_skipped_tiles_cost_nothing_and_leave_active_pixels_alone(ldm):
    z, t = canvas(1, 12, 12, seed=3), torch.tensor([30])
    layout = Tiling(T, "overlap", 0).layout(12, 12)               # a 3×3 cut
    active = torch.zeros(1, 1, 12, 12, dtype=torch.bool)
    active[0, 0, 5, 6] = True                                      # one pixel in the centre tile
    on = tile_activity(layout, active[0, 0])
    assert on.sum() == 1 and on[1, 1]
    eps, calls = eps_canvas(ldm, z, t, layout, active)
    full, all_calls = eps_canvas(ldm, z, t, layout)
    assert calls.item() == 1 and all_calls.item() == 9
    assert torch.allclose(eps[..., 4:8, 4:8], full[..., 4:8, 4:8], atol=1e-12, rtol=0)
    assert (eps[..., :4, :] == 0).all()                            # not computed: zero
    none, c0 = eps_canvas(ldm, z, t, layout, torch.zeros_like(active))
    assert c0.item() == 0 and (none == 0).all()


def test_gradients_flow_through_the_blend(ldm):
    z = canvas(1, 9, 10, seed=4).requires_grad_(True)
    eps, _ = eps_canvas(ldm, z, torch.tensor([25]), Tiling(T, "overlap", 2).layout(9, 10))
    eps.square().sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad.abs() > 0).float().mean() > 0.9


def test_bad_inputs_are_refused(ldm):
    z = canvas(2, 8, 8)
    layout = Tiling(T).layout(8, 8)
    with pytest.raises(ValueError, match="layouts"):
        eps_canvas(ldm, z, torch.tensor([1, 2]), [layout])
    with pytest.raises(ValueError, match="does not match"):
        eps_canvas(ldm, z, torch.tensor([1, 2]), Tiling(T).layout(8, 9))
    with pytest.raises(ValueError, match="tile_batch"):
        eps_canvas(ldm, z, torch.tensor([1, 2]), layout, tile_batch=0)


def test_the_untiled_arm_runs_the_model_on_the_canvas_and_counts_tile_equivalents(ldm):
    """Mode `whole` (a benchmark arm): one tile is the model itself; a larger odd canvas is padded to the
    UNet's multiple and cropped back, costs the active tiles of the non-overlapping cut, and an idle canvas
    costs nothing."""
    z, t = canvas(2, T, T), torch.tensor([3, 20])
    layouts = [Tiling(T, "whole").layout(T, T)] * 2
    eps, calls = eps_whole(ldm, z, t, layouts, torch.ones(2, T, T, dtype=torch.bool))
    assert torch.equal(eps, ldm.eps(z, t)) and calls.tolist() == [1, 1]
    z = canvas(2, 3 * T + 1, 2 * T - 1)
    layout = Tiling(T, "whole").layout(3 * T + 1, 2 * T - 1)
    assert layout.num_tiles == 4 * 2
    active = torch.zeros(2, 3 * T + 1, 2 * T - 1, dtype=torch.bool)
    active[0, :2, :2] = True
    eps, calls = eps_whole(ldm, z, t, [layout] * 2, active)
    assert eps.shape == z.shape and calls.tolist() == [1, 0] and torch.isfinite(eps).all()
    assert torch.equal(eps[1], torch.zeros_like(eps[1])) and eps[0].abs().sum() > 0
