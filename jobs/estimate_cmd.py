"""`flash-restore estimate`: the cost of a restore job before running it.

Runs only the read and severity stages (`pipeline.execution.stages`, one encoder pass per sample, far
cheaper than a solve) on all samples or a seeded fraction, turns each σ̂² into the start
step every solver's sampler would take, forms the job's batches (`pipeline.execution.cost_model`) and
prices them with the calibration table `flash-restore bench calibrate` measured for the
device. Prints a table and writes a JSON file; `predicted_solve_seconds` is comparable with
`stages.solve.busy_seconds` in the job's stats.json.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import build_config, console, preflight

ALL_SOLVERS = ("ldps", "gml_dps", "psld", "resample")


def sampled(key: str, fraction: float, seed: int) -> bool:
    """A seeded, order-free choice: the same keys at any parallelism."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "big")
    return h / 2 ** 64 < fraction


def severity_records(cfg, shards, fraction: float, seed: int):
    """(records with σ̂² and start steps, invalid kinds, samples seen, seconds) of the severity stage."""
    from pipeline.restoration.restore import Restorer
    from pipeline.execution.stages import ShardCursor, read_stage, severity_stage
    from pipeline.execution.validation import SampleValidator, read_limits

    restorer = Restorer(cfg)
    cursor = ShardCursor({**read_limits(cfg), "select": lambda key: sampled(key, fraction, seed)})
    validator = SampleValidator(cfg)
    records, invalid, seen, t0 = [], Counter(), 0, time.perf_counter()
    chunk = 4 * cfg.execution.batch_size
    for shard in shards:
        pos, done = 0, False
        while not done:
            summary, payload = read_stage(cursor, validator, (shard, pos, chunk))
            pos, done, seen = pos + summary["n"], summary["done"], seen + summary["n"]
            invalid.update(r["error_kind"] for r in summary["records"] if isinstance(r, dict))
            good = [r for r in summary["records"] if not isinstance(r, dict)]
            if good:
                sev, _ = severity_stage(restorer, good, payload)
                records += sev["records"]
                invalid.update(r["error_kind"] for r in sev["rows"])
    return restorer, records, invalid, seen, time.perf_counter() - t0


def estimate(
    input: str = typer.Option(..., "--input", help="WebDataset shards: folder, glob, brace pattern; local or s3://"),
    sample_fraction: float = typer.Option(1.0, "--sample-fraction", help="Seeded fraction of samples to look at"),
    device: Optional[str] = typer.Option(None, "--device", help="Price for this device class (cpu, h100, a100, …)"),
    price_per_hour: Optional[float] = typer.Option(None, "--price-per-hour", help="Device price, for cost"),
    output: str = typer.Option("estimate.json", "--output", help="JSON report"),
    config: Optional[str] = typer.Option(None, "--config"),
    solver: Optional[str] = typer.Option(None, "--solver"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Config override section.key=value"),
):
    """Predict start steps, NFE, solve seconds and cost per solver without restoring anything."""
    import fsspec

    try:
        if not 0 < sample_fraction <= 1:
            raise ValueError(f"--sample-fraction must be in (0, 1], got {sample_fraction}")
        if price_per_hour is not None and price_per_hour < 0:
            raise ValueError(f"--price-per-hour must be ≥ 0, got {price_per_hour}")
        cfg = build_config(config, solver, False, None, None, None, "local", None, set_)
        shards = preflight(cfg, input)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    report = build_report(cfg, input, shards, sample_fraction, device, price_per_hour)
    with fsspec.open(output, "w") as fh:
        json.dump(report, fh, indent=1, default=str)
    show(report, cfg.solver.name, output)


def build_report(cfg, input: str, shards: list[str], sample_fraction: float = 1.0, device: str | None = None,
                 price_per_hour: float | None = None) -> dict:
    """The estimate as a dict (what `estimate` prints and writes, and `bench estimate` checks)."""
    import torch

    from pipeline.execution.cost_model import (architecture_fingerprint, calibration_dir, device_class, find_entry,
                                               predict_solve_seconds, read_table)
    from pipeline.restoration.restore import capped_start
    from pipeline.solvers import default_sampler

    restorer, records, invalid, seen, seconds = severity_records(cfg, shards, sample_fraction, cfg.seed)
    target = device or device_class(restorer.device)
    table_entries = read_table(calibration_dir(cfg))
    ex, scale, arch = cfg.execution, 1.0 / sample_fraction, architecture_fingerprint(restorer.ldm)
    sigma2 = torch.tensor([r.sigma2 for r in records], dtype=torch.float64)
    report = {"input": input, "sample_fraction": sample_fraction, "samples_seen": seen,
              "samples_predicted_total": round(seen * scale), "valid": len(records), "invalid": dict(invalid),
              "severity_seconds": round(seconds, 3), "device": target, "price_per_hour": price_per_hour,
              "config_hash": cfg.output_hash(), "config": cfg.to_dict(), "solvers": {}}
    for name in dict.fromkeys([cfg.solver.name, *ALL_SOLVERS]):
        sampler = restorer.sampler if name == cfg.solver.name else default_sampler(name, restorer.ldm.schedule)
        starts = sampler.start_index(sigma2).tolist() if len(records) and cfg.flash.enabled else \
            [sampler.num_steps - 1] * len(records)
        starts = [capped_start(s, cfg.flash.max_nfe) for s in starts]
        nfe = [s + 1 for s in starts]
        entry = find_entry(table_entries, target, name, arch, cfg.models.dtype)
        out = {"start_step_histogram": dict(sorted(Counter((s // 10) * 10 for s in starts).items())),
               "mean_nfe": round(sum(nfe) / len(nfe), 2) if nfe else None, "baseline_nfe": sampler.num_steps,
               "predicted_nfe_total": round(sum(nfe) * scale)}
        if entry is None:
            out["predicted_solve_seconds"] = (f"missing: no calibration for {target} / {name} / architecture "
                                              f"{arch} / {cfg.models.dtype}; run `flash-restore bench calibrate` there")
        else:
            secs = predict_solve_seconds([(r.group, s) for r, s in zip(records, starts)], ex.batch_size,
                                         ex.bucket_width, entry) * scale
            out["predicted_solve_seconds"] = round(secs, 2)
            out["calibration"] = {"measured": entry["measured"], "machine": entry["machine"], "architecture": arch}
            if price_per_hour is not None:
                out["predicted_cost"] = round(secs / 3600 * price_per_hour, 4)
        report["solvers"][name] = out
    return report


def show(report: dict, main: str, output: str) -> None:
    table = Table(title=f"flash-restore estimate on {report['device']}: {report['valid']} valid of "
                        f"{report['samples_seen']} samples looked at (fraction {report['sample_fraction']})")
    for col in ("solver", "mean NFE", "baseline NFE", "predicted solve s", "cost"):
        table.add_column(col)
    for name, s in report["solvers"].items():
        secs = s["predicted_solve_seconds"]
        table.add_row(name + (" (config)" if name == main else ""), str(s["mean_nfe"]), str(s["baseline_nfe"]),
                      f"{secs:.1f}" if isinstance(secs, float) else "missing (no calibration)",
                      str(s.get("predicted_cost", "–")))
    console.print(table)
    hist = report["solvers"][main]["start_step_histogram"]
    console.print("start steps (" + main + "): " + ", ".join(f"{b}-{b + 9}: {n}" for b, n in hist.items()))
    if report["invalid"]:
        console.print(f"invalid samples by kind: {report['invalid']}")
    console.print(f"written: {output}")
