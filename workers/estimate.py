"""The cost of a restore job before running it: severity records priced per solver.

Runs only the read and severity stages of a restore job, through the job's own scheduler
(one encoder pass per sample, far cheaper than a solve), on all samples or a seeded
fraction; turns each σ̂² into the start step every solver's sampler would take, forms the
job's batches (`pipeline.execution.cost_model`) and prices them with the calibration table
`flash-restore bench calibrate` measured for the device. `predicted_solve_seconds` is comparable with `stages.solve.busy_seconds` in the
job's stats.json.
"""
from __future__ import annotations

import hashlib
import time
from collections import Counter

from pipeline.execution.cost_model import (architecture_fingerprint, calibration_dir, device_class, find_entry,
                                           predict_solve_seconds, read_table, record_starts)
from pipeline.execution.scheduler import Scheduler
from pipeline.execution.stats import JobStats
from pipeline.solvers import default_sampler

from .local_backend import LocalBackend


def sampled(key: str, fraction: float, seed: int) -> bool:
    """A seeded, order-free choice: the same keys at any parallelism."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def severity_records(cfg, shards, fraction: float, seed: int):
    """(restorer, records with σ̂² and start steps in read order, invalid kinds, samples seen, seconds):
    the restore job's own read and severity stages and scheduler (`stop_after="severity"`),
    in process, so the restorer that prices the records is the one that estimated them."""
    backend = LocalBackend(cfg, select=lambda key: sampled(key, fraction, seed))
    backend.start()
    t0 = time.perf_counter()
    try:
        out = Scheduler(cfg, shards, set(), backend, JobStats(), stop_after="severity").run()
    finally:
        backend.close()
    invalid = Counter(r["error_kind"] for r in out["rows"])
    seen = len(out["records"]) + len(out["rows"])   # every sample read is a record or an error row
    return backend.restorer, out["records"], invalid, seen, time.perf_counter() - t0


def build_report(cfg, input: str, shards: list[str], sample_fraction: float = 1.0, device: str | None = None,
                 price_per_hour: float | None = None, solvers: tuple[str, ...] = ()) -> dict:
    """The estimate as a dict (what `estimate` prints and writes, and `bench estimate` checks):
    the config's solver and `solvers` priced on the same severity records."""
    restorer, records, invalid, seen, seconds = severity_records(cfg, shards, sample_fraction, cfg.seed)
    target = device or device_class(restorer.device)
    table_entries = read_table(calibration_dir(cfg))
    ex, scale, arch = cfg.execution, 1.0 / sample_fraction, architecture_fingerprint(restorer.ldm)
    report = {"input": input, "sample_fraction": sample_fraction, "samples_seen": seen,
              "samples_predicted_total": round(seen * scale), "valid": len(records), "invalid": dict(invalid),
              "severity_seconds": round(seconds, 3), "device": target, "price_per_hour": price_per_hour,
              "config_hash": cfg.output_hash(), "config": cfg.to_dict(), "solvers": {}}
    for name in dict.fromkeys([cfg.solver.name, *solvers]):
        sampler = restorer.sampler if name == cfg.solver.name else default_sampler(name, restorer.ldm.schedule)
        by_family = {f: restorer.sampler_for(name, f) for f in {r.family for r in records}}
        priced = [record_starts(r, by_family[r.family], cfg.flash, cfg.flash.max_nfe) for r in records]
        starts = [top for top, _ in priced]
        nfe = [s + 1 for s in starts]
        tile_steps = sum(s + 1 for _, tiles in priced for s in tiles)
        entry = find_entry(table_entries, target, name, arch, cfg.models.dtype)
        out = {"start_step_histogram": dict(sorted(Counter((s // 10) * 10 for s in starts).items())),
               "mean_nfe": round(sum(nfe) / len(nfe), 2) if nfe else None, "baseline_nfe": sampler.num_steps,
               "predicted_nfe_total": round(sum(nfe) * scale), "predicted_tile_steps_total": round(tile_steps * scale)}
        if entry is None:
            out["predicted_solve_seconds"] = (f"missing: no calibration for {target} / {name} / architecture "
                                              f"{arch} / {cfg.models.dtype}; run `flash-restore bench calibrate` there")
        else:
            secs = predict_solve_seconds([(r.group, top, tiles) for r, (top, tiles) in zip(records, priced)],
                                         ex.batch_size, ex.bucket_width, entry) * scale
            out["predicted_solve_seconds"] = round(secs, 2)
            out["calibration"] = {"measured": entry["measured"], "machine": entry["machine"], "architecture": arch}
            if price_per_hour is not None:
                out["predicted_cost"] = round(secs / 3600 * price_per_hour, 4)
        report["solvers"][name] = out
    return report
