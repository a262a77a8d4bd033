"""Exact tiling: receptive reach, the tile grid, and GroupNorm statistics pooled over the whole image."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.models.tiled_groupnorm import NotTileable, pooled_tiles, reach, tile_grid
from tests.helpers import tiny_kl, tiny_s2d

H, W = 304, 204  # a 301×203 photo padded to the f = 4 grid


def _image(dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(2, 3, H, W, generator=g, dtype=dtype) * 2 - 1


def _stitched_encoder(model, x, tiles) -> torch.Tensor:
    out = torch.zeros(x.shape[0], 2 * model.config.latent_channels, H // 4, W // 4, dtype=x.dtype)
    for t, (o,) in pooled_tiles(lambda p: (model.encoder(p),), x, [model], tiles):
        out[..., t.core[0] // 4:t.core[2] // 4, t.core[1] // 4:t.core[3] // 4] = o
    return out


def test_reach_of_the_space_to_depth_autoencoder():
    model = tiny_s2d()
    # encoder: conv_in 2 + ResBlock 4 (at 2 px per cell) + strided conv 2 + ResBlock 8 + out conv 4 (at 4 px)
    assert reach([model.encoder]) == reach([model.encoder.net])
    assert (reach([model.encoder]).radius, reach([model.encoder]).alignment) == (20.0, 4)
    dec = reach([model.decoder])  # latent pixels; the decoder only upsamples, so any latent origin works
    assert dec.alignment == 1 and dec.halo == 7
    assert reach([nn.Conv2d(1, 1, 5, padding=2, dilation=1), nn.Conv2d(1, 1, 3, padding=2, dilation=2)]).radius == 4


def test_global_layers_are_refused():
    with pytest.raises(NotTileable, match="receptive field"):
        reach([tiny_kl().encoder])  # diffusers blocks with attention: run untiled
    with pytest.raises(NotTileable, match="zero-padded"):
        reach([nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect")])


def test_tile_cores_partition_the_image_and_boxes_hold_the_halo_in_one_shape():
    tiles = tile_grid(H, W, 64, 20, 4)
    cover = torch.zeros(H, W, dtype=torch.int64)
    for t in tiles:
        cover[t.core[0]:t.core[2], t.core[1]:t.core[3]] += 1
        assert t.box[0] <= max(t.core[0] - 20, 0) and t.box[1] <= max(t.core[1] - 20, 0)
        assert t.box[2] >= min(t.core[2] + 20, H) and t.box[3] >= min(t.core[3] + 20, W)
        assert (t.box[2] - t.box[0], t.box[3] - t.box[1]) == (104, 104) and all(v % 4 == 0 for v in t.box)
    assert len(tiles) == 5 * 4 and bool((cover == 1).all())
    assert {t.box for t in tile_grid(40, 300, 64, 20, 4)} >= {(0, 0, 40, 104), (0, 196, 40, 300)}
    with pytest.raises(ValueError, match="multiples of 4"):
        tile_grid(H, W, 62, 20, 4)


def test_tiled_encoder_equals_untiled_and_needs_the_whole_halo():
    model = tiny_s2d(dtype=torch.float64)
    x = _image()
    with torch.no_grad():
        ref = model.encoder(x)
    r = reach([model.encoder])
    assert torch.allclose(_stitched_encoder(model, x, tile_grid(H, W, 64, r.halo, 4)), ref, atol=1e-12, rtol=0)
    short = _stitched_encoder(model, x, tile_grid(H, W, 64, r.halo - 12, 4))
    assert (short - ref).abs().max() > 1e-3  # a halo short of the reach leaves tile edges wrong


def test_per_tile_statistics_would_not_be_exact():
    """Overlap-and-crop alone (each tile normalised with its own statistics) changes the tone."""
    model = tiny_s2d(dtype=torch.float64)
    x = _image()
    x[..., :, W // 2:] = 0.3 * x[..., :, W // 2:] + 0.5  # two halves with different statistics
    r = reach([model.encoder])
    naive = torch.zeros(2, 6, H // 4, W // 4, dtype=torch.float64)
    with torch.no_grad():
        ref = model.encoder(x)
        for t in tile_grid(H, W, 64, r.halo, 4):
            o = model.encoder(x[..., t.box[0]:t.box[2], t.box[1]:t.box[3]])
            top, left = (t.core[0] - t.box[0]) // 4, (t.core[1] - t.box[1]) // 4
            naive[..., t.core[0] // 4:t.core[2] // 4, t.core[1] // 4:t.core[3] // 4] = \
                o[..., top:top + (t.core[2] - t.core[0]) // 4, left:left + (t.core[3] - t.core[1]) // 4]
    assert (naive - ref).abs().max() > 1e-2
    assert torch.allclose(_stitched_encoder(model, x, tile_grid(H, W, 64, r.halo, 4)), ref, atol=1e-12, rtol=0)


def test_tiled_decoder_equals_untiled_and_the_model_is_left_as_it_was():
    model = tiny_s2d(dtype=torch.float64)
    z = torch.randn(1, 3, H // 4, W // 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    with torch.no_grad():
        ref = model.decoder(z)
    out = torch.zeros_like(ref)
    r = reach([model.decoder])
    for t, (o,) in pooled_tiles(lambda p: (model.decoder(p),), z, [model], tile_grid(H // 4, W // 4, 16, r.halo)):
        out[..., 4 * t.core[0]:4 * t.core[2], 4 * t.core[1]:4 * t.core[3]] = o
    assert torch.allclose(out, ref, atol=1e-12, rtol=0)
    assert not any("forward" in m.__dict__ for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model.decoder(z), ref)


def test_a_network_that_changes_with_the_tile_is_refused():
    norm = nn.GroupNorm(1, 3)
    calls = []

    def fn(p):  # a GroupNorm on the first tile only: the passes would not line up
        calls.append(1)
        return (norm(p) if len(calls) == 1 else p,)

    x = _image()[:, :, :64, :64]
    with pytest.raises(RuntimeError, match="different GroupNorm calls"):
        list(pooled_tiles(fn, x, [norm], tile_grid(64, 64, 48, 0)))
