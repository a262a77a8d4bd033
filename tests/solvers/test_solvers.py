"""Solvers: staggered batches equal one-by-one runs, exact NFE, guidance helps, bad inputs fail."""
from functools import lru_cache

import pytest
import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.operators import Inpainting
from pipeline.operators.base import Operator
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler, NoiseSchedule
from pipeline.sampling.seeding import generators, randn_per_sample
from pipeline.solvers import SOLVERS, PSLD, ReSample, default_sampler, make_solver
from tests.helpers import tiny_latent_diffusion

GUIDED = ("ldps", "gml_dps", "psld", "resample")
DT = torch.float64




@lru_cache(maxsize=4)
def tiny_model(kind: str = "kl", T: int = 50) -> LatentDiffusion:
    """The suite's tiny random float64 LDM (16×16 images ↔ 3×4×4 latents) on a short T-step schedule."""
    return tiny_latent_diffusion(kind, DT, num_timesteps=T).eval()


class CountingModel(LatentDiffusion):
    """Counts denoiser rows per call, to check NFE independently of the solver's own count."""

    def eps(self, z, timesteps):
        self.rows = getattr(self, "rows", 0) + z.shape[0]
        return super().eps(z, timesteps)


def counting(model: LatentDiffusion) -> CountingModel:
    return CountingModel(model.autoencoder, model.unet, model.schedule)


def samplers(model):
    return {"ddpm": DDPMSampler(model.schedule), "ddim": DDIMSampler(model.schedule, 10, eta=1.0)}


def small_hyper(name: str, sampler) -> dict:
    """Small-model hyperparameters; ReSample's stages are moved onto the short grid."""
    if name == "resample":
        g = sampler.grid
        return {"every_n": 2, "max_iters": 5, "image_stage_max": int(g[3]), "latent_stage_max": int(g[1]),
                "resample_step": 50.0}
    return {"step_size": 0.5}


def problem(model, n: int, noise=(0.0, 0.05, 0.1, 0.2, 0.3, 0.01), seed: int = 1):
    """Inpainting measurements of decoded random latents (data consistency is achievable)."""
    keys = [f"img{i}" for i in range(n)]
    op = Inpainting([{"severity": 0.5, "noise_sigma": noise[i % len(noise)], "seed": seed + i} for i in range(n)], keys)
    z_true = randn_per_sample(model.latent_shape, generators(seed, keys, "truth"), dtype=DT)
    with torch.no_grad():
        x = model.autoencoder.decode(z_true).clamp(-1, 1)
    n01 = randn_per_sample((3, 16, 16), generators(seed, keys, "noise"), dtype=DT)
    y = 2.0 * (op.forward((x + 1) / 2) + op.noise_sigmas.view(-1, 1, 1, 1).to(DT) * n01) - 1.0
    z_start = randn_per_sample(model.latent_shape, generators(seed, keys, "start"), dtype=DT)
    return keys, op, y, z_start


def solve(solver, y, op, z, k, keys, idx):
    idx = list(idx)
    return solver.solve(y[idx], op.subset(idx), z[idx], k[idx], generators(7, [keys[i] for i in idx], "sampler"))


@pytest.mark.filterwarnings("ignore:ReSample expects")
@pytest.mark.parametrize("sampler_name", ["ddpm", "ddim"])
@pytest.mark.parametrize("name", GUIDED)
def test_batched_equals_one_by_one(name, sampler_name):
    model = tiny_model("vq" if name in ("ldps", "resample") else "kl")
    sampler = samplers(model)[sampler_name]
    solver = SOLVERS[name](model, sampler, **small_hyper(name, sampler))
    keys, op, y, z = problem(model, 6)
    k = torch.tensor([0, 2, 4, 2, 0, 4])
    full = solve(solver, y, op, z, k, keys, range(6))
    assert full.nfe.tolist() == (k + 1).tolist() == full.account["denoiser_calls"].tolist()
    for i in range(6):
        alone = solve(solver, y, op, z, k, keys, [i])
        assert (alone.z0[0] - full.z0[i]).abs().max() < 1e-6, (name, sampler_name, i)
        assert (alone.x[0] - full.x[i]).abs().max() < 1e-6
        for key, v in full.account.items():
            assert alone.account[key][0] == v[i], (key, i)
    perm = [4, 1, 5, 0]  # other order, other partners
    shuffled = solve(solver, y, op, z, k, keys, perm)
    assert (shuffled.z0 - full.z0[perm]).abs().max() < 1e-6
    if name == "resample":  # the early stop made samples run different numbers of inner steps
        assert full.account["inner_steps"].unique().numel() > 1


