"""How well the Gaussian-blur severity encoder reads `varying_blur` (issue 27: "the Gaussian-blur one may
serve: measure it"), with nothing trained.

Why: `varying_blur` ships no encoder of its own; a job names `models.severity.varying_blur=
models/severity-gaussian_blur`. That is sound if σ̂² follows the image's overall damage (the mean corner
severity, the dict's `severity`) and useful for per-region starts if σ̂² of a region follows that region's
severity. Three figures, on dev crops at five severities, degraded as every measurement here is (noise 0.05,
per-key seeds, one operator seed per crop) with the encoder's own blur (its `operator_params`: kernel, std
range) and corner spreads 0.5 (the family's default) and 1.0:
  * whole crops: Spearman of σ̂² against the mean corner severity, beside the same crops under uniform
    `gaussian_blur` at the same t (what the encoder was trained for);
  * the variance map of `SeverityEncoder.heads` pooled over the four quadrants: does it order the quadrants'
    mean severities? (ties count as misses, as `ordering_accuracy` scores them);
  * each quadrant encoded on its own: on the 64-px crops (32-px quadrants, below the encoder's training
    size) and on 128-px images stitched from 2×2 neighbouring dev crops of one photo and scale (64-px
    quadrants, its training size).
Run: `python -m pipeline.model_report.varying_severity --models models --photos dev` (JSON on stdout).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from pipeline.corpus.crops import load_corpus_export, parse_crop_key
from pipeline.execution.crop_restore import degrade_crops
from pipeline.model_report.measurements import resolve_photos, spread
from pipeline.models.model_store import load_model
from pipeline.quality.statistics import ordering_accuracy, spearman

SEVERITIES = (0.0, 0.25, 0.5, 0.75, 1.0)


def rho(x, y) -> float | None:
    """Spearman ρ, None where it is undefined (a constant σ̂²), so the JSON stays valid."""
    value = spearman(x, y)
    return None if np.isnan(value) else value


def quadrants(x: torch.Tensor) -> list[torch.Tensor]:
    """The four quadrants of (B, C, H, W), top-left, top-right, bottom-left, bottom-right (H, W even)."""
    h, w = x.shape[-2] // 2, x.shape[-1] // 2
    return [x[..., :h, :w], x[..., :h, w:], x[..., h:, :w], x[..., h:, w:]]


def quadrant_means(m: torch.Tensor) -> np.ndarray:
    """(B, 4) mean of a (B, C, H, W) map over each quadrant."""
    return torch.stack([q.double().mean(dim=(1, 2, 3)) for q in quadrants(m)], dim=1).cpu().numpy()


def encode(encoder, y: torch.Tensor, device, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """(σ̂² (N,), quadrant means of the variance map exp(log_var) (N, 4)) of measurements y in [−1,1]."""
    s2, pooled = [], []
    with torch.no_grad():
        for chunk in y.split(batch):
            _, log_var = encoder.heads(chunk.to(device))
            var = log_var.exp()
            s2.append(var.flatten(1).mean(dim=1).double().cpu().numpy())
            pooled.append(quadrant_means(var))
    return np.concatenate(s2), np.concatenate(pooled)


def quadrant_sigma2(encoder, y: torch.Tensor, device, batch: int) -> np.ndarray:
    """(N, 4) σ̂² of each quadrant of y encoded as an image of its own."""
    return np.stack([encode(encoder, q.contiguous(), device, batch)[0] for q in quadrants(y)], axis=1)


def quadrant_figures(sigma2: np.ndarray, truth: np.ndarray) -> dict:
    """Within each image: ordering accuracy of its quadrants (ties count as misses) and Spearman of the
    quadrants' offsets from their image's mean; across images: Spearman pooled over all quadrants.
    Images whose quadrants share one severity (t = 0 or 1 keeps the corners equal) have nothing to order."""
    truth = np.round(truth, 9)           # equal quadrants (a gradient along one axis) stay equal
    varied = np.ptp(truth, axis=1) > 0
    s, t = sigma2[varied], truth[varied]
    return {"ordering_accuracy": ordering_accuracy(s, t),
            "within_image_spearman": rho(s - s.mean(axis=1, keepdims=True), t - t.mean(axis=1, keepdims=True)),
            "pooled_spearman": rho(sigma2.ravel(), truth.ravel()), "images": int(varied.sum())}


def degrade(family: str, x01: torch.Tensor, params: dict, seed: int, prefix: str):
    """Every crop at every severity of SEVERITIES, one operator seed per crop: (y, operator, t per row)."""
    k = len(SEVERITIES)
    t = np.tile(SEVERITIES, len(x01))
    seeds = 1000 + np.arange(len(x01) * k) // k
    y, op, _ = degrade_crops(family, x01.repeat_interleave(k, dim=0), t, params, seed, prefix, op_seeds=seeds)
    return y, op, t


def whole_crops(encoder, crops01: torch.Tensor, device, seed: int, batch: int, family: str, params: dict) -> dict:
    """σ̂² against the (mean corner) severity; for varying_blur also the quadrants, pooled from the map and alone."""
    y, op, t = degrade(family, crops01, params, seed, f"vsev-{family}")
    s2, pooled = encode(encoder, y, device, batch)
    out = {"spearman": rho(s2, t), "ordering_accuracy": ordering_accuracy(s2.reshape(-1, len(SEVERITIES)),
                                                                               SEVERITIES),
           "sigma2_mean": float(s2.mean()), "crops": len(crops01), "size": int(crops01.shape[-1]), **params}
    if family == "varying_blur":
        truth = quadrant_means(op.severity_map(*y.shape[-2:]))
        out["map_pooled_quadrants"] = quadrant_figures(pooled, truth)
        out["map_pooled_distinct_per_image"] = float(np.mean([len(np.unique(r)) for r in pooled]))
        out["quadrants_encoded_alone"] = quadrant_figures(quadrant_sigma2(encoder, y, device, batch), truth)
    return out


def stitched_blocks(url: str) -> torch.Tensor:
    """(N, 3, 2s, 2s) images in [0,1] from 2×2 neighbouring crops of one photo and scale (no crop used twice)."""
    arr, keys, _ = load_corpus_export(url)
    where = {parse_crop_key(k): i for i, k in enumerate(keys)}
    blocks = []
    for (slug, short, r, c), i in where.items():
        cells = [where.get((slug, short, r + dr, c + dc)) for dr in (0, 1) for dc in (0, 1)]
        if r % 2 == 0 and c % 2 == 0 and None not in cells:
            top, bottom = (np.concatenate([arr[cells[j]], arr[cells[j + 1]]], axis=1) for j in (0, 2))
            blocks.append(np.concatenate([top, bottom], axis=0))
    return torch.from_numpy(np.stack(blocks)).permute(0, 3, 1, 2).float().div(255.0)


def stitched_quadrants(encoder, images01: torch.Tensor, device, seed: int, batch: int, params: dict) -> dict:
    """On 2s-px images: each s-px quadrant encoded alone against its mean severity; the whole image's σ̂²."""
    y, op, t = degrade("varying_blur", images01, params, seed, "vsev-stitched")
    truth = quadrant_means(op.severity_map(*y.shape[-2:]))
    whole, _ = encode(encoder, y, device, batch)
    return {"quadrants_encoded_alone": quadrant_figures(quadrant_sigma2(encoder, y, device, batch), truth),
            "whole_image_spearman": rho(whole, t), "images": len(images01),
            "size": int(images01.shape[-1]), **params}


