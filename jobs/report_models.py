"""`flash-restore report-models`: measure the trained models and write docs/models.md + card sections.

Why one command: the GPU run must come back with every figure the project promises (autoencoder
PSNR, severity ordering/Spearman/calibration, LDM sheet + FID, one Latent-DPS step, end-to-end
Flash vs baseline NFE and PSNR), measured the same way each time. Every budget is an option so
the same code runs in seconds on CPU (tests) and at full size on a GPU. A figure that cannot be
measured is written as `missing: reason`, never guessed. Figures are also kept in models.json,
so `--only` can redo one section (e.g. FID from saved samples, or the step time on this CPU).
"""
from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Optional

import typer

from pipeline.model_report import SECTIONS


def report_models(
    ctx: typer.Context,
    models: str = typer.Option("models", "--models", help="Folder with autoencoder/, ldm/, severity-<family>/"),
    photos: str = typer.Option("dev", "--photos", help="dev | train | a corpus export folder"),
    output_doc: str = typer.Option("docs/models.md", "--output-doc", help="Report; PNGs and models.json beside it"),
    fid_samples: int = typer.Option(500, "--fid-samples", help="Unconditional samples for FID (≥ 64 for the sheet)"),
    sample_steps: int = typer.Option(1000, "--sample-steps", help="T = DDPM; fewer = DDIM(η=1) with that many steps"),
    crops: int = typer.Option(0, "--crops", help="Dev crops for autoencoder PSNR and FID reals (0 = all)"),
    severity_crops: int = typer.Option(64, "--severity-crops", help="Crops per severity sweep (×10 severities)"),
    e2e_crops: int = typer.Option(16, "--e2e-crops", help="Crops restored with Flash(Latent-DPS)"),
    baseline_crops: int = typer.Option(2, "--baseline-crops", help="Of those, restored by the 1000-step baseline"),
    step_batch: int = typer.Option(32, "--step-batch", help="Batch of the timed Latent-DPS step"),
    step_repeats: int = typer.Option(3, "--step-repeats"),
    step_size: Optional[float] = typer.Option(None, "--step-size", help="Latent-DPS ζ (default: the tuned settings)"),
    settings: str = typer.Option("tuned", "--settings", help="Solver settings table of the end-to-end runs: tuned "
                                 "(the shipped one) or the path of one `tune --table` wrote (another prior's)"),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch for evaluation forwards and restoration"),
    sample_batch: int = typer.Option(512, "--sample-batch", help="Batch for unconditional sampling"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
    seed: int = typer.Option(0, "--seed"),
    only: Optional[str] = typer.Option(None, "--only", help=f"Comma list of sections to (re)measure: {','.join(SECTIONS)}"),
    fid_from: Optional[str] = typer.Option(None, "--fid-from", help="Compute FID from saved samples (.npz)"),
    samples_out: Optional[str] = typer.Option(None, "--samples-out", help="Save the LDM samples (.npz, uint8)"),
) -> None:
    """Measure the trained models; write docs/models.md, the figures PNGs and each model card's figures."""
    import torch
    from rich.console import Console

    from jobs.train import command_line
    from pipeline.model_report.figures import figure_rows, update_cards, write_docs
    from pipeline.model_report.measurements import (ReportOptions, families, measure_sections, model_info,
                                                    resolve_photos)
    from pipeline.restoration.restore import pick_device
    from pipeline.training.loop import machine_name

    console = Console(stderr=True)
    wanted = set(SECTIONS if not only else [s.strip() for s in only.split(",") if s.strip()])
    if wanted - set(SECTIONS):
        console.print(f"[red]error:[/red] --only takes {','.join(SECTIONS)}, got {only!r}")
        raise typer.Exit(2)
    try:   # a bad table fails here, before any model is loaded
        from pipeline.execution.config import load_config

        load_config(None, [f"solver.settings={settings}"])
    except ValueError as exc:
        console.print(f"[red]error:[/red] --settings: {exc}")
        raise typer.Exit(2)
    root, doc = Path(models), Path(output_doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    dev = pick_device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    json_path = doc.with_suffix(".json")
    old = json.loads(json_path.read_text()) if only and json_path.exists() else {}
    figures = dict(old.get("figures", {}))
    opts = ReportOptions(crops=crops, fid_samples=fid_samples, sample_steps=sample_steps,
                         severity_crops=severity_crops, e2e_crops=e2e_crops, baseline_crops=baseline_crops,
                         step_batch=step_batch, step_repeats=step_repeats, step_size=step_size, settings=settings,
                         batch_size=batch_size, sample_batch=sample_batch, seed=seed, fid_from=fid_from,
                         samples_out=samples_out)
    t_start = time.perf_counter()
    figures = measure_sections(root, resolve_photos(photos), wanted, figures, dev, opts, doc.parent)
    report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "machine": machine_name(dev),
              "device": str(dev), "command": command_line(ctx), "models": model_info(root), "figures": figures,
              "commands": [c for c in old.get("commands", []) if c != command_line(ctx)] + [command_line(ctx)],
              "seconds": time.perf_counter() - t_start}
    json_path.write_text(json.dumps(report, indent=1, sort_keys=True, default=str))
    write_docs(report, doc)
    cards = update_cards(root, report, families(root), doc.parent)
    missing = [n for n, v, _how in figure_rows(figures) if isinstance(v, dict) and "missing" in v]
    console.print(f"report-models: {doc} ({len(cards)} model cards updated, {report['seconds']:.0f} s)"
                  + (f"; missing: {', '.join(missing)}" if missing else ""))
