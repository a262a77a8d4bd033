"""Photos -> clean fixed-size crops, and the compact corpus export a GPU box can load.

Models train on small crops of real photos at several scales (short side 256/384/512),
cut on a non-overlapping grid. The wallpapers are smooth, so a crop must pass two tests to
be kept: enough contrast (std) and enough texture (mean absolute gradient); a smooth sky
gradient has contrast but no texture and teaches a restorer nothing.

Everything here is deterministic: photos in list order, scales in the given order, grid
cells row-major, so the same inputs give the same crops (and the same bytes downstream).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageOps

from pipeline.corpus.photos import photo_slug, resolve_photo

DEFAULT_SHORT_SIDES = (256, 384, 512)
DEFAULT_MIN_STD = 0.04       # per-crop std of all channels, pixels in [0,1]
DEFAULT_MIN_TEXTURE = 0.01  # mean |∇| of luminance per pixel, in [0,1] units
DEFAULT_MAX_UPSCALE = 1.1    # larger upscales make blurry "clean" crops: skip those scales


@dataclass
class Crop:
    """One clean crop and where it came from (the key alone names the photo slug)."""

    key: str
    photo: str
    short_side: int
    row: int
    col: int
    pixels: np.ndarray = field(repr=False)  # uint8 (size, size, 3)
    std: float = 0.0
    texture: float = 0.0

    def meta(self) -> dict:
        return {"photo": self.photo, "short_side": self.short_side, "row": self.row, "col": self.col,
                "std": round(self.std, 5), "texture": round(self.texture, 5)}


def crop_key(slug: str, short_side: int, row: int, col: int) -> str:
    return f"{slug}_s{short_side}_{row:02d}_{col:02d}"


def parse_crop_key(key: str) -> tuple[str, int, int, int]:
    """Inverse of crop_key: (photo slug, short side, row, col)."""
    slug, short, row, col = key.rsplit("_", 3)
    return slug, int(short.lstrip("s")), int(row), int(col)


def load_photo(location: str) -> Image.Image:
    """An RGB image from a local path or fsspec URL (EXIF orientation applied, alpha dropped)."""
    with fsspec.open(location, "rb") as f:
        data = f.read()
    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img)
    return img.convert("RGB")


def resize_short_side(img: Image.Image, short: int) -> Image.Image:
    """Resize (LANCZOS) so the short side is `short`, keeping the aspect ratio."""
    w, h = img.size
    scale = short / min(w, h)
    size = (short, max(short, round(h * scale))) if w <= h else (max(short, round(w * scale)), short)
    return img.resize(size, Image.Resampling.LANCZOS)


def crop_stats(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(std, texture) per crop of a uint8 (N, s, s, 3) stack, both in [0,1] units."""
    x = crops.astype(np.float64) / 255.0
    std = x.reshape(len(x), -1).std(axis=1)
    lum = x @ np.array([0.299, 0.587, 0.114])
    gx = np.abs(np.diff(lum, axis=2)).mean(axis=(1, 2))
    gy = np.abs(np.diff(lum, axis=1)).mean(axis=(1, 2))
    return std, (gx + gy) / 2.0


