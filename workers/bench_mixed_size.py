"""`bench mixed-size`: one shard mixing whole photos of many sizes with 64-px crops, end to end.

Why: an archive as it comes mixes thumbnails, odd aspect ratios and multi-megapixel photos in
one shard. Two promises are checked on it (issue 27, deliverable 6): the solver stays busy
(busy fraction ≥ BUSY_TARGET on the Ray engine, the driver holding no pixels), and `estimate`
predicts the solve seconds within ±15 % (tile-steps counted per sample, the calibration table).

The archive: the first `photos` dev photos at their own size, long side scaled to a cycle of
`SIDES` (a 48-px thumbnail smaller than one tile up to 384 px), interleaved with the committed
sample archive's clean 64-px crops, all degraded by `degrade` (Gaussian blur, severity uniform
in [0, 1] per sample, noise 0.05). Runs, side by side: the estimate; the restore job on the
local engine (predicted against actual solve seconds, as `bench estimate`); the same job on the
Ray engine (solver busy fraction, driver peak RSS).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from pipeline.corpus.crops import whole_photo
from pipeline.corpus.photos import read_photo_list
from pipeline.corpus.shard_jobs import degrade, pixels01
from pipeline.io.samples import encode_png
from pipeline.io.outputs import OutputStore
from pipeline.io.shards import iter_samples, list_shards, write_shard

from .bench_estimate import TARGET, predicted
from .bench_pipeline import peak_rss_mb
from .execute import execute

SIDES = (48, 96, 160, 256, 384, 128, 320, 200)   # long sides of the whole photos, in turn
BUSY_TARGET = 0.85


def clean_mixed_shard(folder: Path, crops_source: str, photos: int) -> dict:
    """A clean shard at `folder`: `photos` whole dev photos spread evenly among the source's crops."""
    crops = [s for sh in list_shards(crops_source) for s in iter_samples(sh) if not isinstance(s, Exception)]
    items = [{"__key__": f"crop{i:03d}", "png": encode_png(s.clean01), "json": {"source": s.key}} for i, s in
             enumerate(crops) if s.clean01 is not None]
    sizes = []
    for i, entry in enumerate(read_photo_list("dev")[:photos]):
        crop, _ = whole_photo(entry, SIDES[i % len(SIDES)])
        h, w = crop.pixels.shape[:2]
        sizes.append((h, w))
        item = {"__key__": f"photo{i:02d}", "png": encode_png(pixels01(crop.pixels)), "json": crop.meta()}
        items.insert(round((i + 0.5) * len(items) / max(photos, 1)), item)
    folder.mkdir(parents=True, exist_ok=True)
    write_shard(str(folder / "clean-000000.tar"), items)
    return {"samples": len(items), "photos": sizes, "crops": len(items) - len(sizes)}


def run(cfg, crops_source: str, photos: int, log: Callable[[str], None] = print) -> dict:
    """Build the archive, then estimate, restore locally, restore on Ray; every figure of the section."""
    tmp = Path(tempfile.mkdtemp(prefix="flash-bench-mixed-"))
    made = clean_mixed_shard(tmp / "clean", crops_source, photos)
    degrade(str(tmp / "clean"), str(tmp / "archive"), "gaussian_blur", "uniform", 0.05, seed=0)
    archive = str(tmp / "archive")
    log(f"mixed-size archive: {made['samples']} samples ({made['crops']} crops, photos {made['photos']}) in {archive}")
    seconds, report = predicted(cfg, archive)
    log(f"estimate: {seconds:.1f} s, {report['predicted_tile_steps_total']} tile-steps")
    result = {"made": made, "predicted_s": seconds, "predicted_tile_steps": report["predicted_tile_steps_total"],
              "predicted_nfe": report["mean_nfe"]}
    for engine in ("local", "ray"):
        if engine == "ray":
            import ray   # lazy: only the Ray run needs it

            if not ray.is_initialized():
                ray.init(include_dashboard=False, log_to_driver=False)
        rss0 = peak_rss_mb()
        out = str(tmp / f"out-{engine}")
        summary = execute(replace(cfg, execution=replace(cfg.execution, engine=engine)), archive, out)
        rows = OutputStore(out).read_metrics().to_pylist()
        solve = summary["stages"]["solve"]
        result[engine] = {"solve_s": solve["busy_seconds"], "busy": solve.get("busy_fraction"),
                          "wall_s": summary["wall_seconds"], "ok": summary["ok"], "errors": summary["errors"],
                          "tile_steps": sum(int(r.get("tile_steps") or 0) for r in rows),
                          "mean_nfe": summary["mean_nfe"], "rss_before": rss0, "rss_after": peak_rss_mb()}
        log(f"{engine}: solve {solve['busy_seconds']:.1f} s, busy {solve.get('busy_fraction')}, "
            f"{summary['ok']} ok / {summary['errors']} errors")
    result["error"] = seconds / result["local"]["solve_s"] - 1
    return result


def table_rows(r: dict) -> list[tuple[str, str, str]]:
    """(figure, value, target) rows of the console table and the section."""
    loc, ray_ = r["local"], r["ray"]
    return [
        ("samples (crops + whole photos)", f"{r['made']['samples']} ({r['made']['crops']} + {len(r['made']['photos'])})",
         ""),
        ("tile-steps predicted / restored (local)", f"{r['predicted_tile_steps']} / {loc['tile_steps']}", "equal"),
        ("solve s predicted / actual (local)", f"{r['predicted_s']:.1f} / {loc['solve_s']:.1f}", ""),
        ("estimate error", f"{r['error']:+.1%}", f"±{TARGET:.0%} ({'met' if abs(r['error']) <= TARGET else 'missed'})"),
        ("solver busy fraction (Ray)", f"{ray_['busy']}",
         f"≥ {BUSY_TARGET} ({'met' if (ray_['busy'] or 0) >= BUSY_TARGET else 'missed'})"),
        ("ok / error rows (local, Ray)", f"{loc['ok']}/{loc['errors']}, {ray_['ok']}/{ray_['errors']}", "all ok"),
        ("driver peak RSS before / after the Ray run (MB)", f"{ray_['rss_before']:.0f} / {ray_['rss_after']:.0f}", ""),
        ("wall s (local, Ray)", f"{loc['wall_s']:.1f}, {ray_['wall_s']:.1f}", ""),
    ]


def section(r: dict, cfg, command: str) -> list[str]:
    """The `bench mixed-size` section of docs/benchmarks.md."""
    sizes = ", ".join(f"{w}×{h}" for h, w in r["made"]["photos"])
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: one shard of the sample archive's "
             f"64-px crops with whole dev photos among them ({sizes}), Gaussian blur t ~ U[0, 1], noise 0.05; solver "
             f"`{cfg.solver.name}`, batch {cfg.execution.batch_size}; estimate, local run and Ray run one after "
             "another in one process.", "", "| figure | value | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in table_rows(r)]
    return lines + ["", f"Command: `{command}` (after `flash-restore bench calibrate`)."]
