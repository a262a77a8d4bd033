"""The autoencoder on whole photos: any size in, the same size out, tiled exactly when memory asks for it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.models.model_store import load_latent_diffusion
from pipeline.models.whole_image import (MemoryRule, decode_image, encode_image, pad_to_multiple, padded_size,
                                         plan_tiles, reconstruct_image, widest_bytes_per_pixel)
from tests.helpers import tiny_autoencoder

MODELS = Path(__file__).resolve().parents[2] / "models"


def _photo(h: int = 301, w: int = 203, dtype=torch.float64, batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.rand(batch, 3, h, w, generator=g, dtype=dtype) * 2 - 1


def test_padding_reflects_at_the_bottom_right_and_replicates_short_sides():
    x = _photo(301, 203)
    p = pad_to_multiple(x, 4)
    assert padded_size(301, 203, 4) == (304, 204) and p.shape[-2:] == (304, 204)
    assert torch.equal(p[..., :301, :203], x)
    assert torch.equal(p[..., 301:, :203], x[..., [299, 298, 297], :])  # reflected rows
    assert torch.equal(p[..., :301, 203], x[..., 201])
    tiny = _photo(8, 9)
    q = pad_to_multiple(tiny, 16)  # 8 px of padding on an 8-px side cannot reflect
    assert q.shape[-2:] == (16, 16)
    assert torch.equal(q[..., 8:, :9], tiny[..., 7:8, :].expand(-1, -1, 8, -1))
    assert torch.equal(q[..., :8, 9:], tiny[..., :, [7, 6, 5, 4, 3, 2, 1]])
    assert torch.equal(pad_to_multiple(x[..., :300, :200], 4), x[..., :300, :200])
    with pytest.raises(ValueError, match="at least 8 px"):
        pad_to_multiple(_photo(7, 300), 4)


@pytest.mark.parametrize("h,w", [(301, 203), (8, 8), (9, 130)])
def test_any_size_comes_back_at_its_own_size(h, w):
    ae = tiny_autoencoder("s2d", scale=0.7)
    x = _photo(h, w)
    z = encode_image(ae, x)
    assert z.shape == (2, 3, -(-h // 4), -(-w // 4))
    with torch.no_grad():  # untiled, it is the model on the padded photo, cropped
        assert torch.equal(z, ae.encode(pad_to_multiple(x, 4)))
    assert reconstruct_image(ae, x).shape == x.shape
    with pytest.raises(ValueError, match="latent"):
        decode_image(ae, z, h + 4, w)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_tiled_equals_untiled_on_a_301x203_photo(dtype, tol):
    """float32: tiles and the whole image sum the convolutions in other orders (≈1e-6 here)."""
    ae = tiny_autoencoder("s2d", scale=0.7, dtype=dtype)
    x = _photo(dtype=dtype)
    z = encode_image(ae, x)
    z_tiled = encode_image(ae, x, tile=64)  # 5 × 4 tiles with a 20-px halo
    assert (z_tiled - z).abs().max() <= tol
    img = decode_image(ae, z, 301, 203)
    assert (decode_image(ae, z, 301, 203, tile=16) - img).abs().max() <= tol
    assert img.shape == x.shape


def test_memory_rule_tiles_what_does_not_fit_with_the_same_result():
    ae = tiny_autoencoder("s2d", scale=0.7)
    x = _photo()
    widest = widest_bytes_per_pixel(lambda p: (ae.encode(p),), x[..., :64, :64], [ae.model])
    assert widest == 12 * 8 / 4  # the space-to-depth: 12 channels at half resolution, float64
    rule = MemoryRule(budget_bytes=int(4.5 * widest * 100 * 100))
    assert rule.max_pixels(widest) == 100 * 100 and rule.tile_side(widest, 20, 4) == 60
    assert rule.tile_side(2 * widest, 20, 4) == 28  # two images in a batch: smaller tiles
    with pytest.raises(ValueError, match="no room"):
        MemoryRule(budget_bytes=int(4.5 * widest * 40 * 40)).tile_side(widest, 20, 4)
    xp = pad_to_multiple(x, 4)
    tiles = plan_tiles(lambda p: (ae.encode(p),), xp, [ae.model], [ae.model.encoder], rule=rule)
    assert len(tiles) == 11 * 8  # a batch of two 304×204 photos: 28-px cores, each box within the budget
    assert plan_tiles(lambda p: (ae.encode(p),), xp, [ae.model], [ae.model.encoder]) is None
    assert (encode_image(ae, x, rule=rule) - encode_image(ae, x)).abs().max() <= 1e-12


@pytest.mark.skipif(not (MODELS / "autoencoder" / "config.json").exists(), reason="shipped models not present")
def test_shipped_autoencoder_tiled_equals_untiled():
    ae = load_latent_diffusion(str(MODELS / "autoencoder"), str(MODELS / "ldm")).autoencoder
    x = _photo(dtype=torch.float32, batch=1)
    z = encode_image(ae, x)
    assert (encode_image(ae, x, tile=128) - z).abs().max() <= 1e-5
    img = decode_image(ae, z, 301, 203)
    assert (decode_image(ae, z, 301, 203, tile=32) - img).abs().max() <= 1e-5
