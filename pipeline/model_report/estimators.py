"""How well a blind parameter estimator reads a family's severity, and what it costs (report-models).

The measurement a blind job relies on: dev crops degraded at severities spread over [0, 1]
(noise 0.05, 8-bit rounding as a PNG holds), each read back by the estimator. Spearman ρ(t̂, t)
ranks widths across crops (issue 28 asks ≥ 0.9), the mean |t̂ − t| and the mean of the
estimator's own std say how close and how honest it is, and the fraction of true t inside
t̂ ± 2·std checks that honesty. Time per crop on this machine says what it costs beside the
severity encoder.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from pipeline.execution.crop_restore import degrade_crops
from pipeline.models.parameter_estimator import ParameterEstimator
from pipeline.operators.noise import to_unit_domain
from pipeline.quality.statistics import spearman

NOISE = 0.05


def read_severities(model: ParameterEstimator, family: str, crops01: torch.Tensor, params: dict, seed: int,
                    batch: int = 64) -> dict:
    """t, t̂ and std per crop; the i-th crop's t is spread evenly over [0, 1] (one degradation per crop)."""
    n = len(crops01)
    ts = np.linspace(0.0, 1.0, n)
    order = np.random.default_rng(seed).permutation(n)   # severities not tied to the crop list's order
    t_all = ts[order]
    means, stds, seconds = [], [], 0.0
    with torch.no_grad():
        for i in range(0, n, batch):
            y, _, _ = degrade_crops(family, crops01[i:i + batch], t_all[i:i + batch], params, seed,
                                    f"est-{family}-{i}", noise=NOISE)
            y = (to_unit_domain(y).clamp(0, 1) * 255).round() / 127.5 - 1.0     # what a PNG holds
            t0 = time.perf_counter()
            mean, log_var = model(y)
            seconds += time.perf_counter() - t0
            means.append(mean.double())
            stds.append(log_var.double().mul(0.5).exp())
    t_hat, std = torch.cat(means).numpy(), torch.cat(stds).numpy()
    return {"t": t_all, "t_hat": t_hat, "std": std, "seconds_per_crop": seconds / n}


def measure_estimator(model: ParameterEstimator, family: str, crops01: torch.Tensor, params: dict,
                      seed: int) -> dict:
    r = read_severities(model, family, crops01, params, seed)
    err = np.abs(r["t_hat"] - r["t"])
    return {"spearman": spearman(r["t_hat"], r["t"]), "mean_abs_error": float(err.mean()),
            "mean_std": float(r["std"].mean()), "within_2std": float((err <= 2 * r["std"]).mean()),
            "ms_per_crop": 1000 * r["seconds_per_crop"], "parameters": sum(p.numel() for p in model.parameters()),
            "crops": len(crops01), "noise_sigma": NOISE}
