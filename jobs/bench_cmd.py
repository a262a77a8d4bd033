"""`flash-restore bench …`: the benchmark commands; each writes its section of docs/benchmarks.md.

`bench pipeline` is here (`workers.bench_pipeline` measures); calibrate, estimate, budget and
scale are registered on `bench_app` by `jobs.cli`.
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmarks; each writes docs/benchmarks.md.")


def write_section(path: str, title: str, lines: list[str]) -> None:
    """Replace (or append) the `## title` section of the benchmarks document; say where."""
    from pipeline.io.doc_sections import write_section as write

    written = write(path, f"## {title}", "\n".join(lines), "# Benchmarks\n")
    console.print(f"report written to {written}")


def print_table(title: str, columns: tuple, rows) -> None:
    """A benchmark's result table on the console."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@bench_app.command("pipeline")
def bench_pipeline(
    samples: int = typer.Option(64, "--samples", help="Archive size for the Ray pipeline run"),
    reference_images: int = typer.Option(2, "--reference-images", help="Images for the full-schedule loop (a rate)"),
    single_images: int = typer.Option(16, "--single-images", help="Images for Flash one by one"),
    batch_size: int = typer.Option(8, "--batch-size"),
    engine: str = typer.Option("ray", "--engine", help="Engine for (c): ray | local"),
    config: Optional[str] = typer.Option(None, "--config"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Reference loop vs Flash one-by-one vs Flash through the pipeline, side by side."""
    from workers import bench_pipeline as bench   # lazy, as every command's compute: `--help` stays fast
    from workers.job_config import build_config

    cfg = build_config(config, None, False, batch_size, None, None, engine, None, set_)
    base_cfg = build_config(config, None, True, 1, None, None, engine, None, set_)
    result = bench.measure(cfg, base_cfg, str(SAMPLE_ARCHIVE), samples, reference_images, single_images,
                           log=console.print)
    table = Table(title="flash-restore bench pipeline")
    for col in ("method", "images/s", "mean NFE", "images"):
        table.add_column(col)
    for name, rate, nfe, n in result["rows"]:
        table.add_row(name, f"{rate:.4f}", f"{nfe:.1f}", str(n))
    console.print(table)
    console.print("  ".join(f"{k} = {v:.2f}×" for k, v in result["ratios"].items()))
    command = (f"flash-restore bench pipeline --samples {samples} --reference-images {reference_images} "
               f"--single-images {single_images} --batch-size {batch_size} --engine {engine}")
    write_section(write, "`flash-restore bench pipeline`", bench.section(result, cfg, command))
