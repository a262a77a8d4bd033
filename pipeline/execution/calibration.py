"""Measuring the calibration table: seconds per reverse step by batch size, per solver, here.

For each batch size n it times a batch of n samples solved from start step K−1 for two
values of K (median of repeats, after a warm-up): the slope is c(n), the seconds of one
step with n rows, and the intercept f(n), the per-batch fixed cost; then one photo off the
prior's size the same way at two sizes (`calibrate_canvas`). The entries go to the
calibration table beside the models (`pipeline.execution.cost_model`), keyed by device
class, solver and model set; the estimate prices archives with them.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import replace

import torch

from pipeline.execution.cost_model import architecture_fingerprint, device_class
from pipeline.io.samples import Sample
from pipeline.io.shards import iter_samples, list_shards
from pipeline.execution.restorer import build_restorer, prepare_samples
from pipeline.sampling.tiles import reflect_pad

CANVAS_CROPS = (3, 5)   # timing photos: a timing sample mirrored 3 × 3 and 5 × 5 (192 and 320 px; 16 and 36 tiles)


def family_samples(input_url: str, family: str) -> list:
    """The valid samples of one operator family (the timing samples)."""
    return [s for sh in list_shards(input_url) for s in iter_samples(sh)
            if not isinstance(s, Exception) and (s.params or {}).get("operator") == family]


def time_batch(restorer, prepared, start: int, repeats: int) -> float:
    estimates = [replace(e, start_step=start) for e in restorer.estimate(prepared)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        restorer.solve(estimates)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate_canvas(cfg, sample, steps: int, repeats: int) -> list[dict]:
    """What a photo off the prior's size costs by its area: photos of CANVAS_CROPS² mirrored crops, each
    timed like a batch (every tile from the same start): seconds per canvas step and per photo. The
    estimate interpolates them in pixels, not tiles (a small photo's edge tiles overlap more), and
    prices every step of a photo at a whole canvas step (`cost_model.batch_seconds` says why)."""
    cfg = replace(cfg, flash=replace(cfg.flash, starts="image"))   # every tile runs from the start it is given
    restorer = build_restorer(cfg)
    k_long = min(steps, restorer.solver.sampler.num_steps) - 1
    out = []
    for crops in CANVAS_CROPS:
        side = crops * restorer.ldm.latent_shape[1] * restorer.ldm.autoencoder.downsample
        photo = Sample(f"{sample.key}-canvas{crops}", sample.shard, reflect_pad(sample.image01, side, side), None,
                       sample.params, sample.image_sha256)
        prepared = prepare_samples(cfg, [photo])
        tiles = restorer.estimate(prepared)[0].tiles
        short = time_batch(restorer, prepared, 0, repeats)
        step = (time_batch(restorer, prepared, k_long, repeats) - short) / k_long
        out.append({"pixels": side * side, "tiles": tiles, "step_s": round(step, 6), "fixed_s": round(short - step, 6)})
    return out


def calibrate_solver(cfg, samples: list, sizes: list[int], steps: int, repeats: int) -> dict:
    """The calibration entry of the config's solver: c(n) and f(n) for every n in `sizes`."""
    restorer = build_restorer(cfg)
    prepared = prepare_samples(cfg, samples)
    if len(prepared) < max(sizes):
        raise ValueError(f"{len(prepared)} timing samples, fewer than {max(sizes)}")
    k_long = min(steps, restorer.solver.sampler.num_steps) - 1
    time_batch(restorer, prepared[:1], k_long, 1)  # warm-up
    per_batch = {}
    for n in sizes:
        short = time_batch(restorer, prepared[:n], 0, repeats)
        long = time_batch(restorer, prepared[:n], k_long, repeats)
        step = (long - short) / k_long
        per_batch[str(n)] = {"step_s": round(step, 6), "fixed_s": round(short - step, 6)}
    canvas = calibrate_canvas(cfg, samples[0], steps, repeats)
    return {"device_class": device_class(restorer.device), "solver": cfg.solver.name, "canvas": canvas,
            "architecture": architecture_fingerprint(restorer.ldm), "dtype": cfg.models.dtype,
            "measured_on": restorer.model_hash, "per_batch": per_batch, "measured": time.time(),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"}
