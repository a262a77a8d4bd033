"""Solvers: staggered batches equal one-by-one runs, exact NFE, guidance helps, bad inputs fail."""
from functools import lru_cache

import pytest
import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.operators import Inpainting
from pipeline.operators.base import Operator
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler, NoiseSchedule
from pipeline.sampling.seeding import generators, randn_per_sample
from pipeline.solvers import SOLVERS, ReSample, default_sampler, make_solver, restoring_solvers
from tests.helpers import tiny_latent_diffusion

GUIDED = restoring_solvers()
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
    """Small-model hyperparameters by kind of solver: ReSample's stages are moved onto the short grid, a
    DPS-like step is halved; any other solver runs its defaults."""
    cls = SOLVERS[name]
    if issubclass(cls, ReSample):
        g = sampler.grid
        return {"every_n": 2, "max_iters": 5, "image_stage_max": int(g[3]), "latent_stage_max": int(g[1]),
                "resample_step": 50.0}
    return {"step_size": 0.5} if "step_size" in cls.defaults else {}


def guidance_hyper(name: str) -> dict:
    """Hyperparameters under which guidance must beat unconditional sampling in a few steps: the defaults,
    except that ReSample-like solvers fit at every other step, in the latent stage, briefly."""
    if issubclass(SOLVERS[name], ReSample):
        return {"every_n": 2, "max_iters": 10, "image_stage_max": 1000, "latent_stage_max": 1000}
    return {}


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


# --- the contract, one function per property: run on every registered solver (and by tests/test_registries.py on
# a solver registered at test time) -------------------------------------------------------------------------------

def check_batched_equals_one_by_one(name: str, sampler_name: str) -> None:
    """Staggered batches equal one-by-one runs in any order and company, with exact NFE and cost counts."""
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


def check_nfe_counted(name: str) -> None:
    """NFE is what the denoiser saw: one row per active sample and step, on both samplers."""
    model = counting(tiny_model("kl"))
    for sampler in samplers(model).values():
        solver = SOLVERS[name](model, sampler, **small_hyper(name, sampler))
        keys, op, y, z = problem(model, 4)
        k = torch.tensor([0, 3, 5, 3])
        model.rows = 0
        out = solve(solver, y, op, z, k, keys, range(4))
        assert model.rows == int((k + 1).sum()) and out.nfe.tolist() == (k + 1).tolist()


def check_guidance(name: str) -> None:
    """Data consistency lowers the measurement residual against unconditional sampling from the same start."""
    model = tiny_model("kl")
    sampler = samplers(model)[SOLVERS[name].reference_sampler]
    keys, op, y, z = problem(model, 3, noise=(0.01,), seed=3)
    k = torch.full((3,), 6)
    guided = solve(SOLVERS[name](model, sampler, **guidance_hyper(name)), y, op, z, k, keys, range(3))
    plain = solve(SOLVERS["unconditional"](model, sampler), y, op, z, k, keys, range(3))
    r_g, r_p = residual(model, guided, y, op).mean(), residual(model, plain, y, op).mean()
    assert r_g < 0.9 * r_p, (name, r_g.item(), r_p.item())


def check_bad_inputs(name: str) -> None:
    """Non-finite or mis-sized inputs, start indices off the grid and (for `needs_linear`) a nonlinear
    operator are ValueErrors naming the sample keys."""
    model = tiny_model("kl")
    sampler = DDPMSampler(model.schedule)
    solver = SOLVERS[name](model, sampler, **small_hyper(name, sampler))
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
    if SOLVERS[name].needs_linear:
        with pytest.raises(ValueError, match="img0"):
            solver.solve(y, Square([{"severity": 0.5}] * 3, keys), z, k, gens)


def check_registration(name: str) -> None:
    """Name, label, reference sampler and hyperparameter checks: what every list of solvers reads."""
    cls = SOLVERS[name]
    assert cls.name == name and isinstance(cls.label, str) and cls.label, (name, cls.label)
    assert [c.label for c in SOLVERS.values()].count(cls.label) == 1, cls.label
    assert cls.reference_sampler in ("ddpm", "ddim") and isinstance(cls.restores, bool)
    model = tiny_model("kl")
    built = make_solver(name, model)
    assert built.sampler.name == cls.reference_sampler and set(built.config) == set(cls.defaults)
    with pytest.raises(ValueError, match="no_such_hyperparameter"):
        make_solver(name, model, no_such_hyperparameter=1.0)


@pytest.mark.filterwarnings("ignore:ReSample expects")
@pytest.mark.parametrize("sampler_name", ["ddpm", "ddim"])
@pytest.mark.parametrize("name", GUIDED)
def test_batched_equals_one_by_one(name, sampler_name):
    check_batched_equals_one_by_one(name, sampler_name)


@pytest.mark.parametrize("name", list(SOLVERS))
def test_registration(name):
    check_registration(name)


@pytest.mark.filterwarnings("ignore:ReSample expects")
@pytest.mark.parametrize("name", list(SOLVERS))
def test_nfe_is_what_the_denoiser_saw(name):
    check_nfe_counted(name)


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


@pytest.mark.parametrize("name", GUIDED)
def test_guidance_lowers_measurement_residual(name):
    check_guidance(name)


class Square(Operator):
    """A nonlinear per-sample operator (x²) for the PSLD linearity check."""

    name = "square"

    def forward(self, x01):
        return x01 ** 2


@pytest.mark.filterwarnings("ignore:ReSample expects")
@pytest.mark.parametrize("name", list(SOLVERS))
def test_bad_inputs_name_the_keys(name):
    check_bad_inputs(name)


def test_registry_and_hyperparameters():
    model = tiny_model("kl")
    shipped = {"ldps": "Latent-DPS", "gml_dps": "GML-DPS", "psld": "PSLD", "resample": "ReSample"}
    assert {n: SOLVERS[n].label for n in shipped} == shipped       # the reproduction report prints these
    assert [n for n in restoring_solvers() if n in shipped] == list(shipped) and "unconditional" not in GUIDED
    assert [n for n in SOLVERS if SOLVERS[n].reference_sampler == "ddim"] == ["resample"]
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
