"""σ̂² per region: the severity encoder on each region tile's window."""
from __future__ import annotations

import pytest
import torch

from pipeline.models.region_severity import region_sigma2
from pipeline.models.severity import SeverityEncoder
from pipeline.sampling.tiles import Tiling
from tests.helpers import tiny_autoencoder


def _encoder(dtype=torch.float64) -> SeverityEncoder:
    enc = SeverityEncoder.from_autoencoder(tiny_autoencoder("s2d", scale=0.7, dtype=dtype))
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in enc.variance_head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=dtype))
    return enc.eval()


def test_each_region_is_the_encoder_on_its_window():
    enc = _encoder()
    y = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    layout = Tiling(4, "overlap", 2).layout(10, 14)
    got = region_sigma2(enc, y, layout, batch=3)        # batches that cut across photos
    assert got.shape == (2, layout.y.count, layout.x.count)
    with torch.no_grad():
        for b in range(2):
            for i, oy in enumerate(layout.y.origins):
                for j, ox in enumerate(layout.x.origins):
                    _, want = enc(y[b:b + 1, :, 4 * oy:4 * oy + 16, 4 * ox:4 * ox + 16])
                    assert torch.allclose(got[b, i, j], want[0], rtol=1e-12, atol=0), (b, i, j)


def test_one_region_photo_is_the_whole_photo_and_partners_do_not_matter():
    enc = _encoder()
    y = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    layout = Tiling(4).layout(4, 4)
    with torch.no_grad():
        _, whole = enc(y)
    got = region_sigma2(enc, y, layout)
    assert got.shape == (3, 1, 1) and torch.allclose(got.flatten(), whole, rtol=1e-12, atol=0)
    alone = region_sigma2(enc, y[1:2], layout)
    assert torch.allclose(alone.flatten(), got[1].flatten(), rtol=1e-12, atol=0)


def test_blur_on_one_side_raises_that_side():
    """A photo sharp on the left and flattened on the right: the right regions' σ̂² differ from
    the left's, and a uniform photo gives every region one σ̂² (up to its content)."""
    enc = _encoder()
    g = torch.Generator().manual_seed(3)
    y = torch.rand(1, 3, 16, 48, generator=g, dtype=torch.float64) * 2 - 1
    y[..., 32:] = y[..., 32:].mean(dim=(-2, -1), keepdim=True)
    got = region_sigma2(enc, y, Tiling(4, "overlap", 0).layout(4, 12))
    assert got[0, 0, 0] != got[0, 0, 2]


def test_the_photo_must_be_the_layouts_canvas():
    enc = _encoder()
    with pytest.raises(ValueError, match="canvas"):
        region_sigma2(enc, torch.zeros(1, 3, 40, 40, dtype=torch.float64), Tiling(4).layout(8, 8))
