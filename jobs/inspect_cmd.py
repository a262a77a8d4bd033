"""`flash-restore inspect OUTPUT`: what a job did, without opening Parquet by hand.

Prints counts by status and error kind, the NFE and residual_z histograms, the compute
spent, and how residual_z relates to PSNR where references exist; writes
OUTPUT/preview.png (degraded | restored | clean for the best, median and worst samples by
residual_z) and OUTPUT/plots.png.
"""
from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def bars(hist: list[tuple[float, float, int]], fmt: str = "{:.0f}") -> Table:
    table = Table(show_header=False, box=None)
    top = max((c for _, _, c in hist), default=1) or 1
    for lo, hi, c in hist:
        table.add_row(f"{fmt.format(lo)}–{fmt.format(hi)}", str(c), "█" * max(1 if c else 0, round(30 * c / top)))
    return table


def inspect_output(output: str) -> dict:
    """Print the report and write the pictures; returns the summary."""
    from pipeline.inspection.output_report import summarise
    from pipeline.io.outputs import OutputStore

    store = OutputStore(output)
    if store.read_manifest() is None:
        raise ValueError(f"{output} holds no flash-restore output (no _manifest.json)")
    rows = store.read_metrics().to_pylist()
    s = summarise(rows)
    table = Table(title=f"{output}: {s['samples']} samples")
    table.add_column("")
    table.add_column("value", justify="right")
    for status, n in sorted(s["status"].items()):
        table.add_row(f"status {status}", str(n))
    for kind, n in sorted(s["error_kinds"].items()):
        table.add_row(f"  error {kind}", str(n))
    table.add_row("NFE spent (total)", str(s["nfe_total"]))
    table.add_row("solve seconds (sum over samples)", f"{s['solve_seconds']:.1f}")
    table.add_row("severity seconds (sum over samples)", f"{s['severity_seconds']:.2f}")
    rho = s["spearman_residual_z_vs_psnr"]
    table.add_row("Spearman(residual_z, PSNR)", f"{rho:.3f}" if isinstance(rho, float) else rho)
    console.print(table)
    if s["nfe_histogram"]:
        console.print("NFE per sample:")
        console.print(bars(s["nfe_histogram"]))
        console.print("residual_z per sample (≈1: explains its measurement to the noise level):")
        console.print(bars(s["residual_z_histogram"], "{:.2f}"))
    s.update(write_pictures(store, rows))
    return s


def write_pictures(store, rows: list[dict]) -> dict:
    """OUTPUT/preview.png and OUTPUT/plots.png; says where they are."""
    from pipeline.inspection.output_report import pick_examples, plots, preview, save_png
    from pipeline.inspection.photo_preview import photo_figure, pick_photos

    examples = pick_examples(rows)
    if not examples:
        console.print("no restored sample with a residual: no preview")
        return {}
    out = {"preview": save_png(preview(store, examples), store, "preview.png")}
    plots(rows, store, "plots.png")
    out["plots"] = store.public_url("plots.png")
    photos = pick_photos(store, rows)
    if photos:
        out["photos"] = save_png(photo_figure(store, photos), store, "photos.png")
        console.print(f"photos (degraded | restored | reference | start step per region): {out['photos']}")
    console.print(f"preview (best, median, worst by residual_z; degraded | restored | clean): {out['preview']}")
    console.print(f"plots (NFE, residual_z, residual_z vs PSNR): {out['plots']}")
    return out


def inspect(output: str = typer.Argument(..., help="A restore job's output folder (local or s3://)")):
    """Counts, histograms, compute spent and a preview of the best, median and worst results."""
    try:
        inspect_output(output)
    except (ValueError, OSError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(code=1)
