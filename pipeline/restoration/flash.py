"""FlashDiffusion's adaptive start (method §3) around any solver, and the baseline mode.

The severity encoder predicts ẑ and its error σ̂²; σ̂² picks the start index (§3.2) and the
start latent is ẑ with injected noise (§3.3) or ẑ pushed up by DDIM inversion (§3.5).
The solver then runs each sample from its own start (staggered batch, exact per sample).
The start index is computed from σ̂², never from c·σ̂², so c changes only the noise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.sampling.schedules import Sampler
from pipeline.sampling.seeding import BASELINE_INIT, NOISE_INJECTION, SAMPLER, generators, randn_per_sample
from pipeline.solvers.base import ACCOUNT_KEYS, Solver

INITS = ("noise_correction", "ddim_inversion", "encoder_mean")


def start_index(sampler: Sampler, sigma2: torch.Tensor) -> torch.Tensor:
    """k̂ = argmin_k |SNR_k − 1/σ̂²| on the sampler's grid (method §3.2)."""
    return sampler.start_index(sigma2)


def start_latent(z_hat: torch.Tensor, sigma2: torch.Tensor, noise_correction: float | None,
                 gens: Sequence[torch.Generator] | None) -> torch.Tensor:
    """z_start = √(1 − c·σ̂²)·ẑ + √(c·σ̂²)·ε (method §3.3); c = None gives ẑ.

    c·σ̂² is clamped to [0, 1]: the reference takes √ of a negative number when c·σ̂² > 1.
    """
    if noise_correction is None:
        return z_hat.clone()
    if gens is None or len(gens) != z_hat.shape[0]:
        raise ValueError(f"start_latent needs one generator per sample ({z_hat.shape[0]}), got "
                         f"{None if gens is None else len(gens)}")
    v = (float(noise_correction) * torch.as_tensor(sigma2).reshape(-1)).clamp(0.0, 1.0)
    v = v.to(device=z_hat.device, dtype=z_hat.dtype).view(-1, *([1] * (z_hat.dim() - 1)))
    eps = randn_per_sample(tuple(z_hat.shape[1:]), list(gens), dtype=z_hat.dtype, device=z_hat.device)
    return (1.0 - v).sqrt() * z_hat + v.sqrt() * eps


