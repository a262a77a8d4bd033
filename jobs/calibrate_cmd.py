"""`flash-restore bench calibrate`: seconds per reverse step by batch size, per solver, here.

For each solver and batch size n it times a batch of n samples solved from start step K−1
for two values of K (median of repeats, after a warm-up): the slope is c(n), the seconds of
one step with n rows, and the intercept f(n), the per-batch fixed cost (`pipeline.execution.calibration`). The entries go to
the calibration table beside the models (`calibration.json`), keyed by device class,
solver, model architecture and dtype (`pipeline.execution.cost_model`); `flash-restore
estimate` prices archives with them.
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import SAMPLE_ARCHIVE, console


def calibrate(
    solvers: Optional[str] = typer.Option(None, "--solvers",
                                          help="Comma list (default: every registered solver that restores)"),
    batch_sizes: str = typer.Option("1,2,4,8", "--batch-sizes", help="Comma list of row counts"),
    steps: int = typer.Option(16, "--steps", help="K of the long run (the short one takes 1 step)"),
    repeats: int = typer.Option(3, "--repeats"),
    family: str = typer.Option("gaussian_blur", "--family", help="Operator family of the timing samples"),
    input: str = typer.Option(str(SAMPLE_ARCHIVE), "--input", help="Shards with samples of that family"),
    config: Optional[str] = typer.Option(None, "--config"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Measure c(n) and f(n) per solver here and store them in the calibration table."""
    from pipeline.execution.calibration import calibrate_solver, family_samples   # lazy: `--help` stays fast
    from pipeline.execution.cost_model import calibration_dir, write_entries
    from pipeline.solvers import restoring_solvers
    from workers.job_config import build_config

    sizes = sorted({int(s) for s in batch_sizes.split(",") if s.strip()})
    names = [s.strip() for s in solvers.split(",") if s.strip()] if solvers is not None else restoring_solvers()
    entries, table = [], Table(title="flash-restore bench calibrate: seconds per step (fixed per batch)")
    for col in ("solver", *[f"n={n}" for n in sizes]):
        table.add_column(col)
    samples = family_samples(input, family)
    for name in names:
        cfg = build_config(config, name, False, max(sizes), None, None, "local", None, set_)
        try:
            entry = calibrate_solver(cfg, samples, sizes, steps, repeats)
        except ValueError as exc:
            raise typer.BadParameter(f"{input}, {family}: {exc}") from None
        per_batch = entry["per_batch"]
        table.add_row(name, *[f"{per_batch[str(n)]['step_s']:.4f} ({per_batch[str(n)]['fixed_s']:.3f})" for n in sizes])
        entries.append({**entry, "command": f"flash-restore bench calibrate --solvers {name} --batch-sizes "
                                            f"{batch_sizes} --steps {steps} --repeats {repeats}"})
    console.print(table)
    path = write_entries(calibration_dir(cfg), entries)
    console.print(f"calibration table: {path}")
