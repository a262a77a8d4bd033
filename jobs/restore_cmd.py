"""`flash-restore restore` and `flash-restore demo`: config, fail-fast checks, engine, summary."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
SAMPLE_ARCHIVE = REPO / "data" / "sample"
DEMO_INPUT = f"{SAMPLE_ARCHIVE}/**/*.tar"   # the 64-px crops and, in photos/, whole photos at their own size
console = Console(stderr=True)


def print_summary(summary: dict, output: str) -> None:
    table = Table(title="flash-restore: job summary")
    table.add_column("what")
    table.add_column("value", justify="right")
    for label, key in (("samples processed", "samples"), ("restored", "ok"), ("errors", "errors"),
                       ("skipped (already done)", "skipped_already_done"), ("mean NFE", "mean_nfe"),
                       ("images/s", "images_per_s"), ("wall seconds", "wall_seconds")):
        table.add_row(label, str(summary.get(key)))
    for kind, n in sorted((summary.get("errors_by_kind") or {}).items()):
        table.add_row(f"  error: {kind}", str(n))
    for stage, info in (summary.get("stages") or {}).items():
        table.add_row(f"  stage {stage} busy", f"{info.get('busy_seconds')} s ({info.get('busy_fraction')})")
    console.print(table)
    budget = summary.get("budget")
    if budget and budget["reached"]:
        console.print(f"[yellow]budget of {budget['hours']} solve hours reached[/yellow]: samples not yet restored "
                      "are not committed; rerun the same command to continue")
    console.print(f"outputs: {output}/images/part-*.tar, {output}/metrics/part-*.parquet, "
                  f"{output}/_manifest.json, {output}/stats.json")


def print_quality(output: str) -> None:
    from pipeline.inspection.output_report import quality_by_family

    stats = quality_by_family(output)
    if not stats:
        return
    table = Table(title="quality against the references (mean per family)")
    for col in ("operator", "samples", "PSNR restored", "PSNR input", "colour shift restored", "colour shift input",
                "mean NFE"):
        table.add_column(col, justify="right")
    for s in stats:
        table.add_row(s["operator"], str(s["n"]), f"{s['psnr']:.2f}", f"{s['psnr_input']:.2f}",
                      f"{s['colour_shift']:.4f}", f"{s['colour_shift_input']:.4f}", f"{s['nfe']:.1f}")
    console.print(table)


def execute(cfg, input_url: str, output: str, overwrite: bool) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from workers.job_config import preflight

    shards = preflight(cfg, input_url)
    with Progress(TextColumn("[bold]restoring[/bold] {task.completed} samples"), BarColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
                  transient=True) as progress:
        task = progress.add_task("restore", total=None, detail="")

        def on_progress(stats):
            d = stats.to_dict()
            progress.update(task, completed=d["samples"],
                            detail=f"ok {d['ok']} · errors {d['errors']} · {d['images_per_s'] or 0:.2f} img/s")

        from workers.execute import execute as run_job

        return run_job(cfg, input_url, output, overwrite=overwrite, on_progress=on_progress, shards=shards)


def finish(cfg, summary: dict, output: str) -> None:
    print_summary(summary, output)
    if summary["samples"] and summary["error_rate"] > cfg.execution.max_error_rate:
        console.print(f"[red]error rate {summary['error_rate']:.3f} exceeds --max-error-rate "
                      f"{cfg.execution.max_error_rate}[/red] (what succeeded is committed)")
        raise typer.Exit(code=2)


def blind_operator(family: str | None, scale: float | None) -> str:
    """The input.operator override of `--operator FAMILY [--scale S]`."""
    if scale is not None and family not in (None, "downsample"):
        raise typer.BadParameter(f"--scale is the downsample factor; --operator {family} takes none")
    return f"input.operator={{operator: {family or 'downsample'}" + (f", scale: {scale}}}" if scale else "}")


def restore(
    input: str = typer.Option(..., "--input", help="WebDataset shards: folder, glob, brace pattern; local or s3://"),
    output: str = typer.Option(..., "--output", help="Output folder URL (local or s3://)"),
    config: Optional[str] = typer.Option(None, "--config", help="YAML config file"),
    solver: Optional[str] = typer.Option(None, "--solver", help="ldps | gml_dps | psld | resample | unconditional"),
    baseline: bool = typer.Option(False, "--baseline", help="Full schedule from noise (no severity encoder)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    bucket_width: Optional[int] = typer.Option(None, "--bucket-width", help="Start steps per bucket"),
    max_error_rate: Optional[float] = typer.Option(None, "--max-error-rate"),
    engine: Optional[str] = typer.Option(None, "--engine", help="ray (default) | local"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Redo the job from scratch"),
    max_nfe: Optional[int] = typer.Option(None, "--max-nfe", help="Cap reverse steps per sample (flash.max_nfe)"),
    starts: Optional[str] = typer.Option(None, "--starts", help="Photos off the prior's size: region (default) | "
                                         "image | image-max (flash.starts)"),
    budget_hours: Optional[float] = typer.Option(None, "--budget-hours",
                                                 help="Stop starting solves after this much solve time; rerun resumes"),
    noise: Optional[str] = typer.Option(None, "--noise", help="Noise σ in [0,1] of samples whose json lacks "
                                        "noise_sigma, or 'estimate' from each image (input.noise)"),
    operator: Optional[str] = typer.Option(None, "--operator", help="The family of samples without a json; their "
                                           "parameters are estimated per sample (input.operator, blind)"),
    scale: Optional[float] = typer.Option(None, "--scale", help="Super-resolution factor of small copies without a "
                                          "json (implies --operator downsample)"),
    set_: Optional[List[str]] = typer.Option(None, "--set", help="Config override section.key=value (repeatable)"),
):
    """Restore an archive of degraded images; rerunning the same command resumes."""
    from workers.job_config import build_config   # lazy, as every command's compute: `--help` stays fast

    set_ = list(set_ or []) + [f"flash.max_nfe={max_nfe}"] * (max_nfe is not None) + \
        [f"execution.budget_hours={budget_hours}"] * (budget_hours is not None) + \
        [f"flash.starts={starts}"] * (starts is not None) + [f"input.noise={noise}"] * (noise is not None) + \
        [blind_operator(operator, scale)] * (operator is not None or scale is not None)
    try:
        cfg = build_config(config, solver, baseline, batch_size, bucket_width, max_error_rate, engine, seed, set_)
        summary = execute(cfg, input, output, overwrite)
    except (ValueError, OSError) as exc:  # OSError: storage failed mid-job; committed parts stay
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    finish(cfg, summary, output)


def demo(
    output: str = typer.Option("out/demo", "--output"),
    engine: Optional[str] = typer.Option(None, "--engine", help="ray (default) | local"),
    overwrite: bool = typer.Option(True, "--overwrite/--resume"),
):
    """Restore the committed sample archive with the shipped demo models (local Ray, local files)."""
    from workers.job_config import build_config

    cfg = build_config(None, None, False, None, None, None, engine, None, None)
    console.print(f"restoring {DEMO_INPUT} with the shipped models in {REPO / 'models'} → {output}")
    try:
        summary = execute(cfg, DEMO_INPUT, output, overwrite)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
    print_quality(output)
    from jobs.inspect_cmd import write_pictures
    from pipeline.io.outputs import OutputStore

    store = OutputStore(output)
    write_pictures(store, store.read_metrics().to_pylist())
    finish(cfg, summary, output)