def grid_crops(arr: np.ndarray, size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Non-overlapping size×size cells of an (H, W, 3) array, grid centred, row-major."""
    h, w = arr.shape[:2]
    rows, cols = h // size, w // size
    top, left = (h - rows * size) // 2, (w - cols * size) // 2
    cells, where = [], []
    for r in range(rows):
        for c in range(cols):
            y, x = top + r * size, left + c * size
            cells.append(arr[y:y + size, x:x + size])
            where.append((r, c))
    stack = np.stack(cells) if cells else np.zeros((0, size, size, 3), np.uint8)
    return stack, where


def photo_crops(entry: str, *, size: int = 64, short_sides: Sequence[int] = DEFAULT_SHORT_SIDES,
                min_std: float = DEFAULT_MIN_STD, min_texture: float = DEFAULT_MIN_TEXTURE,
                max_upscale: float = DEFAULT_MAX_UPSCALE) -> tuple[list[Crop], dict]:
    """The kept crops of one photo-list entry, plus counts (total, kept, skipped scales)."""
    img = load_photo(resolve_photo(entry))
    slug = photo_slug(entry)
    kept: list[Crop] = []
    stats = {"photo": entry, "slug": slug, "width": img.size[0], "height": img.size[1],
             "cells": 0, "kept": 0, "skipped_short_sides": []}
    for short in short_sides:
        if short > min(img.size) * max_upscale:
            stats["skipped_short_sides"].append(int(short))
            continue
        arr = np.asarray(resize_short_side(img, short))
        cells, where = grid_crops(arr, size)
        std, tex = crop_stats(cells) if len(cells) else (np.zeros(0), np.zeros(0))
        stats["cells"] += len(cells)
        for i, (r, c) in enumerate(where):
            if std[i] >= min_std and tex[i] >= min_texture:
                kept.append(Crop(crop_key(slug, short, r, c), entry, int(short), r, c,
                                 np.ascontiguousarray(cells[i]), float(std[i]), float(tex[i])))
    stats["kept"] = len(kept)
    return kept, stats


def whole_photo(entry: str, max_side: int | None = None) -> tuple[Crop, dict]:
    """One photo-list entry at its own size, upright (EXIF applied), as one `Crop` whose key is
    `<slug>_whole`; with `max_side` scaled down (never up, LANCZOS) so its long side is at most that."""
    img = load_photo(resolve_photo(entry))
    slug = photo_slug(entry)
    stats = {"photo": entry, "slug": slug, "width": img.size[0], "height": img.size[1], "cells": 1, "kept": 1,
             "skipped_short_sides": []}
    if max_side is not None and max(img.size) > max_side:
        scale = max_side / max(img.size)
        img = img.resize((max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))),
                         Image.Resampling.LANCZOS)
    arr = np.array(img)   # a writable copy: torch refuses read-only buffers
    std, tex = crop_stats(arr[None])
    crop = Crop(f"{slug}_whole", entry, int(min(img.size)), 0, 0, arr, float(std[0]), float(tex[0]))
    return crop, stats


def iter_crops(entries: Sequence[str], **kwargs) -> Iterator[tuple[list[Crop], dict]]:
    """photo_crops for each entry, in list order."""
    for e in entries:
        yield photo_crops(e, **kwargs)


# --- compact export ------------------------------------------------------------------
# Layout of an export folder: crops.jpegs (concatenated JPEG files), index.parquet (key,
# photo, offset, length, short_side, row, col) and meta.json. Only numpy, pillow and
# pyarrow are needed to load it: a GPU box gets a ~12 MB corpus with no shard tooling.
EXPORT_BIN, EXPORT_INDEX, EXPORT_META = "crops.jpegs", "index.parquet", "meta.json"


def encode_jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=True)
    return buf.getvalue()


def write_corpus_export(output: str, pixels: Sequence[np.ndarray], keys: Sequence[str],
                        metas: Sequence[dict], quality: int = 95, extra: dict | None = None) -> dict:
    """Write an export folder at a local path or fsspec URL; returns its meta dict."""
    blobs = [encode_jpeg(p, quality) for p in pixels]
    offsets = np.cumsum([0] + [len(b) for b in blobs])[:-1]
    table = pa.table({
        "key": pa.array(list(keys), pa.string()),
        "photo": pa.array([m["photo"] for m in metas], pa.string()).dictionary_encode(),
        "offset": pa.array(offsets.tolist(), pa.int64()),
        "length": pa.array([len(b) for b in blobs], pa.int32()),
        "short_side": pa.array([int(m["short_side"]) for m in metas], pa.int16()),
        "row": pa.array([int(m["row"]) for m in metas], pa.int16()),
        "col": pa.array([int(m["col"]) for m in metas], pa.int16()),
    })
    data = b"".join(blobs)
    fs, root = fsspec.core.url_to_fs(output)
    fs.makedirs(root, exist_ok=True)
    with fs.open(f"{root}/{EXPORT_BIN}", "wb") as f:
        f.write(data)
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    with fs.open(f"{root}/{EXPORT_INDEX}", "wb") as f:
        f.write(sink.getvalue())
    shape = list(np.asarray(pixels[0]).shape) if len(pixels) else []
    meta = {"format": "flash-restore-corpus-export/1", "count": len(blobs), "crop_shape": shape,
            "jpeg_quality": quality, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
            "photos": sorted({m["photo"] for m in metas}), **(extra or {})}
    with fs.open(f"{root}/{EXPORT_META}", "w") as f:
        f.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def load_corpus_export(path: str) -> tuple[np.ndarray, list[str], list[str]]:
    """Load an export folder: (uint8 (N, s, s, 3) array, keys, photos) in export order."""
    fs, root = fsspec.core.url_to_fs(path)
    root = root.rstrip("/")
    if root.endswith(EXPORT_META) or root.endswith(EXPORT_INDEX) or root.endswith(EXPORT_BIN):
        root = os.path.dirname(root)
    with fs.open(f"{root}/{EXPORT_INDEX}", "rb") as f:
        table = pq.read_table(io.BytesIO(f.read()))
    with fs.open(f"{root}/{EXPORT_BIN}", "rb") as f:
        data = f.read()
    cols = table.to_pydict()
    images = [np.asarray(Image.open(io.BytesIO(data[o:o + n])).convert("RGB"))
              for o, n in zip(cols["offset"], cols["length"])]
    arr = np.stack(images) if images else np.zeros((0, 64, 64, 3), np.uint8)
    return arr, list(cols["key"]), [str(p) for p in cols["photo"]]
