"""The corpus jobs: photos -> clean crop shards -> degraded shards, and the compact export.

The project trains its own small models on crops of photos shipped in Debian / PyPI
packages (see data/photos/README.md). These functions turn a photo list into WebDataset
shards at any fsspec URL, degrade them with per-key determinism
(`pipeline.corpus.degradation`), and pack clean crops into a ~12 MB export a GPU box loads
with numpy + pillow + pyarrow only. Each writes OUTPUT/index.json (or the export's
meta.json) and returns it.

Every output is a pure function of the arguments: rerunning gives identical bytes.
`progress(description, total)` is a context manager yielding `advance(n=1)`; the CLI
passes a progress bar, library callers nothing.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Callable, Sequence

import fsspec
import numpy as np
import torch

from pipeline.corpus.crops import photo_crops, whole_photo, write_corpus_export
from pipeline.corpus.degradation import MEASUREMENT_NOTE, degrade_samples, parse_operators, parse_severity
from pipeline.corpus.photos import read_photo_list
from pipeline.io.samples import SampleError, encode_png
from pipeline.io.shards import iter_samples, list_shards, write_shard


@contextmanager
def silent(description: str, total: int):
    yield lambda n=1: None


def _write_json(url: str, obj: dict) -> None:
    with fsspec.open(url, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _evenly(items: list, n: int) -> list:
    """n items spread evenly over the list (all of them when n <= 0 or n >= len): a cap that keeps variety."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def _makedirs(url: str) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)


def make_shards(photos: str, output: str, size: int = 64, short_sides: str | Sequence[int] = "256,384,512",
                shard_size: int = 1000, min_std: float = 0.04, min_texture: float = 0.01, max_upscale: float = 1.1,
                max_per_photo: int = 0, max_crops: int = 0, progress: Callable = silent, whole: bool = False,
                max_side: int | None = None) -> dict:
    """Photos -> clean crop shards (`<key>.png`, `<key>.json`) + OUTPUT/index.json.

    `whole`: one sample per photo at its own size instead of crops (`max_side` scales the
    long side down to at most that; crop options and filters do not apply)."""
    entries = read_photo_list(photos, check=True)
    sides = [int(s) for s in short_sides.split(",") if s.strip()] if isinstance(short_sides, str) \
        else [int(s) for s in short_sides]
    if not sides or shard_size <= 0 or size <= 0:
        raise ValueError("need at least one short side, size > 0 and shard size > 0")
    if max_side is not None and (not whole or max_side < 8):
        raise ValueError(f"--max-side scales whole photos: it needs --whole and at least 8 px, got {max_side}")
    crops, per_photo = [], []
    with progress("cropping photos", len(entries)) as advance:
        for entry in entries:
            if whole:
                one, stats = whole_photo(entry, max_side)
                kept = [one]
            else:
                kept, stats = photo_crops(entry, size=size, short_sides=sides, min_std=min_std,
                                          min_texture=min_texture, max_upscale=max_upscale)
            kept = _evenly(kept, max_per_photo)
            stats["kept"] = len(kept)
            crops.extend(kept)
            per_photo.append(stats)
            advance()
    if max_crops > 0 and len(crops) > max_crops:
        crops = _evenly(crops, max_crops)
        counts = {}
        for c in crops:
            counts[c.photo] = counts.get(c.photo, 0) + 1
        for s in per_photo:
            s["kept"] = counts.get(s["photo"], 0)
    _makedirs(output)
    shards = []
    with progress("writing shards", len(crops)) as advance:
        for start in range(0, len(crops), shard_size):
            name = f"clean-{start // shard_size:06d}.tar"
            chunk = crops[start:start + shard_size]
            write_shard(_join(output, name), ({"__key__": c.key, "png": encode_png(pixels01(c.pixels)),
                                               "json": c.meta()} for c in chunk))
            shards.append({"name": name, "count": len(chunk)})
            advance(len(chunk))
    index = {"kind": "clean-photos" if whole else "clean-crops", "whole": whole, "max_side": max_side,
             "photo_list": photos, "photos": entries, "size": size, "short_sides": sides,
             "min_std": min_std, "min_texture": min_texture, "max_upscale": max_upscale,
             "max_per_photo": max_per_photo, "max_crops": max_crops,
             "count": len(crops), "crops_per_photo": {s["photo"]: s["kept"] for s in per_photo},
             "per_photo": per_photo, "slugs": {s["slug"]: s["photo"] for s in per_photo}, "shards": shards}
    _write_json(_join(output, "index.json"), index)
    return index


def pixels01(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (H,W,3) -> (3,H,W) in [0,1]; `encode_png` rounds it back to the same bytes."""
    return torch.from_numpy(pixels).permute(2, 0, 1).float().div(255.0)


def degrade(input: str, output: str, operator: str, severity: str = "uniform", noise: float = 0.05, seed: int = 0,
            params: dict | None = None, batch_size: int = 64, progress: Callable = silent) -> dict:
    """Clean shards -> degraded shards (`<key>.png` measurement, or `.jpg` for jpeg and a small copy for downsample; `<key>.clean.png`, `<key>.json`).

    The json holds the operator dict (as the family's params_for gives it) plus a
    `provenance` object (photo, clean key, grid cell, how the measurement was stored):
    drop `provenance` before handing the dict to `pipeline.operators.build_operator`.
    `batch_size` (samples per operator call) does not change the results.
    """
    families, sev = parse_operators(operator), parse_severity(severity)
    overrides = dict(params or {})
    shards = list_shards(input)
    _makedirs(output)
    written, errors, counts = [], [], {}
    with progress("degrading shards", len(shards)) as advance:
        for shard in shards:
            samples = []
            for item in iter_samples(shard):
                if isinstance(item, SampleError):
                    errors.append(str(item))
                else:
                    samples.append(item)

            def produce():
                for start in range(0, len(samples), max(1, batch_size)):
                    for row in degrade_samples(samples[start:start + batch_size], seed, families, sev, noise,
                                               overrides):
                        counts[row["json"]["operator"]] = counts.get(row["json"]["operator"], 0) + 1
                        yield row

            name = shard.rstrip("/").rsplit("/", 1)[-1]
            name = "degraded-" + name[len("clean-"):] if name.startswith("clean-") else name
            n = write_shard(_join(output, name), produce())
            written.append({"name": name, "count": n})
            advance()
    index = {"kind": "degraded-crops", "input": input, "operator": operator, "severity": severity, "noise": noise,
             "seed": seed, "params": overrides, "count": sum(w["count"] for w in written),
             "per_operator": counts, "shards": written, "errors": errors, "measurement": MEASUREMENT_NOTE}
    _write_json(_join(output, "index.json"), index)
    return index


def export_corpus(input: str, output: str, quality: int = 95, progress: Callable = silent) -> dict:
    """Clean crop shards -> a compact export for `pipeline.corpus.crops.load_corpus_export`."""
    pixels, keys, metas, errors = [], [], [], []
    shards = list_shards(input)
    with progress("reading shards", len(shards)) as advance:
        for shard in shards:
            for s in iter_samples(shard):
                if isinstance(s, SampleError):
                    errors.append(str(s))
                    continue
                arr = (s.image01.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
                meta = dict(s.params or {})
                meta.setdefault("photo", s.key.rsplit("_", 3)[0])
                for k in ("short_side", "row", "col"):
                    meta.setdefault(k, -1)
                pixels.append(arr)
                keys.append(s.key)
                metas.append(meta)
            advance()
    return write_corpus_export(output, pixels, keys, metas, quality=quality,
                               extra={"source": input, "input_errors": errors})