@torch.no_grad()
def ddim_inversion_start(model: LatentDiffusion, sampler: Sampler, z_hat: torch.Tensor,
                         start_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic DDIM inversion of ẑ up to each sample's own index (method §3.5).

    For j = 0…k−1: ε = ε_θ(z, τ_j); z ← √a_j·(z − √(1−a_{j−1})·ε)/√a_{j−1} + √(1−a_j)·ε.
    Batched with staggered exit (row i stops after its own k_i steps). Returns the start
    latents and the extra denoiser calls per sample (k_i), which the reference leaves uncounted.
    """
    k = torch.as_tensor(start_index).reshape(-1).cpu().to(torch.long)
    z = z_hat.detach().clone()
    for j in range(int(k.max()) if k.numel() else 0):
        rows = (k > j).nonzero().flatten()
        dev_rows = rows.to(z.device)
        idx = torch.full((rows.numel(),), j, dtype=torch.long)
        zr = z[dev_rows]
        eps = model.eps(zr, sampler.timesteps(idx))
        a, a_prev = float(sampler.alphas[j]), float(sampler.alphas_prev[j])
        z[dev_rows] = a ** 0.5 * (zr - (1.0 - a_prev) ** 0.5 * eps) / a_prev ** 0.5 + (1.0 - a) ** 0.5 * eps
    return z, k.clone()


@dataclass
class FlashResult:
    """Per-sample restoration: image in [−1,1], latent, σ̂² (NaN for the baseline), start, NFE, costs."""

    x: torch.Tensor
    z0: torch.Tensor
    sigma2: torch.Tensor
    start_index: torch.Tensor
    nfe: torch.Tensor
    account: dict[str, torch.Tensor]


class Flash:
    """Severity encoder + solver: estimate the damage, start late for easy images (method §3.6).

    The solver always gets the true operator (FlashDiffusion is non-blind); the encoder only
    sets the start. `init` picks the start latent: "noise_correction" (§3.3, the reference
    default), "ddim_inversion" (§3.5) or "encoder_mean" (ẑ as is).
    """

    def __init__(self, encoder: torch.nn.Module, solver: Solver, noise_correction: float | None = 1.2,
                 init: str = "noise_correction"):
        if init not in INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
        if noise_correction is not None and not (0.0 <= float(noise_correction) < float("inf")):
            raise ValueError(f"noise_correction must be a non-negative number or None, got {noise_correction!r}")
        self.encoder, self.solver = encoder, solver
        self.noise_correction, self.init = noise_correction, init

    @torch.no_grad()
    def estimate(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ẑ, σ̂² (B,), start index (B,)) for a batch of measurements in [−1,1]."""
        z_hat, sigma2 = self.encoder(y)
        sigma2 = sigma2.reshape(-1)
        if sigma2.numel() != y.shape[0]:
            raise ValueError(f"severity encoder gave {sigma2.numel()} variances for {y.shape[0]} measurements")
        return z_hat, sigma2, start_index(self.solver.sampler, sigma2)

    def restore(self, y: torch.Tensor, operator, keys: Sequence[str], job_seed: int,
                estimate: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> FlashResult:
        """Restore a batch; every draw comes from (job_seed, key), so partners never matter."""
        keys = list(keys)
        if len(keys) != y.shape[0]:
            raise ValueError(f"restore: {len(keys)} keys for a batch of {y.shape[0]} measurements ({keys})")
        if not torch.isfinite(y.flatten(1)).all(dim=1).all():
            bad = (~torch.isfinite(y.flatten(1)).all(dim=1)).nonzero().flatten().tolist()
            raise ValueError(f"restore: y is not finite for keys {[keys[i] for i in bad]}")
        z_hat, sigma2, k = estimate if estimate is not None else self.estimate(y)
        k = torch.as_tensor(k).reshape(-1).cpu().to(torch.long)
        extra = torch.zeros(len(keys), dtype=torch.long)
        if self.init == "noise_correction":
            z = start_latent(z_hat, sigma2, self.noise_correction, generators(job_seed, keys, NOISE_INJECTION))
        elif self.init == "ddim_inversion":
            z, extra = ddim_inversion_start(self.solver.model, self.solver.sampler, z_hat, k)
        else:
            z = z_hat.clone()
        out = self.solver.solve(y, operator, z, k, generators(job_seed, keys, SAMPLER))
        account = dict(out.account)
        account["denoiser_calls"] = account["denoiser_calls"] + extra
        account["inversion_calls"] = extra
        account["severity_forward"] = torch.ones(len(keys), dtype=torch.long)
        return FlashResult(x=out.x, z0=out.z0, sigma2=torch.as_tensor(sigma2).reshape(-1).detach().cpu(),
                           start_index=k, nfe=out.nfe + extra, account=account)

    @torch.no_grad()
    def decode(self, z_hat: torch.Tensor, sigma2: torch.Tensor) -> FlashResult:
        """The autoencoder-only answer: D(ẑ), no reverse step (NFE 0, start index −1).

        Why: the paper's "AE" row; what the solver adds over the encoder's own guess."""
        n = z_hat.shape[0]
        account = {k: torch.zeros(n, dtype=torch.long) for k in ACCOUNT_KEYS}
        account["decoder_forward"] += 1
        account["severity_forward"] = torch.ones(n, dtype=torch.long)
        account["inversion_calls"] = torch.zeros(n, dtype=torch.long)
        return FlashResult(x=self.solver.model.autoencoder.decode(z_hat), z0=z_hat.clone(),
                           sigma2=torch.as_tensor(sigma2).reshape(-1).detach().cpu(),
                           start_index=torch.full((n,), -1, dtype=torch.long), nfe=torch.zeros(n, dtype=torch.long),
                           account=account)

    def baseline(self, y: torch.Tensor, operator, keys: Sequence[str], job_seed: int) -> FlashResult:
        """The paper's comparison: the solver's full schedule from pure noise (k = K−1, NFE = K)."""
        keys = list(keys)
        model, sampler = self.solver.model, self.solver.sampler
        device = next(model.unet.parameters()).device
        dtype = next(model.unet.parameters()).dtype
        z = randn_per_sample(model.latent_shape, generators(job_seed, keys, BASELINE_INIT), dtype=dtype, device=device)
        k = torch.full((len(keys),), sampler.num_steps - 1, dtype=torch.long)
        out = self.solver.solve(y, operator, z, k, generators(job_seed, keys, SAMPLER))
        account = dict(out.account)
        account["inversion_calls"] = torch.zeros(len(keys), dtype=torch.long)
        account["severity_forward"] = torch.zeros(len(keys), dtype=torch.long)
        return FlashResult(x=out.x, z0=out.z0, sigma2=torch.full((len(keys),), float("nan"), dtype=torch.float64),
                           start_index=k, nfe=out.nfe, account=account)
