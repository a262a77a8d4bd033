"""Degrade clean crops with a known operator and restore them in-process: the measuring loop
shared by `report-models`, `tune` and the tests.

Why one place: the numbers in docs/models.md and the tuned settings must come from the same
degradation (noise σ = 0.05, per-key seeds, 8-bit measurement as a PNG would hold) and the
same `Restorer` path the jobs use, or tuning would optimise something the product never runs.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch

from pipeline.execution.config import load_config
from pipeline.execution.restorer import build_restorer, prepare_samples
from pipeline.io.jpeg_tables import jpeg_quality
from pipeline.io.samples import Sample, decode_image
from pipeline.operators import OPERATORS, build_operator, measure, to_model_domain
from pipeline.sampling.seeding import DEGRADATION, generators

NOISE = 0.05   # [0,1] units, as the severity encoders are trained


def degrade_crops(family: str, x01: torch.Tensor, severities: Sequence[float], params: dict, seed: int,
                  prefix: str, noise: float = NOISE, op_seeds: Sequence[int] | None = None):
    """(y in [−1,1], operator, keys): each crop at its severity, seeded per key.

    `op_seeds` are the operators' own seeds (kernel shape, mask field), 1000 + row by default;
    rows that share one give one damage growing with severity (a severity ladder)."""
    keys = [f"{prefix}-{i:05d}" for i in range(len(x01))]
    op_seeds = [1000 + i for i in range(len(x01))] if op_seeds is None else [int(s) for s in op_seeds]
    dicts = [OPERATORS[family].params_for(float(t), noise, op_seeds[i], **params) for i, t in enumerate(severities)]
    op = build_operator(dicts, keys)
    y01 = measure(op, x01, generators(seed, keys, DEGRADATION))
    return to_model_domain(y01), op, keys


def degraded_samples(family: str, x01: torch.Tensor, severities: Sequence[float], params: dict, seed: int,
                     prefix: str, noise: float = NOISE) -> list:
    """`Sample`s as a shard would hold them: the family's archive file decoded (an 8-bit PNG of the
    measurement; libjpeg's file for jpeg; the small copy for downsample), and the clean reference."""
    keys = [f"{prefix}-{i:05d}" for i in range(len(x01))]
    cls = OPERATORS[family]
    dicts = [cls.for_image(cls.params_for(float(t), noise, 1000 + i, **params), *x01.shape[-2:])
             for i, t in enumerate(severities)]
    op = build_operator(dicts, keys)
    with torch.no_grad():
        files = op.archive_files(x01, generators(seed, keys, DEGRADATION))
    return [Sample(k, prefix, decode_image(data, k), x01[i], p, "", jpeg=jpeg_quality(data) if ext == "jpg" else None)
            for i, (k, p, (ext, data)) in enumerate(zip(keys, op.to_dicts(), files))]


def restore_samples(cfg, samples: list, batch: int) -> list[dict]:
    """Metric rows (sorted by key) for `samples` restored by a `Restorer` built from `cfg`."""
    r = build_restorer(cfg)
    est = sorted(r.estimate(prepare_samples(cfg, samples)), key=lambda e: e.start_step)
    rows = []
    for i in range(0, len(est), batch):
        rows += [row for row, _, _ in r.solve(est[i:i + batch])]
    return sorted(rows, key=lambda row: row["key"])


def restore_family(sets: list[str], family: str, samples: list, batch: int) -> tuple[list[dict], float]:
    """(rows, seconds): `samples` of one family restored by a job config built from `sets`, loading that
    family's severity encoder only (the others' settings need not exist for it)."""
    cfg = load_config(None, sets)
    cfg.models.severity = {family: cfg.models.severity[family]}
    t0 = time.perf_counter()
    rows = restore_samples(cfg, samples, batch)
    return rows, time.perf_counter() - t0


def mean_of(rows: list[dict], key: str) -> float | None:
    vals = [row[key] for row in rows if row.get(key) is not None and np.isfinite(row[key])]
    return float(np.mean(vals)) if vals else None
