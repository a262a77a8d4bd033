"""`flash-restore make-shards | degrade | export-corpus`: the corpus jobs (`pipeline.corpus.shard_jobs`).

Photos -> clean crop shards -> degraded shards, and the compact export; every output is a
pure function of the command line. Here: the options, a progress bar and a one-line summary.
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Annotated, Optional

import typer
from rich.console import Console

SEVERITY_HELP = "uniform (t ~ U[0,1] per key) | fixed:T | range:A,B (t ~ U[A,B] per key)"
console = Console(stderr=True)


@contextmanager
def _bar(description: str, total: int):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def make_shards(
    photos: Annotated[str, typer.Option(help="photo list: a file, or train / dev for the lists in data/photos")],
    output: Annotated[str, typer.Option(help="output folder (local path or fsspec URL, e.g. s3://bucket/clean)")],
    size: Annotated[int, typer.Option(help="crop side in pixels")] = 64,
    short_sides: Annotated[str, typer.Option(help="comma-separated short sides the photo is resized to")] = "256,384,512",
    shard_size: Annotated[int, typer.Option(help="crops per shard")] = 1000,
    min_std: Annotated[float, typer.Option(help="drop crops whose pixel std ([0,1] units) is below this")] = 0.04,
    min_texture: Annotated[float, typer.Option(help="drop crops whose mean luminance |gradient| is below this")] = 0.01,
    max_upscale: Annotated[float, typer.Option(help="skip a short side above photo short side × this")] = 1.1,
    max_per_photo: Annotated[int, typer.Option(help="keep at most N crops per photo, evenly spread (0 = all)")] = 0,
    max_crops: Annotated[int, typer.Option(help="keep at most N crops in all, evenly spread (0 = all)")] = 0,
    whole: Annotated[bool, typer.Option("--whole", help="one sample per photo at its own size, not crops")] = False,
    max_side: Annotated[Optional[int], typer.Option(help="with --whole: scale the long side down to at most N px")]
    = None,
) -> dict:
    """Photos -> clean crop shards (`<key>.png`, `<key>.json`) + OUTPUT/index.json."""
    from pipeline.corpus import shard_jobs   # lazy: torch loads on use, `--help` stays fast

    try:
        index = shard_jobs.make_shards(photos, output, size, short_sides, shard_size, min_std, min_texture,
                                       max_upscale, max_per_photo, max_crops, progress=_bar, whole=whole,
                                       max_side=max_side)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"{index['count']} {'photos' if whole else 'crops'} from {len(index['photos'])} photos in {len(index['shards'])} shards "
                  f"-> {output}")
    return index


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
    """Clean shards -> degraded shards (`<key>.png` measurement, or `.jpg` for jpeg and a small copy for downsample; `<key>.clean.png`, `<key>.json`).

    The json holds the operator dict plus a `provenance` object: drop `provenance` before
    handing the dict to `pipeline.operators.build_operator`.
    """
    from pipeline.corpus import shard_jobs

    overrides = json.loads(params) if params else {}
    if not isinstance(overrides, dict):
        raise typer.BadParameter("--params must be a JSON object")
    try:
        index = shard_jobs.degrade(input, output, operator, severity, noise, seed, overrides, batch_size,
                                   progress=_bar)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    errors = index["errors"]
    console.print(f"{index['count']} degraded samples {index['per_operator']} in {len(index['shards'])} shards "
                  f"-> {output}" + (f"; {len(errors)} input errors" if errors else ""))
    return index


def export_corpus(
    input: Annotated[str, typer.Option(help="clean crop shards (folder, glob or URL)")],
    output: Annotated[str, typer.Option(help="export folder: crops.jpegs + index.parquet + meta.json")],
    quality: Annotated[int, typer.Option(help="JPEG quality of the packed crops")] = 95,
) -> dict:
    """Clean crop shards -> a compact export for `pipeline.corpus.crops.load_corpus_export`."""
    from pipeline.corpus import shard_jobs

    meta = shard_jobs.export_corpus(input, output, quality, progress=_bar)
    console.print(f"exported {meta['count']} crops ({meta['bytes'] / 2**20:.1f} MiB JPEG q{quality}) -> {output}")
    return meta
