"""Corpus jobs: photos -> clean crop shards -> degraded shards, and the compact export.

The project trains its own small models on crops of photos shipped in Debian / PyPI
packages (see ../shared/data/README.md). These commands turn a photo list into WebDataset
shards at any fsspec URL, degrade them with per-key determinism, and pack clean crops into
a ~12 MB export a GPU box loads with numpy + pillow + pyarrow only.

Every output is a pure function of the command line: rerunning gives identical bytes.
"""
from __future__ import annotations

import json
from typing import Annotated

import typer

SEVERITY_HELP = "uniform (t ~ U[0,1] per key) | fixed:T | range:A,B (t ~ U[A,B] per key)"


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_console(), transient=False)


def _write_json(url: str, obj: dict) -> None:
    import fsspec

    with fsspec.open(url, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")


def _evenly(items: list, n: int) -> list:
    """n items spread evenly over the list (all of them when n <= 0 or n >= len): a cap that keeps variety."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[(i * len(items)) // n] for i in range(n)]


def _join(root: str, name: str) -> str:
    return root.rstrip("/") + "/" + name


def make_shards(
    photos: Annotated[str, typer.Option(help="photo list: a file, or train / dev for ../shared/data lists")],
    output: Annotated[str, typer.Option(help="output folder (local path or fsspec URL, e.g. s3://bucket/clean)")],
    size: Annotated[int, typer.Option(help="crop side in pixels")] = 64,
    short_sides: Annotated[str, typer.Option(help="comma-separated short sides the photo is resized to")] = "256,384,512",
    shard_size: Annotated[int, typer.Option(help="crops per shard")] = 1000,
    min_std: Annotated[float, typer.Option(help="drop crops whose pixel std ([0,1] units) is below this")] = 0.04,
    min_texture: Annotated[float, typer.Option(help="drop crops whose mean luminance |gradient| is below this")] = 0.01,
    max_upscale: Annotated[float, typer.Option(help="skip a short side above photo short side × this")] = 1.1,
    max_per_photo: Annotated[int, typer.Option(help="keep at most N crops per photo, evenly spread (0 = all)")] = 0,
    max_crops: Annotated[int, typer.Option(help="keep at most N crops in all, evenly spread (0 = all)")] = 0,
) -> dict:
    """Photos -> clean crop shards (`<key>.png`, `<key>.json`) + OUTPUT/index.json."""
    from pipeline.corpus.crops import photo_crops
    from pipeline.corpus.photos import read_photo_list
    from pipeline.io.shards import write_shard

    entries = read_photo_list(photos, check=True)
    sides = [int(s) for s in short_sides.split(",") if s.strip()]
    if not sides or shard_size <= 0 or size <= 0:
        raise typer.BadParameter("need at least one short side, size > 0 and shard size > 0")
    crops, per_photo = [], []
    with _progress() as bar:
        task = bar.add_task("cropping photos", total=len(entries))
        for entry in entries:
            kept, stats = photo_crops(entry, size=size, short_sides=sides, min_std=min_std,
                                      min_texture=min_texture, max_upscale=max_upscale)
            kept = _evenly(kept, max_per_photo)
            stats["kept"] = len(kept)
            crops.extend(kept)
            per_photo.append(stats)
            bar.advance(task)
    if max_crops > 0 and len(crops) > max_crops:
        crops = _evenly(crops, max_crops)
        counts = {}
        for c in crops:
            counts[c.photo] = counts.get(c.photo, 0) + 1
        for s in per_photo:
            s["kept"] = counts.get(s["photo"], 0)
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    fs.makedirs(root, exist_ok=True)
    shards = []
    with _progress() as bar:
        task = bar.add_task("writing shards", total=len(crops))
        for start in range(0, len(crops), shard_size):
            name = f"clean-{start // shard_size:06d}.tar"
            chunk = crops[start:start + shard_size]
            write_shard(_join(output, name), ({"__key__": c.key, "png": _png(c.pixels), "json": c.meta()}
                                              for c in chunk))
            shards.append({"name": name, "count": len(chunk)})
            bar.advance(task, len(chunk))
    index = {"kind": "clean-crops", "photo_list": photos, "photos": entries, "size": size, "short_sides": sides, "min_std": min_std, "min_texture": min_texture,
             "max_upscale": max_upscale, "max_per_photo": max_per_photo, "max_crops": max_crops,
             "count": len(crops), "crops_per_photo": {s["photo"]: s["kept"] for s in per_photo},
             "per_photo": per_photo, "slugs": {s["slug"]: s["photo"] for s in per_photo}, "shards": shards}
    _write_json(_join(output, "index.json"), index)
    _console().print(f"{len(crops)} crops from {len(entries)} photos in {len(shards)} shards -> {output}")
    return index


def _png(pixels) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def parse_severity(spec: str) -> tuple[float, float]:
    """`uniform` | `fixed:T` | `range:A,B` -> the interval t is drawn from (A == B: fixed)."""
    spec = spec.strip()
    try:
        if spec == "uniform":
            lo, hi = 0.0, 1.0
        elif spec.startswith("fixed:"):
            lo = hi = float(spec[6:])
        elif spec.startswith("range:"):
            lo, hi = (float(v) for v in spec[6:].split(","))
        else:
            raise ValueError
    except ValueError:
        raise typer.BadParameter(f"severity {spec!r}: expected {SEVERITY_HELP}") from None
    if not (0.0 <= lo <= hi <= 1.0):
        raise typer.BadParameter(f"severity {spec!r}: need 0 <= A <= B <= 1")
    return lo, hi


def parse_operators(spec: str) -> list[tuple[str, float]]:
    """`name` or a weighted mix `name=w,name=w` -> [(family, weight)], families checked."""
    from pipeline.operators import OPERATORS

    out = []
    for part in spec.split(","):
        name, _, w = part.strip().partition("=")
        if name not in OPERATORS:
            raise typer.BadParameter(f"operator {name!r}: known {sorted(OPERATORS)}")
        weight = float(w) if w else 1.0
        if not weight > 0:
            raise typer.BadParameter(f"operator {name!r}: weight must be > 0")
        out.append((name, weight))
    return out


def degrade(
    input: Annotated[str, typer.Option(help="clean shards: folder, glob, brace pattern or one tar (any fsspec URL)")],
    output: Annotated[str, typer.Option(help="output folder (local path or fsspec URL)")],
    operator: Annotated[str, typer.Option(help="family, or a weighted mix like gaussian_blur=2,inpainting=1")],
    severity: Annotated[str, typer.Option(help=SEVERITY_HELP)] = "uniform",
    noise: Annotated[float, typer.Option(help="measurement noise std in [0,1] units")] = 0.05,
    seed: Annotated[int, typer.Option(help="job seed; every key's draws derive from (seed, key)")] = 0,
    params: Annotated[str, typer.Option(help="JSON object of extra operator fields for every key")] = "",
    batch_size: Annotated[int, typer.Option(help="samples per operator call (does not change results)")] = 64,
) -> dict:
    """Clean shards -> degraded shards (`<key>.png` measurement, `<key>.clean.png`, `<key>.json`).

    The json holds the operator dict (as the family's params_for gives it) plus a
    `provenance` object (photo, clean key, grid cell, how the measurement was stored):
    drop `provenance` before handing the dict to `pipeline.operators.build_operator`.
    """
    from pipeline.corpus.degradation import MEASUREMENT_NOTE, degrade_samples
    from pipeline.io.samples import SampleError
    from pipeline.io.shards import iter_samples, list_shards, write_shard

    families, sev = parse_operators(operator), parse_severity(severity)
    overrides = json.loads(params) if params else {}
    if not isinstance(overrides, dict):
        raise typer.BadParameter("--params must be a JSON object")
    shards = list_shards(input)
    import fsspec

    fs, root = fsspec.core.url_to_fs(output)
    fs.makedirs(root, exist_ok=True)
    written, errors, counts = [], [], {}
    with _progress() as bar:
        task = bar.add_task("degrading shards", total=len(shards))
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
            bar.advance(task)
    index = {"kind": "degraded-crops", "input": input, "operator": operator, "severity": severity, "noise": noise,
             "seed": seed, "params": overrides, "count": sum(w["count"] for w in written),
             "per_operator": counts, "shards": written, "errors": errors, "measurement": MEASUREMENT_NOTE}
    _write_json(_join(output, "index.json"), index)
    _console().print(f"{index['count']} degraded samples {counts} in {len(written)} shards -> {output}"
                     + (f"; {len(errors)} input errors" if errors else ""))
    return index


def export_corpus(
    input: Annotated[str, typer.Option(help="clean crop shards (folder, glob or URL)")],
    output: Annotated[str, typer.Option(help="export folder: crops.jpegs + index.parquet + meta.json")],
    quality: Annotated[int, typer.Option(help="JPEG quality of the packed crops")] = 95,
) -> dict:
    """Clean crop shards -> a compact export for `pipeline.corpus.crops.load_corpus_export`."""
    import numpy as np

    from pipeline.corpus.crops import write_corpus_export
    from pipeline.io.samples import SampleError
    from pipeline.io.shards import iter_samples, list_shards

    pixels, keys, metas, errors = [], [], [], []
    shards = list_shards(input)
    with _progress() as bar:
        task = bar.add_task("reading shards", total=len(shards))
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
            bar.advance(task)
    meta = write_corpus_export(output, pixels, keys, metas, quality=quality,
                               extra={"source": input, "input_errors": errors})
    _console().print(f"exported {meta['count']} crops ({meta['bytes'] / 2**20:.1f} MiB JPEG q{quality}) -> {output}")
    return meta
