"""The canvas loop: one tile is Flash, skipped regions cost nothing, modes agree on uniform maps."""
import pytest
import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.restoration.flash import Flash, start_latent
from pipeline.restoration.region_loop import solve_canvas
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler
from pipeline.sampling.seeding import NOISE_INJECTION, generators
from pipeline.sampling.tiles import Tiling
from pipeline.solvers import make_solver
from tests.solvers.test_solvers import DT, problem, tiny_model

T = 4


class Recording(LatentDiffusion):
    """Keeps every denoiser input (tiles) and timestep."""

    def eps(self, z, timesteps):
        self.seen = getattr(self, "seen", []) + [(z.detach().clone(), timesteps.clone())]
        return super().eps(z, timesteps)


def sampler_of(model, name="ddim"):
    return DDIMSampler(model.schedule, 10, eta=1.0) if name == "ddim" else DDPMSampler(model.schedule)


def blocks(values, channels=1):
    v = torch.as_tensor(values, dtype=DT)
    return v.repeat_interleave(T, 0).repeat_interleave(T, 1).expand(1, channels, -1, -1).clone()


@pytest.mark.parametrize("mode", ["overlap", "shifted"])
@pytest.mark.parametrize("name", ["ldps", "unconditional"])
def test_one_tile_canvas_in_image_mode_is_flash_exactly(name, mode):
    model = tiny_model("vq")
    solver = make_solver(name, model, sampler_of(model), **({"step_size": 0.5} if name == "ldps" else {}))
    keys, op, y, _ = problem(model, 2)
    flash = Flash(None, solver, noise_correction=1.2)
    z_hat = torch.randn(2, *model.latent_shape, dtype=DT, generator=torch.Generator().manual_seed(3))
    sigma2 = torch.tensor([0.08, 0.3], dtype=DT)
    k = solver.sampler.start_index(sigma2)
    ref = flash.restore(y, op, keys, 11, estimate=(z_hat, sigma2, k))
    smap = sigma2.view(2, 1, 1, 1).expand(2, 3, T, T).clone()
    out = solve_canvas(solver, y, op, z_hat, smap, keys, 11, Tiling(T, mode, 1), mode="image")
    assert torch.equal(out.z0, ref.z0)
    assert out.nfe.tolist() == ref.nfe.tolist() == out.tile_steps.tolist()
    assert out.account["denoiser_calls"].tolist() == ref.account["denoiser_calls"].tolist()
    if name == "ldps":
        assert out.account["decoder_backward"].tolist() == ref.account["decoder_backward"].tolist()


def test_a_region_at_its_own_start_enters_from_flashs_start_latent():
    base = tiny_model("kl")
    model = Recording(base.autoencoder, base.unet, base.schedule)
    solver = make_solver("unconditional", model, sampler_of(model))
    z_hat = torch.randn(1, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(4))
    values = [[0.02, 0.5], [0.1, 0.02]]
    smap = blocks(values)
    out = solve_canvas(solver, None, None, z_hat, smap, ["x"], 9, Tiling(T, "overlap", 0), mode="region")
    grid = solver.sampler.grid
    for (i, j), s2 in (((0, 0), 0.02), ((0, 1), 0.5), ((1, 0), 0.1)):
        k = int(solver.sampler.start_index(torch.tensor([s2]))[0])
        # the first call on region (i, j) is at its own start, from Flash's start latent
        tiles = next(z for z, t in model.seen if t[0] == grid[k])
        flash = start_latent(z_hat, torch.tensor([s2], dtype=DT), 1.2, generators(9, ["x"], NOISE_INJECTION))
        want = flash[0, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4]
        assert any(torch.equal(tile, want) for tile in tiles), (i, j)
    assert out.starts.top.tolist() == [int(solver.sampler.start_index(torch.tensor([0.5]))[0])]


