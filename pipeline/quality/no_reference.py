"""Quality signals that need no clean reference: what real archives allow.

* `residual`: RMS of y − A(x̂) over pixels, in [0,1] units: does the restoration explain
  the measurement? `residual_z` divides it by the expected noise level √(σ² + q²), σ the
  sample's noise_sigma and q = 1/(255·√12) the rounding of an 8-bit PNG, so a result that
  fits the data as well as the truth does sits near 1 (below 1 for inpainting, whose
  missing pixels are measured exactly as 0) and a result that contradicts its measurement
  sits far above.
* `severity_ood`: how far log σ̂² lies outside the range the severity encoder produced on
  its own training inputs ([q01, q99], recorded in the model's meta at training end), in
  units of that range's width; 0 inside. A large value means the damage is unlike anything
  the encoder was trained on, so its start step is a guess.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

PNG_ROUNDING_STD = 1.0 / (255.0 * math.sqrt(12.0))


def residuals(y01: torch.Tensor, restored01: torch.Tensor, operator, noise_sigmas: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(residual, residual_z) per sample, both (B,) float64."""
    with torch.no_grad():
        pred = operator.forward(restored01.to(y01.dtype))
        r = (y01 - pred).double().flatten(1).pow(2).mean(1).sqrt()
    expected = (noise_sigmas.double() ** 2 + PNG_ROUNDING_STD ** 2).sqrt()
    return r, r / expected


def sigma2_quantiles(encoder, batches: Callable[[int], torch.Tensor], n_batches: int = 4) -> dict:
    """q01, q50, q99 of σ̂² over `n_batches` batches of training measurements (`batches(j)` → y)."""
    values = []
    with torch.no_grad():
        for j in range(n_batches):
            _, s2 = encoder(batches(j))
            values.append(s2.detach().double().reshape(len(s2), -1).mean(1).cpu())
    v = torch.cat(values)
    q = torch.quantile(v, torch.tensor([0.01, 0.5, 0.99], dtype=torch.float64))
    return {"q01": float(q[0]), "q50": float(q[1]), "q99": float(q[2]), "n": int(len(v))}


def severity_ood(sigma2: float, quantiles: dict) -> float:
    lo, hi, s = math.log(quantiles["q01"]), math.log(quantiles["q99"]), math.log(max(sigma2, 1e-30))
    width = max(hi - lo, 1e-6)
    return max(0.0, lo - s, s - hi) / width
