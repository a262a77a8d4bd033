"""`flash-restore bench scale`: does the Ray pipeline stay flat in memory and scale out?

`workers.bench_scale` measures (memory at N and 10·N samples, driver bytes per sample,
1- vs 2-node throughput, the roofline); this prints the tables and writes its section of
docs/benchmarks.md.
"""
from __future__ import annotations

from typing import List, Optional

import typer
from rich.table import Table

from jobs.bench_cmd import write_section
from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console


def bench_scale(
    samples: int = typer.Option(16, "--samples", help="N: the small archive; the large one has --factor × N"),
    factor: int = typer.Option(10, "--factor"),
    cluster_samples: int = typer.Option(48, "--cluster-samples", help="Archive for the 1- vs 2-node runs"),
    max_nfe: int = typer.Option(0, "--max-nfe", help="Cap on steps per sample (flash.max_nfe); 0 = Flash's own"),
    batch_size: int = typer.Option(8, "--batch-size", help="Bucket size (execution.batch_size)"),
    write: str = typer.Option(str(REPO / "docs" / "benchmarks.md"), "--write", help="Markdown report path"),
    set_: Optional[List[str]] = typer.Option(None, "--set"),
):
    """Memory at N and 10·N samples, driver bytes per sample, 1- vs 2-node throughput, roofline."""
    from workers import bench_scale as bench   # lazy, as every command's compute: `--help` stays fast
    from workers.job_config import build_config

    sets = ([f"flash.max_nfe={max_nfe}"] if max_nfe else []) + list(set_ or [])
    build_config(None, None, False, batch_size, None, None, "ray", None, sets)  # config errors before compute
    try:
        result = bench.measure(str(SAMPLE_ARCHIVE), samples, factor, cluster_samples, sets, batch_size,
                               log=console.print)
    except (RuntimeError, ValueError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1)
    table = Table(title="flash-restore bench scale: peak RSS (MB)")
    for col in ("process", f"N = {result['small']}", f"10·N = {result['large']}", "ratio"):
        table.add_column(col)
    for name, (a, b) in bench.memory_peaks(result).items():
        table.add_row(name, f"{a:.0f}", f"{b:.0f}", f"{b / a:.3f}")
    console.print(table)
    rates = result["rates"]
    per_sample = {n: result["rss"][n]["summary"]["driver_bytes_per_sample"] for n in result["rss"]}
    console.print(f"driver bytes/sample: {per_sample}; 1 node {rates[1]['rate']:.3f} img/s, 2 nodes "
                  f"{rates[2]['rate']:.3f} img/s, efficiency {result['efficiency']:.1%}; roofline "
                  f"{result['roofline']:.3f} img/s per solver thread")
    command = (f"flash-restore bench scale --samples {samples} --factor {factor} --cluster-samples "
               f"{cluster_samples} --max-nfe {max_nfe} --batch-size {batch_size}")
    write_section(write, "`flash-restore bench scale`",
                  bench.section(result, cluster_samples, max_nfe, batch_size, command))
