"""Measurement noise and domain maps (method §1, §4).

Measurements are formed in [0,1] and not clipped: y01 = A(x01) + σ_i·n_i, then y = 2·y01 − 1.
Each sample's noise comes from its own generator (never one batched draw), so a sample's
measurement does not depend on its batch. The draw is float32 whatever the image dtype, so
the same sample gets the same noise in float32 and float64.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from pipeline.operators.base import Operator


class NoiseLevel:
    """σ(t) = σ_min·(σ_max/σ_min)^t, geometric in the severity (constant when equal, 0 allowed)."""

    def __init__(self, sigma_min: float, sigma_max: float):
        for name, v in (("sigma_min", sigma_min), ("sigma_max", sigma_max)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"NoiseLevel: {name} must be a finite number ≥ 0, got {v!r}")
        if sigma_max < sigma_min:
            raise ValueError(f"NoiseLevel: sigma_max={sigma_max} < sigma_min={sigma_min}")
        if sigma_min == 0 and sigma_max > 0:
            raise ValueError("NoiseLevel: a geometric schedule needs sigma_min > 0 unless sigma_max == 0")
        self.sigma_min = float(sigma_min)
        self.sigma_max = float(sigma_max)

    def __call__(self, t):
        """σ at severity t (a float, or a tensor of severities)."""
        if self.sigma_min == self.sigma_max:
            return torch.full_like(t, self.sigma_min) if isinstance(t, torch.Tensor) else self.sigma_min
        ratio = self.sigma_max / self.sigma_min
        return self.sigma_min * ratio ** t

    def __repr__(self) -> str:
        return f"NoiseLevel(sigma_min={self.sigma_min}, sigma_max={self.sigma_max})"


def measure(operator: Operator, x01: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """y01 = A(x01) + noise_sigma_i·n_i with n_i ~ N(0, I) from gens[i]; not clipped (the family's own
    `measurement`: JPEG's is the real codec's decoded file)."""
    return operator.measurement(x01, gens)


def to_model_domain(y01: torch.Tensor) -> torch.Tensor:
    """[0,1] → [−1,1]: 2·y01 − 1."""
    return 2.0 * y01 - 1.0


def to_unit_domain(y: torch.Tensor) -> torch.Tensor:
    """[−1,1] → [0,1]: (y + 1)/2."""
    return (y + 1.0) / 2.0
