"""JPEG: the differentiable codec stays close to libjpeg, and the archive holds libjpeg's real file."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io.jpeg_tables import jpeg_quality
from pipeline.operators import Jpeg
from pipeline.quality.metrics import psnr
from pipeline.sampling.seeding import generators
from pipeline.training.data import load_crops


@pytest.fixture(scope="module")
def crops():
    images, _ = load_crops("data/corpus/dev", 32)
    return images.float() / 255


@pytest.mark.parametrize("quality,subsampling", [(5, "4:2:0"), (10, "4:2:0"), (50, "4:2:0"), (30, "4:4:4")])
def test_the_differentiable_codec_is_close_to_libjpeg(crops, quality, subsampling):
    """Mean difference under 1 grey level and ≥ 40 dB against libjpeg's decoded file (docs/method.md §4)."""
    op = Jpeg([Jpeg.params_for(0.5, 0.0, i, quality=quality, subsampling=subsampling) for i in range(len(crops))])
    real = op.measurement(crops, generators(0, op.keys, "degradation"))
    approx = op(crops)
    assert (real - approx).abs().mean() * 255 < 1.0
    assert float(psnr(approx, real).mean()) > 40.0
    assert float(psnr(real, crops).mean()) < 33.0   # the codec did damage, so closeness is not trivial


def test_quality_follows_severity_and_an_explicit_quality_wins():
    assert Jpeg.params_for(0.0)["quality"] == 50 and Jpeg.params_for(1.0)["quality"] == 5
    assert Jpeg.params_for(0.9, quality=77)["quality"] == 77
    assert Jpeg.severity_of(10) == pytest.approx(40 / 45)
    with pytest.raises(ValueError, match="quality"):
        Jpeg.params_for(0.5, quality=0)
    with pytest.raises(ValueError, match="subsampling"):
        Jpeg.params_for(0.5, subsampling="4:1:1")


def test_the_archive_holds_libjpegs_file_and_the_measurement_is_its_decoding(crops):
    op = Jpeg([Jpeg.params_for(0.5, 0.02, 3, quality=12)] * 2, ["a", "b"])
    files = op.archive_files(crops[:2], generators(0, op.keys, "degradation"))
    y = op.measurement(crops[:2], generators(0, op.keys, "degradation"))
    for (ext, data), yi in zip(files, y):
        assert ext == "jpg" and jpeg_quality(data) == {"quality": 12, "exact": True, "subsampling": "4:2:0"}
        decoded = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32)).permute(2, 0, 1) / 255
        assert torch.equal(decoded, yi)


def test_guidance_gets_a_gradient_through_the_quantiser(crops):
    x = crops[:2].clone().requires_grad_(True)
    op = Jpeg([Jpeg.params_for(0.8)] * 2)
    target = op(crops[:2].flip(-1)).detach()
    (op(x) - target).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
