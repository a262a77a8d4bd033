"""`bench pipeline`: images/s of three ways to restore, measured side by side.

(a) a reference-style loop: the baseline solver's full schedule from noise, batch 1;
(b) Flash one sample at a time, in process;
(c) Flash through the pipeline (`workers.execute`) with start-step buckets.
The ratios are what to quote: each run is on the same machine, models and samples, in one
process, because these machines are too noisy for numbers taken at different times.
"""
from __future__ import annotations

import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

from pipeline.execution.validation import read_limits
from pipeline.io.shards import iter_samples, list_shards, make_archive
from pipeline.execution.restorer import build_restorer, prepare_samples

from .execute import execute


def timed_one_by_one(restorer, prepared) -> tuple[float, float]:
    """(images/s, mean NFE) restoring each sample alone: severity, then a batch of one."""
    t0, nfe = time.perf_counter(), 0
    for p in prepared:
        (row, _, _), = restorer.solve(restorer.estimate([p]))
        nfe += row["nfe"]
    return len(prepared) / (time.perf_counter() - t0), nfe / len(prepared)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(cfg, base_cfg, source: str, samples: int, reference_images: int, single_images: int,
            log: Callable[[str], None] = print) -> dict:
    """The three rates on `samples` copies of `source`'s samples: (a) with `base_cfg` (the
    baseline, batch 1), (b) and (c) with `cfg`; (c) on the engine `cfg` names."""
    engine = cfg.execution.engine
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-"))
    archive = make_archive(source, samples, str(tmp / "archive"))
    items = [s for sh in list_shards(archive) for s in iter_samples(sh, **read_limits(cfg))]
    log(f"benchmark archive: {samples} samples in {archive}")

    reference = build_restorer(base_cfg)
    ref_rate, ref_nfe = timed_one_by_one(reference, prepare_samples(base_cfg, items[:reference_images]))
    log(f"(a) reference loop: {ref_rate:.4f} img/s")
    flash = build_restorer(cfg)
    one_rate, one_nfe = timed_one_by_one(flash, prepare_samples(cfg, items[:single_images]))
    log(f"(b) Flash one by one: {one_rate:.4f} img/s")

    rss0 = peak_rss_mb()
    if engine == "ray":
        import ray   # lazy: only the ray engine needs it

        if not ray.is_initialized():
            ray.init(include_dashboard=False, log_to_driver=False)
    summary = execute(cfg, archive, str(tmp / "out"))
    pipe_rate = summary["ok"] / summary["wall_seconds"]
    solve = summary.get("stages", {}).get("solve") or {}
    log(f"(c) Flash through the {engine} pipeline: {pipe_rate:.4f} img/s")
    rows = [("(a) reference loop: baseline, full schedule, batch 1", ref_rate, ref_nfe, reference_images),
            ("(b) Flash, one sample at a time", one_rate, one_nfe, single_images),
            (f"(c) Flash through the {engine} pipeline, buckets of {cfg.execution.batch_size}", pipe_rate,
             summary["mean_nfe"], summary["ok"])]
    return {"rows": rows, "ratios": {"(c)/(a)": pipe_rate / ref_rate, "(c)/(b)": pipe_rate / one_rate,
                                     "(b)/(a)": one_rate / ref_rate},
            "steady": summary["ok"] / solve["busy_seconds"] if solve.get("busy_seconds") else float("nan"),
            "solve_busy": solve.get("busy_fraction"), "rss_before": rss0, "rss_after": peak_rss_mb()}


def section(result: dict, cfg, command: str) -> list[str]:
    """The `bench pipeline` section of docs/benchmarks.md."""
    device = "cuda: " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {device}; solver "
             f"`{cfg.solver.name}`, models `{cfg.models.denoiser}`, all three side by side in one run.", "",
             "| method | images/s | mean NFE | images |", "|---|---|---|---|"]
    lines += [f"| {n} | {r:.4f} | {f:.1f} | {k} |" for n, r, f, k in result["rows"]]
    lines += ["", "| ratio | value |", "|---|---|"] + [f"| {k} | {v:.2f}× |" for k, v in result["ratios"].items()]
    lines += ["", f"(c) includes starting the actors and loading their models; its steady-state rate "
              f"(images / solver busy seconds) is {result['steady']:.4f} img/s.", "",
              f"Solver busy fraction in (c): {result['solve_busy']}. Driver peak RSS before (c): "
              f"{result['rss_before']:.0f} MB, after: {result['rss_after']:.0f} MB.", "",
              f"Command: `{command}`", ""]
    return lines
