"""A JPEG file's quality, read exactly from its quantisation tables.

Why: a blind job restoring a JPEG archive needs each file's quality (issue 28), and the file
says it. libjpeg (PIL, most web tools) writes the ITU T.81 Annex K tables scaled by
`jpeg_quality_scaling`: at quality q the scale is 5000/q below 50 and 200 − 2q from 50 up, each
entry (v·scale + 50) // 100 clamped to 1..255. Matching a file's tables against the 100
candidates finds q exactly when it was written that way (`exact`). Another encoder (a camera's,
Photoshop's) writes its own tables; then the nearest IJG quality by the log-ratio of the entries
is reported with `exact` false, and the restore job says so in the row.
"""
from __future__ import annotations

import io
import math

from PIL import Image

# ITU T.81 Annex K.1: the example luminance and chrominance tables, row-major.
LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
        14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
        49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
          47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


def ijg_table(base: tuple, quality: int) -> list[int]:
    """The table libjpeg writes at `quality` (baseline: entries clamped to 1..255)."""
    q = min(max(int(quality), 1), 100)
    scale = 5000 // q if q < 50 else 200 - 2 * q
    return [min(max((v * scale + 50) // 100, 1), 255) for v in base]


def subsampling(image: Image.Image) -> str | None:
    """"4:2:0", "4:2:2", "4:4:4" from the components' sampling factors, or None when unusual."""
    layers = getattr(image, "layer", None)
    if not layers or len(layers) != 3:
        return None
    (_, h, v, _), *chroma = layers
    if any((c[1], c[2]) != (1, 1) for c in chroma):
        return None
    return {(1, 1): "4:4:4", (2, 1): "4:2:2", (2, 2): "4:2:0"}.get((h, v))


def jpeg_quality(data: bytes) -> dict | None:
    """{"quality", "exact", "subsampling"} of JPEG bytes; None when the bytes are not a JPEG with tables."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "JPEG":
                return None
            tables = {k: list(v) for k, v in getattr(img, "quantization", {}).items()}
            chroma_layout = subsampling(img)
    except Exception:  # noqa: BLE001 - an unreadable file is the decoder's error to report, not ours
        return None
    if 0 not in tables or len(tables[0]) != 64:
        return None
    luma, chroma = tables[0], tables.get(1)
    for q in range(1, 101):
        if ijg_table(LUMA, q) == luma and (chroma is None or ijg_table(CHROMA, q) == chroma):
            return {"quality": q, "exact": True, "subsampling": chroma_layout}

    def distance(q: int) -> float:
        ref = ijg_table(LUMA, q)
        return sum(abs(math.log(a / b)) for a, b in zip(luma, ref))
    best = min(range(1, 101), key=distance)
    return {"quality": best, "exact": False, "subsampling": chroma_layout}
