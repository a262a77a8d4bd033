"""`flash-restore bench calibrate`: seconds per reverse step by batch size, per solver, here.

For each solver and batch size n it times a batch of n samples solved from start step K−1
for two values of K (median of repeats, after a warm-up): the slope is c(n), the seconds of
one step with n rows, and the intercept f(n), the per-batch fixed cost. The entries go to
the calibration table beside the models (`calibration.json`), keyed by device class,
solver, model architecture and dtype (`pipeline.execution.cost_model`); `flash-restore
estimate` prices archives with them.
"""
from __future__ import annotations

import platform
import statistics
import time
from dataclasses import replace
from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import SAMPLE_ARCHIVE, build_config, console

SOLVERS = "ldps,gml_dps,psld,resample"


def time_batch(restorer, prepared, start: int, repeats: int) -> float:
    estimates = [replace(e, start_step=start) for e in restorer.estimate(prepared)]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        restorer.solve(estimates)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def calibrate(
    solvers: str = typer.Option(SOLVERS, "--solvers", help="Comma list"),
    batch_sizes: str = typer.Option("1,2,4,8", "--batch-sizes", help="Comma list of row counts"),
    steps: int = typer.Option(16, "--steps", help="K of the long run (the short one takes 1 step)"),
    repeats: int = typer.Option(3, "--repeats"),
    family: str = typer.Option("gaussian_blur", "--family", help="Operator family of the timing samples"),
    input: str = typer.Option(str(SAMPLE_ARCHIVE), "--input", help="Shards with samples of that family"),
    config: Optional[str] = typer.Option(None, "--config"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Measure c(n) and f(n) per solver here and store them in the calibration table."""
    import torch

    from pipeline.execution.cost_model import architecture_fingerprint, calibration_dir, device_class, write_entries
    from pipeline.restoration.restore import Restorer
    from pipeline.io.shards import iter_samples, list_shards

    sizes = sorted({int(s) for s in batch_sizes.split(",") if s.strip()})
    names = [s.strip() for s in solvers.split(",") if s.strip()]
    entries, table = [], Table(title="flash-restore bench calibrate: seconds per step (fixed per batch)")
    for col in ("solver", *[f"n={n}" for n in sizes]):
        table.add_column(col)
    samples = [s for sh in list_shards(input) for s in iter_samples(sh)
               if not isinstance(s, Exception) and (s.params or {}).get("operator") == family]
    for name in names:
        cfg = build_config(config, name, False, max(sizes), None, None, "local", None, set_)
        restorer = Restorer(cfg)
        prepared = [restorer.prepare(s) for s in samples]
        if len(prepared) < max(sizes):
            raise typer.BadParameter(f"{input} has {len(prepared)} {family} samples, fewer than {max(sizes)}")
        k_long = min(steps, restorer.solver.sampler.num_steps) - 1
        time_batch(restorer, prepared[:1], k_long, 1)  # warm-up
        per_batch = {}
        for n in sizes:
            short = time_batch(restorer, prepared[:n], 0, repeats)
            long = time_batch(restorer, prepared[:n], k_long, repeats)
            step = (long - short) / k_long
            per_batch[str(n)] = {"step_s": round(step, 6), "fixed_s": round(short - step, 6)}
        table.add_row(name, *[f"{per_batch[str(n)]['step_s']:.4f} ({per_batch[str(n)]['fixed_s']:.3f})" for n in sizes])
        entries.append({"device_class": device_class(restorer.device), "solver": name,
                        "architecture": architecture_fingerprint(restorer.ldm), "dtype": cfg.models.dtype,
                        "measured_on": restorer.model_hash, "per_batch": per_batch, "measured": time.time(),
                        "machine": f"{platform.processor() or platform.machine()}, "
                                   f"{torch.get_num_threads()} threads",
                        "command": f"flash-restore bench calibrate --solvers {name} --batch-sizes {batch_sizes} "
                                   f"--steps {steps} --repeats {repeats}"})
    console.print(table)
    path = write_entries(calibration_dir(cfg), entries)
    console.print(f"calibration table: {path}")
