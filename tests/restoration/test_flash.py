"""Flash: start rule, noise-corrected start latent, DDIM-inversion start, restore and baseline."""
import pytest
import torch

from pipeline.restoration.flash import Flash, ddim_inversion_start, start_index, start_latent
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler
from pipeline.sampling.seeding import generators
from pipeline.models.severity import SeverityEncoder
from pipeline.solvers import make_solver
from tests.solvers.test_solvers import DT, counting, problem, tiny_model


def flash_setup(name="ldps", sampler="ddim", init="noise_correction", model=None):
    model = model or tiny_model("vq")
    s = DDIMSampler(model.schedule, 10, eta=1.0) if sampler == "ddim" else DDPMSampler(model.schedule)
    hyper = {"resample": {"every_n": 2, "max_iters": 3}, "unconditional": {}}.get(name, {"step_size": 0.5})
    solver = make_solver(name, model, s, **hyper)
    encoder = SeverityEncoder.from_autoencoder(model.autoencoder)
    return model, Flash(encoder, solver, noise_correction=1.2, init=init)


def test_start_latent_is_safe_and_optional():
    z = torch.randn(3, 3, 4, 4, dtype=DT)
    gens = generators(0, ["a", "b", "c"], "noise_injection")
    out = start_latent(z, torch.tensor([0.1, 0.9, 5.0]), 1.2, gens)  # c·σ̂² = 0.12, 1.08, 6
    assert torch.isfinite(out).all()
    pure = start_latent(z, torch.tensor([0.1, 0.9, 5.0]), 1.2, generators(0, ["a", "b", "c"], "noise_injection"))
    assert torch.equal(out, pure)  # same generators, same draw
    assert not torch.allclose(out[2], z[2]) and out[2].std() > 0.5  # clamped: pure noise, not NaN
    assert torch.equal(start_latent(z, torch.tensor([0.1, 0.2, 0.3]), None, None), z)
    assert torch.equal(start_latent(z, torch.zeros(3), 1.2, gens), z)


def test_start_index_delegates_to_the_sampler():
    model = tiny_model("vq")
    s = DDIMSampler(model.schedule, 10)
    sigma2 = torch.tensor([0.001, 0.05, 0.3, 10.0])
    assert torch.equal(start_index(s, sigma2), s.start_index(sigma2))


def test_restore_is_reproducible_whatever_the_partners():
    model, flash = flash_setup("gml_dps")
    keys, op, y, _ = problem(model, 5)
    z_hat, sigma2, k = flash.estimate(y)
    assert z_hat.shape == (5, *model.latent_shape) and sigma2.shape == k.shape == (5,)
    k = torch.tensor([1, 4, 2, 4, 0])  # fixed short starts keep the test fast
    est = (z_hat, torch.tensor([0.01, 0.2, 0.05, 0.2, 0.001]), k)
    full = flash.restore(y, op, keys, 11, estimate=est)
    assert full.nfe.tolist() == (k + 1).tolist() and full.account["severity_forward"].tolist() == [1] * 5
    sub = [3, 0, 4]
    part = flash.restore(y[sub], op.subset(sub), [keys[i] for i in sub], 11,
                         estimate=tuple(t[sub] for t in est))
    assert (part.x - full.x[sub]).abs().max() < 1e-6 and torch.equal(part.start_index, k[sub])
    other = flash.restore(y, op, keys, 12, estimate=est)
    assert (other.z0 - full.z0).abs().max() > 1e-3  # the job seed matters


def test_baseline_runs_the_full_schedule_from_noise():
    model, flash = flash_setup("resample")
    keys, op, y, _ = problem(model, 2)
    out = flash.baseline(y, op, keys, 3)
    K = flash.solver.sampler.num_steps
    assert out.nfe.tolist() == [K, K] and out.start_index.tolist() == [K - 1, K - 1]
    assert out.account["severity_forward"].tolist() == [0, 0] and torch.isnan(out.sigma2).all()
    again = flash.baseline(y[[1]], op.subset([1]), [keys[1]], 3)
    assert (again.z0[0] - out.z0[1]).abs().max() < 1e-6


def test_ddim_inversion_start_counts_its_calls():
    model = counting(tiny_model("kl"))
    sampler = DDIMSampler(model.schedule, 10, eta=1.0)
    z_hat = torch.randn(3, *model.latent_shape, dtype=DT)
    k = torch.tensor([0, 3, 2])
    model.rows = 0
    z, extra = ddim_inversion_start(model, sampler, z_hat, k)
    assert extra.tolist() == [0, 3, 2] and model.rows == 5
    assert torch.equal(z[0], z_hat[0]) and not torch.allclose(z[1], z_hat[1])
    alone, _ = ddim_inversion_start(model, sampler, z_hat[[1]], k[[1]])
    assert (alone[0] - z[1]).abs().max() < 1e-9
    _, flash = flash_setup("unconditional", init="ddim_inversion", model=model)
    keys, op, y, _ = problem(model, 3)
    model.rows = 0
    out = flash.restore(y, op, keys, 0, estimate=(z_hat, torch.tensor([0.01, 0.1, 0.05]), k))
    assert out.nfe.tolist() == (2 * k + 1).tolist() == out.account["denoiser_calls"].tolist()
    assert model.rows == int((2 * k + 1).sum()) and out.account["inversion_calls"].tolist() == k.tolist()


def test_bad_inputs():
    model, flash = flash_setup("ldps")
    keys, op, y, _ = problem(model, 3)
    y_bad = y.clone()
    y_bad[2] = float("nan")
    with pytest.raises(ValueError, match="img2"):
        flash.restore(y_bad, op, keys, 0)
    with pytest.raises(ValueError, match="img0"):
        flash.restore(y, op, keys[:2], 0)
    with pytest.raises(ValueError, match="init"):
        Flash(flash.encoder, flash.solver, init="warm")
    with pytest.raises(ValueError, match="generator"):
        start_latent(torch.zeros(2, 3, 4, 4), torch.ones(2), 1.0, None)


def test_a_v_prediction_unet_gives_the_solvers_exact_eps():
    """ε = √ᾱ·v + √(1−ᾱ)·z_t: a UNet that outputs the true v yields the true ε at every timestep."""
    import torch

    from pipeline.models.latent import LatentDiffusion
    from tests.helpers import tiny_latent_diffusion

    base = tiny_latent_diffusion("kl")
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(3, 4, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(3, 4, 4, 4, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 500, 999])
    a = base.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
    zt = base.schedule.add_noise(z0, t, eps)
    v = a.sqrt() * eps - (1 - a).sqrt() * z0

    class TrueV(torch.nn.Module):
        def forward(self, z, timesteps):
            return type("Out", (), {"sample": v})()

    ldm = LatentDiffusion(base.autoencoder, TrueV(), base.schedule, "v_prediction")
    assert torch.allclose(ldm.eps(zt, t), eps, atol=1e-10)
    with pytest.raises(ValueError, match="prediction"):
        LatentDiffusion(base.autoencoder, TrueV(), base.schedule, "sample")
