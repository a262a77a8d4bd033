"""Noise schedules and reverse samplers on per-sample timesteps.

Conventions (method §1, §3): ᾱ is 0-indexed over T DDPM timesteps as in LDM. A sampler
walks a grid of DDPM timesteps τ_0 < … < τ_{K-1}. A sample that starts at grid index k is
taken to be at noise level ᾱ_{τ_k}; the loop evaluates the denoiser at τ_k, τ_{k-1}, …, τ_0,
and the last step lands on the clean latent (ᾱ_prev = 1). So NFE = k + 1 exactly, the first
step is at the matched timestep, and no start value falls back to a run from noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.sampling.seeding import randn_per_sample


@dataclass(frozen=True)
class NoiseSchedule:
    """Cumulative signal fractions ᾱ_i, i = 0…T-1, in float64."""

    alphas_cumprod: torch.Tensor

    @classmethod
    def ldm_linear(cls, num_timesteps: int = 1000, beta_start: float = 0.0015, beta_end: float = 0.0195) -> "NoiseSchedule":
        """The LDM 'linear' schedule: β_i = linspace(√β_start, √β_end, T)_i²."""
        betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_timesteps, dtype=torch.float64) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def from_diffusers(cls, scheduler) -> "NoiseSchedule":
        """The ᾱ of any diffusers scheduler (DDPMScheduler, DDIMScheduler, …)."""
        return cls(torch.as_tensor(scheduler.alphas_cumprod, dtype=torch.float64).clone())

    @property
    def num_timesteps(self) -> int:
        return int(self.alphas_cumprod.numel())

    @property
    def snr(self) -> torch.Tensor:
        a = self.alphas_cumprod
        return a / (1.0 - a)

    def alpha_bar(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """ᾱ at per-sample DDPM timesteps, shaped to broadcast over `like` (its device and dtype)."""
        return _per_sample(self.alphas_cumprod.to(like.device)[timesteps.to(like.device)], like)

    def add_noise(self, z0: torch.Tensor, timesteps: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """Forward process q(z_t | z_0) at per-sample DDPM timesteps."""
        a = self.alpha_bar(timesteps, z0)
        return a.sqrt() * z0 + (1.0 - a).sqrt() * eps


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


class Sampler:
    """A reverse sampler on a timestep grid; subclasses define the grid and the step rule."""

    name = "sampler"
    stochastic = True

    def __init__(self, schedule: NoiseSchedule, grid: torch.Tensor):
        self.schedule = schedule
        self.grid = grid.to(torch.long)
        self.alphas = schedule.alphas_cumprod[self.grid]
        self.alphas_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas[:-1]])

    @property
    def num_steps(self) -> int:
        return int(self.grid.numel())

    @property
    def snr(self) -> torch.Tensor:
        return self.alphas / (1.0 - self.alphas)

    def timesteps(self, index: torch.Tensor) -> torch.Tensor:
        """DDPM timesteps τ_k of per-sample grid indices (what the denoiser is conditioned on)."""
        return self.grid.to(index.device)[index]

    def start_index(self, sigma2: torch.Tensor) -> torch.Tensor:
        """method §3.2: k̂ = argmin_k |SNR_k − 1/σ̂²| (nearest on a linear SNR scale)."""
        sigma2 = torch.as_tensor(sigma2, dtype=torch.float64).reshape(-1).cpu()
        inv = 1.0 / sigma2.clamp_min(1e-12)
        return (self.snr.view(1, -1) - inv.view(-1, 1)).abs().argmin(dim=1)

    def noise_level(self, index: torch.Tensor) -> torch.Tensor:
        """σ² that maps to grid index k: 1/SNR_k (used for fixed-start experiments)."""
        return 1.0 / self.snr[index.cpu()]

    @staticmethod
    def nfe(start_index: torch.Tensor) -> torch.Tensor:
        """Denoiser evaluations a sample starting at grid index k runs: k + 1."""
        return start_index.to(torch.long) + 1

    def step(self, z: torch.Tensor, eps: torch.Tensor, index: torch.Tensor,
             gens: list[torch.Generator] | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step from grid index k to k−1 for every row; returns (z_prev, ẑ0)."""
        raise NotImplementedError


class DDPMSampler(Sampler):
    """Ancestral DDPM with posterior variance β̃ (the reference's sampler for LDPS/GML/PSLD)."""

    name = "ddpm"

    def __init__(self, schedule: NoiseSchedule, num_steps: int | None = None):
        T = schedule.num_timesteps
        S = num_steps or T
        super().__init__(schedule, torch.arange(0, T, T // S)[:S] if S != T else torch.arange(T))

    def step(self, z, eps, index, gens):
        dev = z.device
        a = _per_sample(self.alphas.to(dev)[index.to(dev)], z)
        a_prev = _per_sample(self.alphas_prev.to(dev)[index.to(dev)], z)
        x0 = (z - (1.0 - a).sqrt() * eps) / a.sqrt()
        beta = 1.0 - a / a_prev
        mean = a_prev.sqrt() * beta / (1.0 - a) * x0 + (1.0 - beta).sqrt() * (1.0 - a_prev) / (1.0 - a) * z
        var = (1.0 - a_prev) / (1.0 - a) * beta
        noise = randn_per_sample(tuple(z.shape[1:]), gens, dtype=z.dtype, device=dev)
        return mean + var.clamp_min(0).sqrt() * noise, x0


class DDIMSampler(Sampler):
    """DDIM(η) on the LDM 'uniform' grid τ_k = k·(T/S) + 1 (method §3.1)."""

    name = "ddim"

    def __init__(self, schedule: NoiseSchedule, num_steps: int = 500, eta: float = 1.0):
        T = schedule.num_timesteps
        if not 0 < num_steps <= T:
            raise ValueError(f"DDIM steps must be in 1..{T}, got {num_steps}")
        grid = torch.arange(0, T, T // num_steps)[:num_steps] + 1
        super().__init__(schedule, grid.clamp_max(T - 1))
        self.eta = float(eta)
        self.stochastic = self.eta > 0

    def step(self, z, eps, index, gens):
        dev = z.device
        a = _per_sample(self.alphas.to(dev)[index.to(dev)], z)
        a_prev = _per_sample(self.alphas_prev.to(dev)[index.to(dev)], z)
        x0 = (z - (1.0 - a).sqrt() * eps) / a.sqrt()
        sigma = self.eta * ((1.0 - a_prev) / (1.0 - a) * (1.0 - a / a_prev)).clamp_min(0).sqrt()
        z_prev = a_prev.sqrt() * x0 + (1.0 - a_prev - sigma ** 2).clamp_min(0).sqrt() * eps
        if self.stochastic:
            z_prev = z_prev + sigma * randn_per_sample(tuple(z.shape[1:]), gens, dtype=z.dtype, device=dev)
        return z_prev, x0


SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def make_sampler(name: str, schedule: NoiseSchedule, **kwargs) -> Sampler:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}")
    return SAMPLERS[name](schedule, **kwargs)
