"""What a restore job will cost: solve seconds predicted from start steps and a calibration table.

A solver batch runs from its largest start step down to 0 and computes only the rows that
have joined (`pipeline.solvers.base`), so its time is Σ_k c(n_k) + f(B): c(n) the seconds
of one reverse step with n active rows, f(B) the per-batch fixed cost (decoding, metrics,
PNG encoding). `flash-restore bench calibrate` measures c and f per device class, solver,
model architecture, dtype and batch size; `batches` reproduces the job's bucketing (the
same `Bucketer`), so the prediction is for the batches the job will actually run. Samples
of a Ray job may be bucketed a little differently (partial buckets flushed after `max_wait_s`).

Why the architecture and not the weights: a step costs what the networks compute, so a
retrained model (same configs, other weights) keeps its calibration, while any change to
what the autoencoder or UNet computes gives another fingerprint and no entry ("missing").
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from pipeline.execution.bucketing import Bucketer
from pipeline.restoration.options import MODELS_DIR
from pipeline.restoration.region_starts import tile_starts
from pipeline.restoration.restore import capped_start

CALIBRATION_NAME = "calibration.json"
VERSION = 2   # entries keyed by architecture; version 1 keyed them by weights and no longer matches

# Model config fields that do not change what a step computes: the training schedule's length (a
# time-embedding table's size, not its lookup) and the latent scaling (one multiply). Private keys
# (`_class_name`, `_diffusers_version`, …) are dropped and the class is hashed by name. The prediction
# type (ε or v: a few elementwise ops per step) and the noise schedule are not in these configs at all.
COST_FREE_FIELDS = frozenset({"num_train_timesteps", "scaling_factor", "shift_factor", "latents_mean", "latents_std"})


def architecture_fingerprint(ldm) -> str:
    """sha256 (16 hex) of the autoencoder's and the UNet's class and config, weights and cost-free fields left out."""
    parts = []
    for role, model in (("autoencoder", ldm.autoencoder.model), ("denoiser", ldm.unet)):
        config = {k: v for k, v in dict(model.config).items() if not k.startswith("_") and k not in COST_FREE_FIELDS}
        parts.append({"role": role, "class": type(model).__name__, "config": config})
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def device_class(device) -> str:
    """cpu, h100, a100, h200, … (the --device names of `estimate`)."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    name = torch.cuda.get_device_name(device).lower()
    return next((g for g in ("h200", "h100", "a100", "l40s", "a10g", "l4", "v100", "t4") if g in name),
                name.replace(" ", "-"))


def interpolate(table: dict[int, float], n: int) -> float:
    """Piecewise-linear in the number of rows, extrapolated from the two nearest sizes."""
    sizes = sorted(table)
    if n in table:
        return table[n]
    if len(sizes) == 1:
        return table[sizes[0]] * n / sizes[0]
    lo = max([s for s in sizes if s < n], default=sizes[0])
    hi = min([s for s in sizes if s > n], default=sizes[-1])
    if lo == hi:
        lo, hi = (sizes[-2], sizes[-1]) if n > sizes[-1] else (sizes[0], sizes[1])
    return table[lo] + (table[hi] - table[lo]) * (n - lo) / (hi - lo)


def batch_seconds(samples: list[list[int]], entry: dict, pixels: list[int] | None = None) -> float:
    """Seconds of one batch; each sample is the start steps of its denoiser tiles (a crop: one).

    Crops: Σ_k c(rows active at k) + f(B). A photo of T > 1 tiles (`pixels`: each sample's area)
    with a canvas calibration (the entry's `canvas`, photos of two sizes timed by `bench
    calibrate`; interpolated in pixels, through 0 below the smaller) costs a whole canvas step
    for every step from its top start down, whichever of its tiles are running: the windowed
    decode of the guidance and its backward cover the photo every step and dominate it (a
    259×384 photo: 1.12 s a step with 26 of 35 tiles running on average, 1.07 s with all 35).
    Without one, its tiles count as crops (the old, optimistic rule)."""
    step = {int(n): v["step_s"] for n, v in entry["per_batch"].items()}
    fixed = {int(n): v["fixed_s"] for n, v in entry["per_batch"].items()}
    canvas = entry.get("canvas") if pixels else None
    photos = [bool(canvas) and len(sample) > 1 for sample in samples]
    tiles = [s for sample, photo in zip(samples, photos) if not photo for s in sample]
    total = 0.0
    for k in range(max(tiles, default=-1), -1, -1):
        total += interpolate(step, sum(s >= k for s in tiles))
    total += max(0.0, interpolate(fixed, len(tiles))) if tiles else 0.0
    if canvas:
        canvas_step = {0: 0.0, **{c["pixels"]: c["step_s"] for c in canvas}}
        canvas_fixed = {0: 0.0, **{c["pixels"]: c["fixed_s"] for c in canvas}}
        for sample, area, photo in zip(samples, pixels, photos):
            if photo:
                total += (max(sample) + 1) * interpolate(canvas_step, area) + max(0.0, interpolate(canvas_fixed, area))
    return total


