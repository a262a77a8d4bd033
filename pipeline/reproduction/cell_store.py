"""A finished evaluation cell on disk, and the set-level metrics computed when it finishes.

    OUT/cells/TASK/SOLVER/MODE/cell.json       id, key, hashes, n, seconds, FID/KID, the command
    OUT/cells/TASK/SOLVER/MODE/metrics.parquet  the restore job's rows for the cell's images
    OUT/cells/TASK/SOLVER/MODE/images/KEY.png   the few restorations the sample grids show
    OUT/tasks/TASK/task.json, images/KEY.{degraded,clean}.png   the grid's inputs

Why: the report is rebuilt from these files alone, so it needs no recompute, and a cell
whose key (config, models, images, n) matches is reused instead of run again.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from pipeline.operators import OPERATORS
from pipeline.quality.blocking import blocking_ratio
from pipeline.quality.image_sets import image_set_distances
from pipeline.quality.metrics import Missing, colour_shift, psnr, ssim


def cell_dir(out: Path, cell_id: str) -> Path:
    return out / "cells" / cell_id


def load_cell(out: Path, cell_id: str) -> dict | None:
    """The stored record of a cell (with its rows under "rows"), or None."""
    folder = cell_dir(out, cell_id)
    try:
        record = json.loads((folder / "cell.json").read_text())
        record["rows"] = pq.read_table(folder / "metrics.parquet").to_pylist()
    except (OSError, ValueError):
        return None
    return record


def save_cell(out: Path, record: dict, rows: list[dict], images: dict[str, torch.Tensor]) -> None:
    """Write rows and grid images first and cell.json last: a cell without cell.json is not done."""
    folder = cell_dir(out, record["id"])
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "cell.json").unlink(missing_ok=True)
    pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({"key": pa.array([], pa.string())}),
                   folder / "metrics.parquet")
    for key, img in images.items():
        save_png(img, folder / "images" / f"{key}.png")
    (folder / "cell.json").write_text(json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")


def save_png(image01: torch.Tensor, path: Path) -> None:
    arr = (image01.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr, "RGB").save(path)


def load_png(path: Path) -> torch.Tensor | None:
    if not path.exists():
        return None
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255.0


def save_task(out: Path, task_id: str, info: dict, degraded: dict, clean: dict) -> None:
    folder = out / "tasks" / task_id
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for key in degraded:
        save_png(degraded[key], folder / "images" / f"{key}.degraded.png")
        save_png(clean[key], folder / "images" / f"{key}.clean.png")
    (folder / "task.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def load_task(out: Path, task_id: str) -> dict | None:
    try:
        return json.loads((out / "tasks" / task_id / "task.json").read_text())
    except (OSError, ValueError):
        return None


def reference_rows(keys: list[str], degraded01: torch.Tensor, clean01: torch.Tensor, severities: dict,
                   family: str, noise: float, lpips) -> list[dict]:
    """Rows for the degraded input itself, in the restore job's metric columns (no solver ran)."""
    p, s, c = psnr(degraded01, clean01), ssim(degraded01, clean01), colour_shift(degraded01, clean01)
    lp = None if isinstance(lpips, Missing) else lpips(degraded01, clean01)
    b = blocking_ratio(degraded01, clean01) if OPERATORS[family].blocky else None
    return [{"key": k, "status": "ok", "operator": family, "severity": severities[k], "noise_sigma": noise,
             "nfe": 0, "psnr": float(p[i]), "ssim": float(s[i]), "lpips": None if lp is None else float(lp[i]),
             "psnr_input": float(p[i]), "colour_shift": float(c[i]),
             **({} if b is None else {"blocking": float(b[i]), "blocking_input": float(b[i])}),
             "metrics_missing": lpips.reason if isinstance(lpips, Missing) else None} for i, k in enumerate(keys)]


def set_metrics(restored01: torch.Tensor, clean01: torch.Tensor, subsets: dict[str, list[int]], device) -> dict:
    """FID and KID of the restorations against their own clean references, from one Inception
    pass (as the paper computes FID), for the whole cell and for named subsets of it."""
    out = {}
    for name, idx in {"all": list(range(len(restored01))), **subsets}.items():
        if len(idx) < 2:
            out[name] = {"missing": f"FID/KID need at least 2 images, this set has {len(idx)}"}
            continue
        out[name] = image_set_distances(restored01[idx], clean01[idx], device)
    return out
