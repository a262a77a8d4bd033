"""`flash-restore bench pipeline`: images/s of three ways to restore, measured side by side.

(a) a reference-style loop: the baseline solver's full schedule from noise, batch 1;
(b) Flash one sample at a time, in process;
(c) Flash through the Ray pipeline with start-step buckets.
The ratios are what to quote: each run is on the same machine, models and samples, in one
process, because these machines are too noisy for numbers taken at different times.
"""
from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from jobs.restore_cmd import REPO, SAMPLE_ARCHIVE, console

bench_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Benchmarks; each writes docs/benchmarks.md.")


def make_archive(source: str, n: int, dest: Path) -> str:
    """n samples cycled from `source` under fresh keys (a larger archive from the committed one)."""
    from pipeline.io.shards import iter_samples, list_shards, write_shard
    from pipeline.io.samples import encode_png

    base = [s for shard in list_shards(source) for s in iter_samples(shard) if not isinstance(s, Exception)]
    if not base:
        raise ValueError(f"no valid samples in {source}")
    out = []
    for i in range(n):
        s = base[i % len(base)]
        item = {"__key__": f"b{i:06d}", "png": encode_png(s.image01), "json": s.params}
        if s.clean01 is not None:
            item["clean.png"] = encode_png(s.clean01)
        out.append(item)
    per = 64
    for j in range(0, n, per):
        write_shard(str(dest / f"bench-{j // per:05d}.tar"), out[j:j + per])
    return str(dest)


def timed_one_by_one(restorer, prepared) -> tuple[float, float]:
    """(images/s, mean NFE) restoring each sample alone: severity, then a batch of one."""
    t0, nfe = time.perf_counter(), 0
    for p in prepared:
        (row, _, _), = restorer.solve(restorer.estimate([p]))
        nfe += row["nfe"]
    return len(prepared) / (time.perf_counter() - t0), nfe / len(prepared)


def write_section(path: Path, title: str, lines: list[str]) -> None:
    """Replace (or append) the `## title` section of a markdown file, keeping the others; say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    head = f"## {title}"
    parts = text.split("\n## ")
    kept = [p for p in parts[1:] if not p.startswith(title)]
    body = "\n".join([head, ""] + lines).rstrip() + "\n"
    path.write_text("\n## ".join([parts[0].rstrip() + "\n"] + kept).rstrip() + "\n\n" + body)
    console.print(f"report written to {path}")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    from workers.job_config import build_config

    import torch

    from pipeline.restoration.restore import Restorer
    from pipeline.io.shards import iter_samples, list_shards
    from pipeline.execution.validation import read_limits
    from workers.execute import execute

    cfg = build_config(config, None, False, batch_size, None, None, engine, None, set_)
    base_cfg = build_config(config, None, True, 1, None, None, engine, None, set_)
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-"))
    archive = make_archive(str(SAMPLE_ARCHIVE), samples, tmp / "archive")
    items = [s for sh in list_shards(archive) for s in iter_samples(sh, **read_limits(cfg))]
    console.print(f"benchmark archive: {samples} samples in {archive}")

    reference = Restorer(base_cfg)
    ref_rate, ref_nfe = timed_one_by_one(reference, [reference.prepare(s) for s in items[:reference_images]])
    console.print(f"(a) reference loop: {ref_rate:.4f} img/s")
    flash = Restorer(cfg)
    one_rate, one_nfe = timed_one_by_one(flash, [flash.prepare(s) for s in items[:single_images]])
    console.print(f"(b) Flash one by one: {one_rate:.4f} img/s")

    rss0 = peak_rss_mb()
    if engine == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
    summary = execute(cfg, archive, str(tmp / "out"))
    pipe_rate = summary["ok"] / summary["wall_seconds"]
    solve = summary.get("stages", {}).get("solve") or {}
    solve_busy = solve.get("busy_fraction")
    steady = summary["ok"] / solve["busy_seconds"] if solve.get("busy_seconds") else float("nan")
    console.print(f"(c) Flash through the {engine} pipeline: {pipe_rate:.4f} img/s")

    rows = [("(a) reference loop: baseline, full schedule, batch 1", ref_rate, ref_nfe, reference_images),
            ("(b) Flash, one sample at a time", one_rate, one_nfe, single_images),
            (f"(c) Flash through the {engine} pipeline, buckets of {batch_size}", pipe_rate, summary["mean_nfe"],
             summary["ok"])]
    table = Table(title="flash-restore bench pipeline")
    for col in ("method", "images/s", "mean NFE", "images"):
        table.add_column(col)
    for name, rate, nfe, n in rows:
        table.add_row(name, f"{rate:.4f}", f"{nfe:.1f}", str(n))
    console.print(table)
    ratios = {"(c)/(a)": pipe_rate / ref_rate, "(c)/(b)": pipe_rate / one_rate, "(b)/(a)": one_rate / ref_rate}
    console.print("  ".join(f"{k} = {v:.2f}×" for k, v in ratios.items()))
    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {device}; solver "
             f"`{cfg.solver.name}`, models `{cfg.models.denoiser}`, all three side by side in one run.", "",
             "| method | images/s | mean NFE | images |", "|---|---|---|---|"]
    lines += [f"| {n} | {r:.4f} | {f:.1f} | {k} |" for n, r, f, k in rows]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f}× |" for k, v in ratios.items()]
    lines += ["", f"(c) includes starting the actors and loading their models; its steady-state rate "
              f"(images / solver busy seconds) is {steady:.4f} img/s.", "",
              f"Solver busy fraction in (c): {solve_busy}. Driver peak RSS before (c): {rss0:.0f} MB, "
              f"after: {peak_rss_mb():.0f} MB.", "",
              f"Command: `flash-restore bench pipeline --samples {samples} --reference-images {reference_images} "
              f"--single-images {single_images} --batch-size {batch_size} --engine {engine}`", ""]
    write_section(Path(write), "`flash-restore bench pipeline`", lines)
