"""What a restore job will cost: solve seconds predicted from start steps and a calibration table.

A solver batch runs from its largest start step down to 0 and computes only the rows that
have joined (`pipeline.solvers.base`), so its time is Σ_k c(n_k) + f(B): c(n) the seconds
of one reverse step with n active rows, f(B) the per-batch fixed cost (decoding, metrics,
PNG encoding). `flash-restore bench calibrate` measures c and f per device class, solver,
model set and batch size; `batches` reproduces the job's bucketing (the same `Bucketer`),
so the prediction is for the batches the job will actually run. Samples of a Ray job may
be bucketed a little differently (partial buckets flushed after `max_wait_s`).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.execution.bucketing import Bucketer

CALIBRATION_NAME = "calibration.json"


def device_class(device) -> str:
    """cpu, h100, a100, h200, … (the --device names of `estimate`)."""
    import torch

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


def batch_seconds(starts: list[int], entry: dict) -> float:
    step = {int(n): v["step_s"] for n, v in entry["per_batch"].items()}
    fixed = {int(n): v["fixed_s"] for n, v in entry["per_batch"].items()}
    total = 0.0
    for k in range(max(starts), -1, -1):
        total += interpolate(step, sum(s >= k for s in starts))
    return total + max(0.0, interpolate(fixed, len(starts)))


def batches(records: list[tuple[tuple, int]], batch_size: int, width: int) -> list[list[int]]:
    """Start steps per batch, as the job's Bucketer forms them (records: (group, start step))."""
    bucketer = Bucketer(batch_size, width)
    out = bucketer.add_many((start, group, start) for group, start in records)
    return out + bucketer.flush()


def predict_solve_seconds(records: list[tuple[tuple, int]], batch_size: int, width: int, entry: dict) -> float:
    return sum(batch_seconds(b, entry) for b in batches(records, batch_size, width))


def calibration_dir(cfg) -> Path:
    """Beside the models: the denoiser's parent folder when it is local, else the shipped models/."""
    from pipeline.restoration.options import MODELS_DIR

    parent = Path(cfg.models.denoiser).parent
    return parent if "://" not in cfg.models.denoiser and parent.is_dir() else MODELS_DIR


def read_table(models_dir: str | Path) -> list[dict]:
    path = Path(models_dir) / CALIBRATION_NAME
    return json.loads(path.read_text())["entries"] if path.exists() else []


def find_entry(entries: list[dict], device: str, solver: str, model_hash: str) -> dict | None:
    """The newest calibration for this device class, solver and model set."""
    found = [e for e in entries if e["device_class"] == device and e["solver"] == solver
             and e["model_hash"] == model_hash]
    return max(found, key=lambda e: e["measured"]) if found else None


def write_entries(models_dir: str | Path, new: list[dict]) -> Path:
    """Add entries, replacing older ones of the same device class, solver and model set."""
    path = Path(models_dir) / CALIBRATION_NAME
    keep = [e for e in read_table(models_dir)
            if not any((e["device_class"], e["solver"], e["model_hash"]) == (n["device_class"], n["solver"],
                                                                            n["model_hash"]) for n in new)]
    path.write_text(json.dumps({"version": 1, "entries": keep + new}, indent=1, sort_keys=True))
    return path
