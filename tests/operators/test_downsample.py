"""Downsampling: PIL's own small copy, an exact adjoint of U∘D, and the lift the read stage applies."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.operators import Downsample
from pipeline.sampling.seeding import generators


def test_the_small_copy_is_pils_bicubic_and_area_resize():
    x = torch.rand(1, 3, 64, 48, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u8 = (x[0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    x8 = torch.from_numpy(u8).permute(2, 0, 1)[None].double() / 255
    for filt, pil in (("bicubic", Image.Resampling.BICUBIC), ("area", Image.Resampling.BOX)):
        op = Downsample([Downsample.params_for(0.0, scale=4.0, filter=filt)])
        small = op.small(x8)[0].clamp(0, 1)
        ref = np.asarray(Image.fromarray(u8).resize((12, 16), pil), np.float64).transpose(2, 0, 1) / 255
        assert small.shape == (3, 16, 12)
        assert np.abs(small.numpy() - ref).max() * 255 < 1.0      # PIL rounds its uint8 result


def test_scale_follows_severity_and_the_restored_size_checks_the_copy():
    assert Downsample.params_for(1.0)["scale"] == 4.0 and Downsample.params_for(0.5)["scale"] == 2.0
    assert Downsample.severity_of(2.0) == pytest.approx(0.5)
    op = Downsample([Downsample.params_for(0.0, scale=4.0)], ["k"])
    assert op.restored_size(75, 50) == (300, 200)
    sized = Downsample([Downsample.params_for(0.0, scale=4.0, size=[301, 203])], ["k"])
    assert sized.restored_size(75, 51) == (301, 203)
    with pytest.raises(ValueError, match="k: a 70×50 image is not the ×4 copy"):
        sized.restored_size(70, 50)
    with pytest.raises(ValueError, match="size"):
        Downsample.params_for(0.5, size=[0, 3])


def test_the_archive_holds_the_small_copy_and_the_measurement_is_its_lift():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    op = Downsample([Downsample.params_for(1.0, 0.05, i, size=[32, 32]) for i in range(2)], ["a", "b"])
    files = op.archive_files(x, generators(0, op.keys, "degradation"))
    y = op.measurement(x, generators(0, op.keys, "degradation"))
    for (ext, data), yi in zip(files, y):
        small = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)), np.float32)).permute(2, 0, 1) / 255
        assert ext == "png" and small.shape == (3, 8, 8)
        lifted = op.lift(small[None], (32, 32))[0]
        assert (lifted - yi).abs().max() < 1.5 / 255     # the PNG's rounding, lifted
