"""The WebDataset sample schema, decoding and validation.

A sample is the tar members sharing one key:

    <key>.png | .jpg | .jpeg | .webp   the degraded image (exactly one; 8-bit RGB)
    <key>.clean.png                    optional clean reference (same size; .jpg/.jpeg/.webp accepted)
    <key>.json                         optional object: operator parameters, seed, …
    <key>.mask.png                     optional inpainting mask (non-zero = missing), read by a blind job

Bad input never stops a job: every problem is a `SampleError` (a ValueError) with a `kind`
and a message naming the key, which the reader turns into an error row.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from pipeline.io.jpeg_tables import jpeg_quality

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
CLEAN_EXTS = tuple(f"clean.{e}" for e in IMAGE_EXTS)
PARAMS_EXT = "json"
MASK_EXT = "mask.png"
DEFAULT_MAX_PIXELS = 4096 * 4096

# What went wrong; a reader's error rows and counters group by these.
ERROR_KINDS = ("empty", "undecodable", "mode", "size", "pixel_bomb", "params", "nan", "duplicate",
               "missing_image", "corrupt_tar", "key", "too_large", "unsafe_key", "link", "noise")

__all__ = ["Sample", "SampleError", "decode_image", "parse_sample", "encode_png", "ERROR_KINDS",
           "IMAGE_EXTS", "CLEAN_EXTS", "DEFAULT_MAX_PIXELS"]


class SampleError(ValueError):
    """An invalid sample. `kind` is one of ERROR_KINDS; `key` and `shard` locate it."""

    def __init__(self, kind: str, key: str | None, message: str, shard: str | None = None):
        assert kind in ERROR_KINDS, kind
        self.kind, self.key, self.shard = kind, key, shard
        where = f"sample {key!r}" + (f" in {shard}" if shard else "")
        super().__init__(f"{where}: {message}")


@dataclass
class Sample:
    key: str
    shard: str
    image01: torch.Tensor            # (3,H,W) float32 in [0,1], the degraded image
    clean01: torch.Tensor | None     # (3,H,W) float32 in [0,1], or None
    params: dict[str, Any] | None    # the <key>.json object, or None
    image_sha256: str                # of the degraded image's bytes: lineage for reprocessing
    jpeg: dict | None = None         # a JPEG member's quality read from its tables (`jpeg_tables.jpeg_quality`)
    missing: torch.Tensor | None = None  # (H,W) bool: pixels marked missing by <key>.mask.png or alpha = 0
    missing_source: str | None = None    # "mask.png" | "alpha"


def _png_bit_depth(data: bytes) -> int | None:
    """Bit depth from the PNG IHDR chunk: PIL reads 16-bit RGB as 'RGB' and drops the low byte."""
    if len(data) >= 26 and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        return data[24]
    return None


def _to_rgb(img: Image.Image, key: str, allow_convert: bool) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if not allow_convert or mode not in ("L", "P", "LA", "RGBA", "PA", "CMYK"):
        why = "16-bit images are never truncated to 8 bits" if mode.startswith("I") or mode == "F" else \
            "set allow_convert to convert grey, palette, CMYK and opaque RGBA" \
            if mode in ("L", "P", "LA", "RGBA", "PA", "CMYK") else "unsupported"
        raise SampleError("mode", key, f"image mode {mode!r} is not 8-bit RGB ({why})")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("LA", "RGBA"):
        lo, _ = img.getchannel("A").getextrema()
        if lo < 255:
            raise SampleError("mode", key, f"image mode {mode!r} has transparent pixels; refusing to drop alpha")
    return img.convert("RGB")


def decode_image(data: bytes, key: str, *, expected_size: tuple[int, int] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, allow_convert: bool = False,
                 min_side: int | None = None, with_alpha: bool = False):
    """Validate and decode image bytes to a (3,H,W) float32 tensor in [0,1].

    The header is read first: a size above `max_pixels` is refused before any pixel is
    decoded (PIL's own decompression-bomb limit also counts, as an error). `expected_size`
    is (H, W); without it any size with both sides ≥ `min_side` is taken (photos are restored
    at their own size). Truncated files are errors even if PIL's LOAD_TRUNCATED_IMAGES is set.
    `with_alpha` returns (image, missing): missing is the (H,W) bool map of fully transparent
    pixels of an image with an alpha channel (None when it has none or is opaque), which a blind
    inpainting job reads as its mask; the image's mode rules then apply to its colour channels.
    """
    if not data:
        raise SampleError("empty", key, "zero-byte image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise SampleError("pixel_bomb", key, f"refused before decoding: {exc}") from None
    except Exception as exc:
        raise SampleError("undecodable", key, f"not a readable image ({type(exc).__name__}: {exc})") from None
    with img:
        w, h = img.size
        if w * h > max_pixels or w <= 0 or h <= 0:
            raise SampleError("pixel_bomb", key, f"header says {w}×{h} = {w * h} pixels, limit {max_pixels}; "
                                                 "refused before decoding")
        if expected_size is not None and (h, w) != tuple(expected_size):
            raise SampleError("size", key, f"size {h}×{w} (H×W), expected {expected_size[0]}×{expected_size[1]}")
        if min_side is not None and min(h, w) < min_side:
            raise SampleError("size", key, f"size {h}×{w} (H×W): a side under {min_side} px cannot be restored")
        if getattr(img, "n_frames", 1) != 1:
            raise SampleError("undecodable", key, f"animated image with {img.n_frames} frames")
        if _png_bit_depth(data) == 16:
            raise SampleError("mode", key, "16-bit PNG; 16-bit images are never truncated to 8 bits")
        if ImageFile.LOAD_TRUNCATED_IMAGES:
            raise SampleError("undecodable", key, "PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; refusing to "
                                                  "decode with truncation silently allowed")
        try:
            img.load()
            upright = ImageOps.exif_transpose(img)   # camera photos come out upright (docs/architecture.md)
        except Exception as exc:
            raise SampleError("undecodable", key, f"decoding failed ({type(exc).__name__}: {exc})") from None
        missing = None
        if with_alpha and (upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info):
            rgba = upright.convert("RGBA")
            alpha = np.asarray(rgba.getchannel("A"))
            if alpha.min() < 255:   # transparency is a mask the job may read; the colour channels stay
                missing = torch.from_numpy(alpha == 0)
                upright = rgba.convert("RGB")
        rgb = _to_rgb(upright, key, allow_convert)
        arr = np.asarray(rgb, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise SampleError("mode", key, f"decoded to array of shape {arr.shape}, expected (H,W,3)")
    image = torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).contiguous()
    return (image, missing) if with_alpha else image


def decode_mask(data: bytes, key: str, size: tuple[int, int]) -> torch.Tensor:
    """A `<key>.mask.png` member → (H,W) bool, True = missing (non-zero pixels, the convention of
    inpainting datasets: white marks the hole). It must match the image's size."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size[0] * img.size[1] > DEFAULT_MAX_PIXELS:
                raise SampleError("pixel_bomb", key, f"mask.png header says {img.size}; refused before decoding")
            if (img.size[1], img.size[0]) != tuple(size):
                raise SampleError("size", key, f"mask.png is {img.size[1]}×{img.size[0]} (H×W), the image "
                                               f"{size[0]}×{size[1]}")
            arr = np.asarray(img.convert("L"))
    except SampleError:
        raise
    except Exception as exc:
        raise SampleError("undecodable", key, f"mask.png is not a readable image ({type(exc).__name__}: {exc})") from None
    return torch.from_numpy(arr != 0)


def encode_png(image01: torch.Tensor) -> bytes:
    """(3,H,W) in [0,1] → 8-bit RGB PNG bytes (clipped, rounded); deterministic."""
    if image01.ndim != 3 or image01.shape[0] != 3:
        raise ValueError(f"expected a (3,H,W) image, got {tuple(image01.shape)}")
    arr = (image01.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _reject_constant(name: str):
    raise ValueError(name)


def _check_finite(obj: Any, path: str) -> str | None:
    """Path of the first non-finite number in a parsed JSON value (1e999 parses to inf)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return path
    if isinstance(obj, dict):
        for k, v in obj.items():
            if (bad := _check_finite(v, f"{path}.{k}")) is not None:
                return bad
    if isinstance(obj, list):
        for i, v in enumerate(obj):
            if (bad := _check_finite(v, f"{path}[{i}]")) is not None:
                return bad
    return None


MAX_JSON_DEPTH = 32   # operator dicts nest two or three levels; deeper is hostile


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in JSON text (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def parse_params(data: bytes, key: str) -> dict[str, Any]:
    """The <key>.json object: valid UTF-8 JSON, an object nested at most MAX_JSON_DEPTH, every number finite."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SampleError("params", key, f"{PARAMS_EXT} is not UTF-8 ({exc})") from None
    if (depth := json_depth(text)) > MAX_JSON_DEPTH:
        raise SampleError("params", key, f"{PARAMS_EXT} nests {depth} levels deep, limit {MAX_JSON_DEPTH}")
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise SampleError("params", key, f"{PARAMS_EXT} nests too deeply to parse") from None
    except ValueError as exc:
        if str(exc) in ("NaN", "Infinity", "-Infinity"):
            raise SampleError("nan", key, f"{PARAMS_EXT} contains {exc}") from None
        raise SampleError("params", key, f"{PARAMS_EXT} does not parse ({exc})") from None
    if not isinstance(obj, dict):
        raise SampleError("params", key, f"{PARAMS_EXT} must be an object, got {type(obj).__name__}")
    if (bad := _check_finite(obj, "params")) is not None:
        raise SampleError("nan", key, f"{PARAMS_EXT} has a non-finite number at {bad}")
    return obj


def parse_sample(raw: dict[str, Any], shard: str, *, expected_size: tuple[int, int] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, allow_convert: bool = False,
                 min_side: int | None = None, alpha_masks: bool = False) -> Sample:
    """Build a `Sample` from a webdataset-style dict (`__key__`, extension → bytes).

    Unknown extensions are ignored. The clean reference may not be smaller than the degraded image;
    the read stage checks it has the restored size (the image's own, or `downsample`'s larger one).
    `alpha_masks` (a blind inpainting job) reads fully transparent pixels as missing instead of
    refusing the image; a `mask.png` member is read as the missing map either way.
    """
    key = raw.get("__key__")
    if not isinstance(key, str) or not key:
        raise SampleError("key", None, f"missing or empty __key__ (extensions {sorted(raw)})", shard)
    try:
        found = [e for e in IMAGE_EXTS if e in raw]
        if not found:
            raise SampleError("missing_image", key, f"no degraded image (.{'/.'.join(IMAGE_EXTS)}); "
                                                    f"members: {sorted(k for k in raw if not k.startswith('__'))}")
        if len(found) > 1:
            raise SampleError("duplicate", key, f"several degraded images: {found}")
        data = bytes(raw[found[0]])
        limits = dict(max_pixels=max_pixels, allow_convert=allow_convert)
        image, missing = decode_image(data, key, expected_size=expected_size, min_side=min_side,
                                      with_alpha=True, **limits) if alpha_masks else \
            (decode_image(data, key, expected_size=expected_size, min_side=min_side, **limits), None)
        source = "alpha" if missing is not None else None
        if MASK_EXT in raw:
            missing, source = decode_mask(bytes(raw[MASK_EXT]), key, tuple(image.shape[1:])), MASK_EXT
        cleans = [e for e in CLEAN_EXTS if e in raw]
        if len(cleans) > 1:
            raise SampleError("duplicate", key, f"several clean references: {cleans}")
        clean = None
        if cleans:
            clean = decode_image(bytes(raw[cleans[0]]), f"{key}.{cleans[0]}", **limits)
            if any(c < i for c, i in zip(clean.shape[1:], image.shape[1:])):   # larger: a super-resolution reference
                raise SampleError("size", key, f"clean reference {tuple(clean.shape[1:])} is smaller than the degraded "
                                               f"image {tuple(image.shape[1:])} (H×W)")
        params = parse_params(bytes(raw[PARAMS_EXT]), key) if PARAMS_EXT in raw else None
    except SampleError as exc:
        exc.shard = exc.shard or shard
        if exc.key != key:  # a clean-reference error names the member; rows group by sample key
            exc.key = key
        raise
    return Sample(key=key, shard=shard, image01=image, clean01=clean, params=params,
                  image_sha256=hashlib.sha256(data).hexdigest(),
                  jpeg=jpeg_quality(data) if found[0] in ("jpg", "jpeg") else None, missing=missing,
                  missing_source=source)
