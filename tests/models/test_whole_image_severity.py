"""The severity encoder on whole photos: ẑ, the σ̂² map and σ̂², equal tiled and untiled."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.model_store import load_model
from pipeline.models.severity import SeverityEncoder
from pipeline.models.whole_image import MemoryRule, pad_to_multiple
from pipeline.models.whole_image_severity import severity_image
from tests.helpers import tiny_autoencoder

MODELS = Path(__file__).resolve().parents[2] / "models"


def _photo(dtype=torch.float64, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return torch.rand(batch, 3, 301, 203, generator=g, dtype=dtype) * 2 - 1


def _encoder(bands: int, dtype=torch.float64) -> SeverityEncoder:
    """A tiny severity encoder whose head is not at its constant start (its last layer is zero there)."""
    enc = SeverityEncoder.from_autoencoder(tiny_autoencoder("s2d", scale=0.7, dtype=dtype), head_bands=bands)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in enc.variance_head.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g, dtype=dtype))
    return enc.eval()


@pytest.mark.parametrize("bands", [0, 3])
def test_untiled_is_the_encoder_on_the_padded_photo(bands):
    enc = _encoder(bands)
    y = _photo()
    got = severity_image(enc, y)
    with torch.no_grad():
        z_hat, sigma2 = enc(pad_to_multiple(y, 4))
    assert torch.equal(got.z_hat, z_hat) and torch.allclose(got.sigma2, sigma2, rtol=1e-12, atol=0)
    assert got.z_hat.shape == got.sigma2_map.shape == (2, 3, 76, 51) and (got.height, got.width) == (301, 203)
    assert torch.allclose(got.sigma2_map.flatten(1).mean(dim=1), got.sigma2, rtol=1e-12, atol=0)
    assert got.sigma2[0] != got.sigma2[1]  # one σ̂² per photo


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("bands", [0, 3])
def test_tiled_equals_untiled_on_a_301x203_photo(bands, dtype, tol):
    enc = _encoder(bands, dtype)
    y = _photo(dtype)
    whole, tiled = severity_image(enc, y), severity_image(enc, y, tile=64)
    assert (tiled.z_hat - whole.z_hat).abs().max() <= tol
    assert ((tiled.sigma2_map - whole.sigma2_map).abs() / whole.sigma2_map).max() <= tol
    assert ((tiled.sigma2 - whole.sigma2).abs() / whole.sigma2).max() <= tol


def test_memory_rule_picks_tiles_with_the_same_result():
    enc = _encoder(0)
    y = _photo()
    small = severity_image(enc, y, rule=MemoryRule(budget_bytes=2_000_000))
    whole = severity_image(enc, y)
    assert (small.z_hat - whole.z_hat).abs().max() <= 1e-12
    assert torch.allclose(small.sigma2, whole.sigma2, rtol=1e-12, atol=0)


@pytest.mark.skipif(not (MODELS / "severity-gaussian_blur" / "config.json").exists(), reason="shipped models absent")
def test_shipped_severity_encoder_tiled_equals_untiled():
    enc = load_model(str(MODELS / "severity-gaussian_blur"), cls=SeverityEncoder)
    y = _photo(torch.float32, batch=1)
    whole, tiled = severity_image(enc, y), severity_image(enc, y, tile=128)
    assert (tiled.z_hat - whole.z_hat).abs().max() <= 1e-5
    assert abs(tiled.sigma2.item() / whole.sigma2.item() - 1) <= 1e-5
