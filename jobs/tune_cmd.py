"""`flash-restore tune`: grid-search solver settings on validation crops of the training photos; write the table."""
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


def _grid(step_sizes: str, flag: str, params: list[str], flag_params: str) -> dict[str, list]:
    """{name: values} from a ζ list ('' = the solver has none) and NAME=V1,V2 options."""
    import yaml

    out = {"step_size": _floats(step_sizes, flag)} if step_sizes else {}
    for spec in params:
        name, sep, values = spec.partition("=")
        if not sep or not name.strip() or not values.strip():
            raise typer.BadParameter(f"{flag_params} takes NAME=V1,V2,..., got {spec!r}")
        try:
            out[name.strip()] = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
        except yaml.YAMLError:
            raise typer.BadParameter(f"{flag_params} {spec!r}: values must be numbers or words") from None
    return out


def tune(
    solver: str = typer.Option("ldps", "--solver"),
    family: str = typer.Option("gaussian_blur", "--family", help="Operator family (its severity encoder is used)"),
    models: str = typer.Option("models", "--models", help="Folder with autoencoder/, ldm/, severity-<family>/"),
    data: str = typer.Option("data/corpus/train", "--data", help="Training corpus export (validation crops come from it)"),
    crops: int = typer.Option(16, "--crops", help="Validation crops for the Flash grid"),
    baseline_crops: int = typer.Option(4, "--baseline-crops", help="Of those, restored for the baseline grid"),
    step_sizes: str = typer.Option("0.5,1,2", "--step-sizes", help="Flash ζ grid ('' = the solver has no ζ)"),
    noise_corrections: str = typer.Option("0.6,1.2", "--noise-corrections", help="Flash c grid"),
    params: list[str] = typer.Option([], "--param", help="More of the Flash grid: NAME=V1,V2 (repeatable)"),
    baseline_step_sizes: str = typer.Option("0.5,1,2", "--baseline-step-sizes", help="Baseline ζ grid"),
    baseline_params: list[str] = typer.Option([], "--baseline-param", help="More of the baseline grid: NAME=V1,V2"),
    baseline_steps: int = typer.Option(0, "--baseline-steps", min=0, help="Tune the baseline on a schedule this "
                                       "long (stored as the equal-NFE settings); 0 = the solver's full schedule"),
    skip_flash: bool = typer.Option(False, "--skip-flash", help="Tune the baseline only"),
    skip_baseline: bool = typer.Option(False, "--skip-baseline", help="Tune Flash only"),
    noise: float = typer.Option(0.05, "--noise", min=0.0, max=1.0, help="Measurement noise σ of the "
                                "validation crops, in [0,1] (the encoders are trained at 0.05)"),
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
    from pipeline.tuning.grid_search import tune as run_tune, validation_crops, write_table
    from pipeline.tuning.trials_doc import columns, trial_rows, write_trials

    console = Console(stderr=True)
    if solver not in SOLVERS or family not in OPERATORS:
        console.print(f"[red]error:[/red] --solver one of {sorted(SOLVERS)}, --family one of {sorted(OPERATORS)}")
        raise typer.Exit(2)
    root = Path(models)
    flash_grid = {} if skip_flash else {**_grid(step_sizes, "--step-sizes", params, "--param"),
                                        "noise_correction": _floats(noise_corrections, "--noise-corrections")}
    base_grid = {} if skip_baseline else _grid(baseline_step_sizes, "--baseline-step-sizes", baseline_params,
                                               "--baseline-param")
    try:
        SOLVERS[solver].check_names((set(flash_grid) | set(base_grid)) - {"noise_correction"})
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc} (--step-sizes '' for a solver without step_size)")
        raise typer.Exit(2)
    if not flash_grid and not base_grid:
        console.print("[red]error:[/red] nothing to tune: --skip-flash and --skip-baseline together")
        raise typer.Exit(2)
    sets = [f"models.autoencoder={root / 'autoencoder'}", f"models.denoiser={root / 'ldm'}",
            f"models.severity.{family}={root / f'severity-{family}'}", "execution.engine=local",
            f"execution.batch_size={batch_size}", f"seed={seed}"]
    from pipeline.models.model_store import load_meta
    from pipeline.training.loop import load_frozen_autoencoder

    try:
        ae, _ = load_frozen_autoencoder(str(root / "autoencoder"), "cpu")
        operator = load_meta(str(root / f"severity-{family}")).get("operator_params", {})
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] models under {root}: {exc}")
        raise typer.Exit(2)
    x01 = validation_crops(data, crops, int(ae.model.config.sample_size))
    result = run_tune(sets, solver, family, x01, flash_grid, base_grid, baseline_crops, batch_size, seed, operator,
                      baseline_steps=baseline_steps or None, progress=lambda mode, r: console.print(f"{mode}: {r}"),
                      noise=noise)
    note = (f"{len(x01)} validation crops of {data} (every 7th crop, training photos only), "
            f"t ~ linspace(0,1), noise {noise:g}")
    write_table(Path(table), solver, family, result, note, noise)
    names = sorted({k for g in (flash_grid, base_grid) for k in g})
    out = Table(title=f"tune {solver}/{family}")
    for col in columns(names):
        out.add_column(col)
    for rows in trial_rows(result, names).values():
        for cells in rows:
            out.add_row(*cells)
    write_trials(doc, solver, family, result, names, note, command_line())
    console.print(out)
    console.print(f"tune: {table} updated, report in {doc}")


def tune_merge(
    scratch: list[str] = typer.Argument(..., help="Tables written by `tune --table SCRATCH.yaml` runs"),
    table: str = typer.Option("pipeline/restoration/solver_settings.yaml", "--table", help="Settings table to update"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the decisions, write nothing"),
) -> None:
    """Merge scratch tune tables into TABLE: per entry, the higher PSNR on the same crops, noise and schedule wins."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.tuning.table_merge import merge
    from pipeline.tuning.grid_search import dump_table
    from pipeline.restoration.solver_settings import load_table

    console = Console(stderr=True)
    path = Path(table)
    try:
        current = load_table(table) if path.exists() else {}
        merged, decisions = merge(current, [(name, load_table(name)) for name in scratch])
    except (OSError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}; {table} left unchanged")
        raise typer.Exit(2)
    out = Table(title=f"tune-merge into {table}")
    for col in ("from", "entry", "action", "table PSNR", "offered PSNR"):
        out.add_column(col)
    for d in decisions:
        out.add_row(d.source, d.entry, d.action, "" if d.kept_psnr is None else f"{d.kept_psnr:.3f}", f"{d.offered_psnr:.3f}")
    console.print(out)
    changed = any(d.changes for d in decisions)
    if changed and not dry_run:
        try:
            dump_table(path, merged)
        except OSError as exc:
            console.print(f"[red]error:[/red] cannot write {table}: {exc}")
            raise typer.Exit(2)
    console.print(f"tune-merge: {table} {'updated' if changed and not dry_run else 'unchanged'}")
