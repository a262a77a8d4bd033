"""`flash-restore tune`: grid-search ζ and c on validation crops of the training photos; write the table."""
from __future__ import annotations

from pathlib import Path

import typer


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise typer.BadParameter(f"{name} takes comma-separated numbers, got {text!r}") from None
    if not vals or any(v < 0 for v in vals):
        raise typer.BadParameter(f"{name} needs at least one non-negative number, got {text!r}")
    return vals


def tune(
    solver: str = typer.Option("ldps", "--solver"),
    family: str = typer.Option("gaussian_blur", "--family", help="Operator family (its severity encoder is used)"),
    models: str = typer.Option("models", "--models", help="Folder with autoencoder/, ldm/, severity-<family>/"),
    data: str = typer.Option("data/corpus/train", "--data", help="Training corpus export (validation crops come from it)"),
    crops: int = typer.Option(16, "--crops", help="Validation crops for the Flash grid"),
    baseline_crops: int = typer.Option(4, "--baseline-crops", help="Of those, restored for the baseline grid"),
    step_sizes: str = typer.Option("0.5,1,2", "--step-sizes", help="Flash ζ grid"),
    noise_corrections: str = typer.Option("0.6,1.2", "--noise-corrections", help="Flash c grid"),
    baseline_step_sizes: str = typer.Option("0.5,1,2", "--baseline-step-sizes", help="Baseline ζ grid ('' = skip)"),
    batch_size: int = typer.Option(16, "--batch-size"),
    table: str = typer.Option("pipeline/restoration/solver_settings.yaml", "--table", help="Settings table to update"),
    doc: str = typer.Option("docs/tuning.md", "--doc", help="Report of every trial"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Tune Flash and the full-schedule baseline alike; the winners become the jobs' defaults."""
    from rich.console import Console
    from rich.table import Table

    from jobs.train import command_line
    from pipeline.operators import OPERATORS
    from pipeline.solvers import SOLVERS
    from pipeline.evaluation.tuning import tune as run_tune, validation_crops, write_table

    console = Console(stderr=True)
    if solver not in SOLVERS or family not in OPERATORS:
        console.print(f"[red]error:[/red] --solver one of {sorted(SOLVERS)}, --family one of {sorted(OPERATORS)}")
        raise typer.Exit(2)
    root = Path(models)
    flash_grid = {"step_size": _floats(step_sizes, "--step-sizes"),
                  "noise_correction": _floats(noise_corrections, "--noise-corrections")}
    base_grid = {"step_size": _floats(baseline_step_sizes, "--baseline-step-sizes")} if baseline_step_sizes else {}
    sets = [f"models.autoencoder={root / 'autoencoder'}", f"models.denoiser={root / 'ldm'}",
            f"models.severity.{family}={root / f'severity-{family}'}", "execution.engine=local",
            f"execution.batch_size={batch_size}", f"seed={seed}"]
    from pipeline.models.model_store import load_meta
    from pipeline.training.loop import load_frozen_autoencoder

    try:
        ae, _ = load_frozen_autoencoder(str(root / "autoencoder"), "cpu")
        params = load_meta(str(root / f"severity-{family}")).get("operator_params", {})
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] models under {root}: {exc}")
        raise typer.Exit(2)
    x01 = validation_crops(data, crops, int(ae.model.config.sample_size))
    result = run_tune(sets, solver, family, x01, flash_grid, base_grid, baseline_crops, batch_size, seed, params,
                      progress=lambda mode, r: console.print(f"{mode}: {r}"))
    note = f"{len(x01)} validation crops of {data} (every 7th crop, training photos only), t ~ linspace(0,1), noise 0.05"
    write_table(Path(table), solver, family, result, note)
    out = Table(title=f"tune {solver}/{family}")
    for col in ("mode", "step_size", "c", "PSNR", "input PSNR", "NFE", "s", "crops"):
        out.add_column(col)
    lines = [f"Command: `{command_line()}`", "", note, "",
             "| mode | ζ | c | PSNR (dB) | input PSNR | mean NFE | seconds | crops | chosen |", "|---|---|---|---|---|---|---|---|---|"]
    for mode, res in result.items():
        for r in res["trials"]:
            chosen = "yes" if r is res["best"] else ""
            c = r.get("noise_correction", "")
            out.add_row(mode, str(r["step_size"]), str(c), f"{r['psnr']:.2f}", f"{r['input_psnr']:.2f}",
                        f"{r['nfe']:.1f}", f"{r['seconds']:.0f}", str(r["n"]))
            lines.append(f"| {mode} | {r['step_size']} | {c} | {r['psnr']:.2f} | {r['input_psnr']:.2f} | "
                         f"{r['nfe']:.1f} | {r['seconds']:.0f} | {r['n']} | {chosen} |")
    console.print(out)
    _replace_section(Path(doc), f"## {solver} / {family}", "\n".join(lines) + "\n")
    console.print(f"tune: {table} updated, report in {doc}")


def _replace_section(path: Path, heading: str, body: str) -> None:
    from pipeline.evaluation.figures import replace_section

    text = path.read_text() if path.exists() else (
        "# Solver tuning\n\nSettings tuned by `flash-restore tune` on validation crops of the training photos "
        "(never on dev photos), Flash and the baseline alike; the winners are in `pipeline/restoration/solver_settings.yaml`, "
        "which jobs read by default (`solver.settings: tuned`) and which enters the config hash.\n")
    path.write_text(replace_section(text, body, heading))