def test_nfe_counted_by_denoiser_wrapper():
    model = counting(tiny_model("kl"))
    for sampler in samplers(model).values():
        solver = make_solver("unconditional", model, sampler)
        keys, op, y, z = problem(model, 6)
        k = torch.tensor([0, 3, 9, 3, 1, 7])
        model.rows = 0
        out = solve(solver, y, op, z, k, keys, range(6))
        assert model.rows == int((k + 1).sum()) and out.nfe.tolist() == (k + 1).tolist()
        model.rows = 0
        solve(solver, y, op, z, k, keys, [2])
        assert model.rows == 10
        assert out.account["decoder_backward"].tolist() == [0] * 6
        assert out.account["decoder_forward"].tolist() == [1] * 6  # the final decode


def residual(model, out, y, op):
    with torch.no_grad():
        return (y - op.forward_pm(model.autoencoder.decode(out.z0))).flatten(1).norm(dim=1)


@pytest.mark.parametrize("name,hyper", [
    ("ldps", {"step_size": 1.0}),
    ("gml_dps", {"step_size": 1.0, "gluing_weight": 0.05}),
    ("psld", {"step_size": 1.0, "gluing_weight": 0.1}),
    ("resample", {"every_n": 2, "max_iters": 10, "image_stage_max": 1000, "latent_stage_max": 1000}),
])
def test_guidance_lowers_measurement_residual(name, hyper):
    model = tiny_model("kl")
    sampler = samplers(model)["ddim" if name == "resample" else "ddpm"]
    keys, op, y, z = problem(model, 3, noise=(0.01,), seed=3)
    k = torch.full((3,), 6)
    guided = solve(SOLVERS[name](model, sampler, **hyper), y, op, z, k, keys, range(3))
    plain = solve(SOLVERS["unconditional"](model, sampler), y, op, z, k, keys, range(3))
    r_g, r_p = residual(model, guided, y, op).mean(), residual(model, plain, y, op).mean()
    assert r_g < 0.9 * r_p, (name, r_g.item(), r_p.item())


class Square(Operator):
    """A nonlinear per-sample operator (x²) for the PSLD linearity check."""

    name = "square"

    def forward(self, x01):
        return x01 ** 2


def test_bad_inputs_name_the_keys():
    model = tiny_model("kl")
    solver = make_solver("ldps", model, DDPMSampler(model.schedule))
    keys, op, y, z = problem(model, 3)
    k = torch.tensor([1, 2, 3])
    gens = generators(0, keys, "sampler")
    y_nan = y.clone()
    y_nan[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="img1"):
        solver.solve(y_nan, op, z, k, gens)
    for args in ((y[:2], op, z, k), (y, op.subset([0, 1]), z, k), (y, op, z[:2], k), (y, op, z, k[:2])):
        with pytest.raises(ValueError, match="img0"):
            solver.solve(*args, gens)
    with pytest.raises(ValueError, match="img2"):
        solver.solve(y, op, z, torch.tensor([1, 2, 50]), gens)
    with pytest.raises(ValueError, match="img0"):
        PSLD(model, DDPMSampler(model.schedule)).solve(y, Square([{"severity": 0.5}] * 3, keys), z, k, gens)


def test_registry_and_hyperparameters():
    model = tiny_model("kl")
    assert set(SOLVERS) == {"ldps", "gml_dps", "psld", "resample", "unconditional"}
    with pytest.raises(ValueError, match="unknown solver"):
        make_solver("dps", model)
    with pytest.raises(ValueError, match="zeta"):
        make_solver("ldps", model, zeta=1.0)
    with pytest.raises(ValueError, match="step_size"):
        make_solver("gml_dps", model, step_size=float("nan"))
    with pytest.raises(ValueError, match="scaling"):
        make_solver("ldps", model, scaling="squared")
    assert make_solver("psld", model).config == {"step_size": 1.0, "gluing_weight": 0.1, "scaling": "error"}
    assert make_solver("gml_dps", model).config["gluing_weight"] == 0.05
    assert make_solver("ldps", model).sampler.num_steps == 50
    rs = make_solver("resample", model)
    assert isinstance(rs.sampler, DDIMSampler) and rs.sampler.eta == 1.0 and rs.config["resample_step"] == 400.0
    assert isinstance(default_sampler("resample", NoiseSchedule.ldm_linear()), DDIMSampler)
    assert default_sampler("resample", NoiseSchedule.ldm_linear()).num_steps == 500
    with pytest.warns(UserWarning, match="DDIM"):
        ReSample(model, DDPMSampler(model.schedule))
