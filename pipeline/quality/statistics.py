"""Statistics the reports quote: ordering accuracy and rank correlations of severity estimates,
and paired bootstrap intervals of per-image gains (scipy underneath).

Why in quality/: `report-models`, the reproduction suite and tuning all quote them, and a
figure is only comparable across those reports if it is computed one way. They are tested
on exact inputs (a perfect order scores 1.0, a reversed one 0.0).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap, pearsonr, spearmanr


def ordering_accuracy(sigma2, severity) -> float:
    """Mean over images of the fraction of severity pairs whose σ̂² order matches (method §2.3).

    `sigma2` is (N, K): one row per image, one column per severity; `severity` is (K,) or
    (N, K). A pair counts only when both orders are strict and agree: a tie in σ̂² (for
    pairs of different severity) is not a match, so a constant σ̂² scores 0, not 0.5.
    """
    s = np.asarray(sigma2, np.float64)
    t = np.broadcast_to(np.asarray(severity, np.float64), s.shape)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"ordering_accuracy needs (N, K ≥ 2) predictions, got shape {s.shape}")
    ds = np.sign(s[:, :, None] - s[:, None, :])
    dt = np.sign(t[:, :, None] - t[:, None, :])
    upper = np.triu(np.ones(s.shape[1], bool), 1)
    pairs = upper & (dt != 0)
    match = ((ds == dt) & pairs).sum(axis=(1, 2))
    return float((match / pairs.sum(axis=(1, 2))).mean())


def _pair(x, y, name: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"{name} needs two equal-length series of ≥ 2 values, got {len(x)} and {len(y)}")
    return x, y


def pearson(x, y) -> float:
    """Pearson correlation (scipy); NaN when either input is constant."""
    x, y = _pair(x, y, "pearson")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(pearsonr(x, y).statistic)


def spearman(x, y) -> float:
    """Spearman ρ (scipy: Pearson of the average ranks); NaN when either input is constant."""
    x, y = _pair(x, y, "spearman")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def paired_mean_ci(a, b, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Mean of the per-image difference a − b with a bootstrap confidence interval over images
    (scipy's BCa bootstrap): whether a gain is larger than the spread between images."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.ndim != 1 or len(d) < 2:
        raise ValueError(f"paired_mean_ci needs two equal-length series of ≥ 2 values, got shape {d.shape}")
    if np.ptp(d) == 0:
        return {"mean": float(d[0]), "lo": float(d[0]), "hi": float(d[0]), "n": len(d), "confidence": confidence}
    res = bootstrap((d,), np.mean, confidence_level=confidence, n_resamples=resamples,
                    rng=np.random.default_rng(seed))
    ci = res.confidence_interval
    return {"mean": float(d.mean()), "lo": float(ci.low), "hi": float(ci.high), "n": len(d), "confidence": confidence}