def measure(models: str, photos: str, crops: int, seed: int, batch: int, device: str) -> dict:
    """All figures of the module docstring for the encoder `models/severity-gaussian_blur`."""
    encoder, meta = load_model(f"{models}/severity-gaussian_blur", device=device, return_meta=True)
    encoder = encoder.float()
    params = dict(meta.get("operator_params", {}))     # the Gaussian blur it was trained on: kernel, std range
    url = resolve_photos(photos)
    arr, _, _ = load_corpus_export(url)
    x01 = torch.from_numpy(arr).permute(0, 3, 1, 2).float().div(255.0)
    x01 = x01[spread(len(x01), crops)]
    stitched = stitched_blocks(url)
    stitched = stitched[spread(len(stitched), crops)]
    return {"encoder": f"{models}/severity-gaussian_blur", "photos": url, "seed": seed, "severities": list(SEVERITIES),
            "noise_sigma": 0.05,
            "operator_params": params,
            "crops_gaussian_blur": whole_crops(encoder, x01, device, seed, batch, "gaussian_blur", params),
            **{f"crops_spread{s:g}": whole_crops(encoder, x01, device, seed, batch, "varying_blur",
                                                 {**params, "spread": s}) for s in (0.5, 1.0)},
            **{f"stitched_spread{s:g}": stitched_quadrants(encoder, stitched, device, seed, batch,
                                                           {**params, "spread": s}) for s in (0.5, 1.0)}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="models")
    ap.add_argument("--photos", default="dev", help="dev | train | a corpus export folder")
    ap.add_argument("--crops", type=int, default=64, help="crops (and stitched images) spread over the export")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = ap.parse_args(argv)
    json.dump(measure(a.models, a.photos, a.crops, a.seed, a.batch, a.device), sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
