"""A JPEG file's quality is read exactly from its quantisation tables."""
import io

import numpy as np
import pytest
from PIL import Image

from pipeline.io.jpeg_tables import jpeg_quality


def _jpeg(**kw) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)).save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4", "4:2:2"])
def test_every_libjpeg_quality_reads_back_exactly(subsampling):
    for q in range(1, 101):
        found = jpeg_quality(_jpeg(quality=q, subsampling=subsampling))
        assert found == {"quality": q, "exact": True, "subsampling": subsampling}, q


def test_foreign_tables_give_the_nearest_quality_marked_inexact():
    found = jpeg_quality(_jpeg(qtables="web_high"))
    assert found["exact"] is False and 60 <= found["quality"] <= 100


def test_not_a_jpeg_is_none():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert jpeg_quality(buf.getvalue()) is None
    assert jpeg_quality(b"\xff\xd8 truncated") is None