def batches(records: list[tuple[tuple, int, list[int]]], batch_size: int,
            width: int) -> list[list[tuple[list[int], int]]]:
    """(tile starts, pixels) per sample per batch, as the job's Bucketer forms them (records: (group, start
    step, the sample's tile starts); a group is (family, (height, width)))."""
    bucketer = Bucketer(batch_size, width)
    out = bucketer.add_many(((tiles, group[1][0] * group[1][1]), group, start) for group, start, tiles in records)
    return out + bucketer.flush()


def predict_solve_seconds(records: list[tuple[tuple, int, list[int]]], batch_size: int, width: int,
                          entry: dict) -> float:
    return sum(batch_seconds([t for t, _ in b], entry, [p for _, p in b]) for b in batches(records, batch_size, width))


def record_starts(record, sampler, flash, cap: int | None) -> tuple[int, list[int]]:
    """(loop start, each tile's start) a solver with `sampler` would run for a severity record
    under the job's flash config: the start of the record's σ̂² (a photo's: the mean of its
    tiles' in mode image, the largest otherwise), capped; per tile as `tile_starts` runs them."""
    if not flash.enabled:
        top = sampler.num_steps - 1
    elif record.tile_sigma2 and flash.starts != "image":
        top = int(sampler.start_index(torch.tensor([max(record.tile_sigma2)], dtype=torch.float64))[0])
    else:
        top = int(sampler.start_index(torch.tensor([record.sigma2], dtype=torch.float64))[0])
    top = capped_start(top, cap)
    sigma2 = record.tile_sigma2 if (flash.enabled and record.tile_sigma2) else None
    return top, tile_starts(sampler, sigma2, record.tiles, flash.starts, top)


def calibration_dir(cfg) -> Path:
    """Beside the models: the denoiser's parent folder when it is local, else the shipped models/."""
    parent = Path(cfg.models.denoiser).parent
    return parent if "://" not in cfg.models.denoiser and parent.is_dir() else MODELS_DIR


def read_table(models_dir: str | Path) -> list[dict]:
    path = Path(models_dir) / CALIBRATION_NAME
    return json.loads(path.read_text())["entries"] if path.exists() else []


def entry_key(e: dict) -> tuple:
    return e["device_class"], e["solver"], e.get("architecture"), e.get("dtype", "float32")


def find_entry(entries: list[dict], device: str, solver: str, architecture: str, dtype: str = "float32") -> dict | None:
    """The newest calibration for this device class, solver, model architecture and dtype (entries of
    version 1, keyed by weights, have no architecture and match nothing)."""
    found = [e for e in entries if entry_key(e) == (device, solver, architecture, dtype)]
    return max(found, key=lambda e: e["measured"]) if found else None


def write_entries(models_dir: str | Path, new: list[dict]) -> Path:
    """Add entries, replacing older ones of the same key and every version-1 entry (keyed by weights)."""
    path = Path(models_dir) / CALIBRATION_NAME
    keys = {entry_key(n) for n in new}
    keep = [e for e in read_table(models_dir) if e.get("architecture") and entry_key(e) not in keys]
    path.write_text(json.dumps({"version": VERSION, "entries": keep + new}, indent=1, sort_keys=True))
    return path
