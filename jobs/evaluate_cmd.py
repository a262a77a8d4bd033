"""`flash-restore evaluate`: the paper's claims checked on our models and photos.

Runs every cell of the suite (`pipeline.reproduction.suite`) as a restore job, keeps each
cell's results under --out, and writes the report (`pipeline.reproduction.report`)
next to it as OUT.md. Rerunning continues: cells whose key matches are reused.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

console = Console(stderr=True)


def evaluate(
    ctx: typer.Context,
    suite: str = typer.Option("paper", "--suite", help="The experiment suite (paper)"),
    photos: str = typer.Option("dev", "--photos", help="dev, a corpus export folder, or a photo-list file"),
    n: Optional[int] = typer.Option(None, "--n", help="Images per Flash cell (default 16; --quick 2)"),
    n_baseline: Optional[int] = typer.Option(None, "--n-baseline", help="Images per full-schedule baseline cell"),
    out: str = typer.Option("docs/reproduction", "--out", help="Results folder; the report is OUT.md"),
    work: str = typer.Option("out/evaluate", "--work", help="Restore jobs' working outputs (resumable)"),
    quick: bool = typer.Option(False, "--quick", help="Smoke run: 2 images, a 10-step schedule"),
    cell: Optional[List[str]] = typer.Option(None, "--cell", help="Rerun only TASK/SOLVER/MODE (repeatable)"),
    reuse: bool = typer.Option(False, "--reuse", help="With --cell: keep a stored cell whose key still matches "
                               "(run only those that are missing or stale)"),
    report_only: bool = typer.Option(False, "--report-only", help="Rebuild the report from stored cells"),
    models: str = typer.Option("models", "--models", help="Folder with autoencoder/, ldm/, severity-<family>/"),
    settings: str = typer.Option("tuned", "--settings", help="Solver settings table of every cell: tuned (the "
                                 "shipped one) or the path of a table tuned for the prior in --models"),
    lpips_weights: Optional[str] = typer.Option(None, "--lpips-weights", help="LPIPS safetensors (else missing)"),
    engine: str = typer.Option("local", "--engine", help="local | ray (same results, hashes ignore it)"),
    batch_size: int = typer.Option(16, "--batch-size"),
    threads: Optional[int] = typer.Option(None, "--threads", help="Torch threads of the solver and the metrics "
                                          "(default: the cores; 1 when evaluations share the cores); cell keys "
                                          "ignore it"),
    device: str = typer.Option("cpu", "--device"),
    seed: int = typer.Option(0, "--seed"),
    jobs: int = typer.Option(1, "--jobs", help="Worker processes of one thread each (e.g. the cores); cells of "
                             "one task and solver share a worker"),
    worker: Optional[str] = typer.Option(None, "--worker", hidden=True, help="Internal: run as a worker of this "
                                         "command (recorded in the cells); write no report"),
) -> None:
    """Run the paper-reproduction suite through the pipeline and write OUT.md."""
    from dataclasses import replace

    from jobs.train import command_line
    from pipeline.reproduction.report_writer import write_report
    from pipeline.reproduction.suite import TASKS, Budget, parse_cell, suite_cells
    from workers.evaluation_cells import Evaluation
    from workers.evaluation_crops import evaluation_crops

    try:
        if suite != "paper":
            raise ValueError(f"--suite {suite!r}: the one suite is 'paper'")
        if threads is not None and not 1 <= threads <= 1024:
            raise ValueError(f"--threads must be in 1..1024, got {threads}")
        if not 1 <= jobs <= 64:
            raise ValueError(f"--jobs must be in 1..64, got {jobs}")
        if engine not in ("local", "ray"):
            raise ValueError(f"--engine must be local or ray, got {engine!r}")
        budget = Budget.quick() if quick else Budget()
        for name, value in (("n", n), ("n_baseline", n_baseline)):
            if value is not None:
                if value < 1 or value > 10_000:
                    raise ValueError(f"--{name.replace('_', '-')} must be in 1..10000, got {value}")
                budget = replace(budget, **{name: value})
        budget = replace(budget, n_baseline=min(budget.n_baseline, budget.n), n_fixed=min(budget.n_fixed, budget.n))
        wanted = [parse_cell(c) for c in cell or []]
        root = Path(models)
        for name in ("autoencoder", "ldm", *dict.fromkeys(f"severity-{t.family}" for t in TASKS.values())):
            if not (root / name / "config.json").exists():
                raise ValueError(f"model folder {root / name} has no config.json")
        from pipeline.execution.config import load_config

        load_config(None, [f"solver.settings={settings}"])   # a bad table fails here, before any compute
        out_dir = Path(out)
        if report_only:
            given_by = ctx.get_parameter_source("settings")   # typer's own click: compare by name
            given = getattr(given_by, "name", None) == "COMMANDLINE"
            path = write_report(out_dir, suite_cells(budget), budget, quick, settings=settings if given else None)
            console.print(f"evaluate: report rebuilt from stored cells → {path}")
            return
        import json

        size = int(json.loads((root / "autoencoder" / "config.json").read_text()).get("sample_size", 64))
        crops, keys, source = evaluation_crops(photos, budget.n, size)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    if threads:   # the metrics (Inception, SSIM) too: oversubscribed threads cost more than they give
        import torch

        torch.set_num_threads(threads)
    ev = Evaluation(models=root, crops01=crops, crop_keys=keys, budget=budget, out=out_dir, work=Path(work),
                    seed=seed, engine=engine, batch_size=batch_size, device=device, lpips_weights=lpips_weights,
                    settings_table=settings, threads=threads, command=worker or command_line(ctx),
                    log=lambda m: console.print(m))
    t0 = time.time()
    todo, failed = wanted or suite_cells(budget), {}
    force = bool(wanted) and not reuse
    if jobs > 1:
        from jobs.evaluate_workers import run_workers, worker_options
        from workers.evaluation_workers import partition

        codes = run_workers(partition(todo, jobs), worker_options(ctx.params), Path(work), force, command_line(ctx))
        console.print(f"evaluate: {len(codes)} workers done (exit codes {codes}); collecting their cells")
        force = False   # what the workers stored is current: the loop below reuses it, or reruns what failed
    for c in todo:
        try:
            ev.run(c, force=force)
        except Exception as exc:  # noqa: BLE001 - one failed cell is reported; the others still run
            failed[c.id] = f"{type(exc).__name__}: {exc}"
            console.print(f"[red]cell {c.id} failed:[/red] {failed[c.id]}")
    if worker:
        console.print(f"evaluate worker: {len(todo)} cells in {time.time() - t0:.0f} s ({len(failed)} failed)")
        raise typer.Exit(1 if failed else 0)
    import os

    import torch

    meta = {"photos": source, "command": command_line(ctx), "settings": settings,
            "seconds_this_run": round(time.time() - t0, 1), "crops": len(keys), "failed": failed,
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, device {device}, engine {engine}"}
    path = write_report(out_dir, suite_cells(budget), budget, quick, meta)
    console.print(f"evaluate: {len(todo)} cells in {time.time() - t0:.0f} s ({len(failed)} failed) → {path}")
    if failed:
        raise typer.Exit(1)