@pytest.mark.parametrize("overlap", [0, 2])
def test_only_started_regions_cost_tile_steps(overlap):
    """In overlap mode every denoiser tile is a region: it costs exactly its own start + 1
    calls, whatever its neighbours' starts (they only decide which pixels are running)."""
    model = tiny_model("kl")
    solver = make_solver("unconditional", model, sampler_of(model, "ddpm"))
    z_hat = torch.randn(1, 3, 8, 8, dtype=DT, generator=torch.Generator().manual_seed(5))
    smap = blocks([[1e-4, 1e-4], [1e-4, 0.3]])                       # all start at 0 but one region
    out = solve_canvas(solver, None, None, z_hat, smap, ["x"], 1, Tiling(T, "overlap", overlap), mode="region")
    s = int(out.starts.top[0])
    n_tiles = Tiling(T, "overlap", overlap).layout(8, 8).num_tiles
    assert s > 5 and out.starts.start.min() == 0 and out.nfe.tolist() == [s + 1]
    assert out.tile_steps.tolist() == [int((out.starts.tile_start + 1).sum())] == out.account["tile_steps"].tolist()
    assert out.starts.tile_start.amax() == s
    if overlap == 0:   # steps s…1 run only the damaged region's tile, step 0 runs every tile
        assert out.tile_steps.tolist() == [s + n_tiles]
    worst = solve_canvas(solver, None, None, z_hat, smap, ["x"], 1, Tiling(T, "overlap", overlap), mode="image-max")
    assert worst.tile_steps.tolist() == [n_tiles * (s + 1)] and worst.nfe.tolist() == [s + 1]


def test_uniform_map_region_mode_equals_image_mode():
    model = tiny_model("kl")
    solver = make_solver("unconditional", model, sampler_of(model))
    z_hat = torch.randn(2, 3, 9, 10, dtype=DT, generator=torch.Generator().manual_seed(6))
    smap = torch.full((2, 3, 9, 10), 0.17, dtype=DT)
    runs = {m: solve_canvas(solver, None, None, z_hat, smap, ["a", "b"], 2, Tiling(T, "overlap", 1), mode=m)
            for m in ("region", "image", "image-max")}
    for m in ("image", "image-max"):
        assert torch.equal(runs[m].z0, runs["region"].z0) and torch.equal(runs[m].tile_steps, runs["region"].tile_steps)


@pytest.mark.parametrize("mode", ["overlap", "shifted"])
def test_output_depends_on_neither_partners_nor_tile_batching(mode):
    model = tiny_model("kl")
    solver = make_solver("unconditional", model, sampler_of(model))
    z_hat = torch.randn(3, 3, 8, 11, dtype=DT, generator=torch.Generator().manual_seed(7))
    smap = torch.rand(3, 1, 8, 11, dtype=DT, generator=torch.Generator().manual_seed(8)) * 0.4
    keys = ["p", "q", "r"]
    tiling = Tiling(T, mode, 1)
    full = solve_canvas(solver, None, None, z_hat, smap, keys, 3, tiling)
    small = solve_canvas(solver, None, None, z_hat, smap, keys, 3, tiling, tile_batch=2)
    assert torch.allclose(small.z0, full.z0, atol=1e-10, rtol=0) and torch.equal(small.tile_steps, full.tile_steps)
    for idx in ([1], [2, 0]):
        part = solve_canvas(solver, None, None, z_hat[idx], smap[idx], [keys[i] for i in idx], 3, tiling)
        assert torch.allclose(part.z0, full.z0[idx], atol=1e-10, rtol=0)
        assert torch.equal(part.tile_steps, full.tile_steps[idx])
    other = solve_canvas(solver, None, None, z_hat, smap, keys, 4, tiling)
    assert (other.z0 - full.z0).abs().max() > 1e-3                    # the job seed matters


def test_region_mode_costs_no_more_than_image_max():
    model = tiny_model("kl")
    solver = make_solver("unconditional", model, sampler_of(model, "ddpm"))
    z_hat = torch.randn(1, 3, 12, 12, dtype=DT, generator=torch.Generator().manual_seed(9))
    smap = blocks([[0.01, 0.05, 0.02], [0.3, 0.02, 0.01], [0.01, 0.01, 0.1]])
    cost = {m: solve_canvas(solver, None, None, z_hat, smap, ["x"], 1, Tiling(T, "overlap", 0), mode=m).tile_steps.item()
            for m in ("region", "image", "image-max")}
    assert cost["region"] < cost["image-max"] and cost["region"] < cost["image"]


def test_canvas_must_match_the_prior():
    model = tiny_model("kl")
    solver = make_solver("unconditional", model, sampler_of(model))
    z = torch.zeros(1, 3, 8, 8, dtype=DT)
    with pytest.raises(ValueError, match="tile"):
        solve_canvas(solver, None, None, z, torch.zeros(1, 1, 8, 8, dtype=DT), ["x"], 0, Tiling(8))
    with pytest.raises(ValueError, match="noise_correction"):
        solve_canvas(solver, None, None, z, torch.zeros(1, 1, 8, 8, dtype=DT), ["x"], 0, Tiling(T), noise_correction=-1)
    with pytest.raises(ValueError, match="keys"):
        solve_canvas(solver, None, None, z, torch.zeros(1, 1, 8, 8, dtype=DT), ["x", "y"], 0, Tiling(T))
