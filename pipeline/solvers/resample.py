"""ReSample as reimplemented by the FlashDiffusion reference (method §5.4).

At selected grid steps (k % every_n == 0, counted from the bottom of the grid, or
k < last_n) it replaces Tweedie's ẑ0 by a hard data-consistent ẑ0(y) and resamples
z_{t−1} around it. Stage by the DDPM timestep τ_k: τ > 750 nothing; 300 < τ ≤ 750 an
image-domain fit x* then ẑ0(y) = E0(x*); τ ≤ 300 a latent-domain fit. The fits use Adam
(lr 0.1, ≤ 100 iterations, sum-reduced losses) and stop per sample once
mean((Â(·) − y)²) ≤ eps (eps = σ_y² = (2·noise_sigma)²: the discrepancy principle).
Adam runs elementwise with per-sample step counters and frozen converged rows, so a
sample's trajectory never depends on its batch partners.
"""
from __future__ import annotations

import warnings

import torch

from pipeline.sampling.schedules import DDIMSampler
from pipeline.sampling.seeding import randn_per_sample
from pipeline.solvers.base import Solver, number


def _view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class ReSample(Solver):
    """Hard data consistency on ẑ0 plus stochastic resampling at selected DDIM steps."""

    name = "resample"
    label = "ReSample"
    reference_sampler = "ddim"
    defaults = {"resample_step": 400.0, "every_n": 10, "last_n": 1, "lam": 1.0, "lr": 0.1, "max_iters": 100,
                "eps": None, "image_stage_max": 750, "latent_stage_max": 300,
                "adam_betas": (0.9, 0.999), "adam_eps": 1e-8}

    def __init__(self, model, sampler, **hyperparameters):
        super().__init__(model, sampler, **hyperparameters)
        if not isinstance(sampler, DDIMSampler):
            warnings.warn(f"ReSample expects a DDIM sampler (the reference uses DDIM-500, η=1); got {sampler.name}",
                          stacklevel=2)

    def check_config(self, c: dict) -> dict:
        c["resample_step"] = number("resample_step", c["resample_step"])
        for key in ("lam", "lr", "adam_eps"):
            c[key] = number(key, c[key])
        for key in ("every_n", "max_iters"):
            c[key] = number(key, c[key], lo=1, integer=True)
        for key in ("last_n", "image_stage_max", "latent_stage_max"):
            c[key] = number(key, c[key], integer=True)
        if c["eps"] is not None:
            c["eps"] = number("eps", c["eps"])
        b1, b2 = c["adam_betas"]
        c["adam_betas"] = (number("adam_betas[0]", b1, hi=1.0 - 1e-12), number("adam_betas[1]", b2, hi=1.0 - 1e-12))
        return c

    def selected(self, k: int) -> bool:
        return k % self.config["every_n"] == 0 or k < self.config["last_n"]

    def correct(self, z_t, z_prev, z0_hat, y, operator, k, gens, count):
        tau = int(self.sampler.grid[k])
        if not self.selected(k) or tau > self.config["image_stage_max"]:
            return z_prev
        eps = self.config["eps"]
        eps = (2.0 * operator.noise_sigmas) ** 2 if eps is None else torch.full((len(operator),), eps)
        eps = eps.to(device=y.device, dtype=y.dtype)
        ae = self.model.autoencoder
        if tau > self.config["latent_stage_max"]:
            x_init = ae.decode(z0_hat)
            count["decoder_forward"] += 1
            x_star = self.fit(x_init, x_init, lambda x: x, y, operator, eps, count, through_decoder=False)
            z0_y = ae.encode(x_star)
            count["encoder_forward"] += 1
        else:
            z0_y = self.fit(z0_hat, z0_hat, ae.decode, y, operator, eps, count, through_decoder=True)
        return self.resample(z_prev, z0_y, tau, gens)

    def resample(self, z_prev, z0_y, tau: int, gens):
        """z_{t−1} ~ N((γ√a·ẑ0(y) + (1−a)·z')/(γ+1−a), γ(1−a)/(γ+1−a)) with a = ᾱ_τ, a⁻ = ᾱ_{τ−1}."""
        ac = self.sampler.schedule.alphas_cumprod
        a = float(ac[tau])
        a_prev = float(ac[tau - 1]) if tau > 0 else 1.0  # the reference's one-DDPM-step-back
        gamma = self.config["resample_step"] * (1.0 - a_prev) / a * (1.0 - a / a_prev)
        denom = gamma + 1.0 - a
        mean = (gamma * a ** 0.5 * z0_y + (1.0 - a) * z_prev) / denom
        var = max(gamma * (1.0 - a) / denom, 0.0)
        noise = randn_per_sample(tuple(z_prev.shape[1:]), gens, dtype=z_prev.dtype, device=z_prev.device)
        return mean + var ** 0.5 * noise

    def fit(self, init, anchor, to_image, y, operator, eps, count, through_decoder: bool):
        """min_v ‖Â(to_image(v)) − y‖² + λ‖v − anchor‖², per sample, Adam with early stop."""
        lr, lam, (b1, b2), aeps = self.config["lr"], self.config["lam"], self.config["adam_betas"], self.config["adam_eps"]
        v = init.detach().clone()
        anchor = anchor.detach()
        m, s = torch.zeros_like(v), torch.zeros_like(v)
        steps = torch.zeros(v.shape[0], dtype=torch.long)
        running = torch.ones(v.shape[0], dtype=torch.bool)
        for _ in range(self.config["max_iters"]):
            with torch.enable_grad():
                v_req = v.requires_grad_(True)
                resid = operator.forward_pm(to_image(v_req)) - y
                if through_decoder:
                    count["decoder_forward"] += running.long()
                mse = resid.detach().flatten(1).pow(2).mean(dim=1).cpu()
                running &= ~(mse <= eps.cpu())
                if not running.any():
                    break
                loss = resid.flatten(1).pow(2).sum(dim=1) + lam * (v_req - anchor).flatten(1).pow(2).sum(dim=1)
                (g,) = torch.autograd.grad(loss.sum(), v_req)
            if through_decoder:
                count["decoder_backward"] += running.long()
            count["inner_steps"] += running.long()
            steps += running.long()
            run = _view(running.to(v.dtype), v)
            m = torch.where(run > 0, b1 * m + (1 - b1) * g, m)
            s = torch.where(run > 0, b2 * s + (1 - b2) * g * g, s)
            t = steps.clamp_min(1).to(torch.float64)
            m_hat = m / _view(1 - b1 ** t, v)
            s_hat = s / _view(1 - b2 ** t, v)
            v = torch.where(run > 0, v.detach() - lr * m_hat / (s_hat.sqrt() + aeps), v.detach())
        return v.detach()
