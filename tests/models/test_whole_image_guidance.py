"""The autoencoder in a guidance term on a whole photo: tiled equals untiled, values and gradients."""
from __future__ import annotations

import pytest
import torch

from pipeline.models.whole_image_guidance import guidance_tiles, whole_call, whole_image_autoencoder
from tests.helpers import tiny_autoencoder


def _paths(ae):
    m = ae.model
    extra = lambda name: [getattr(m, name)] if isinstance(getattr(m, name, None), torch.nn.Module) else []  # noqa: E731
    return [m.encoder] + extra("quant_conv"), extra("post_quant_conv") + [m.decoder]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_tiled_guidance_equals_untiled_on_a_301x203_photo(dtype, tol):
    """The shipped autoencoder's kind (space-to-depth, GroupNorm, no attention)."""
    ae = tiny_autoencoder("s2d", dtype=dtype).eval()
    enc_path, dec_path = _paths(ae)
    f = ae.downsample
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, ae.latent_channels, -(-301 // f), -(-203 // f), generator=g, dtype=dtype)
    x = torch.rand(2, 3, z.shape[-2] * f, z.shape[-1] * f, generator=g, dtype=dtype) * 2 - 1
    for fn, inp, path, per in ((ae.decode, z, dec_path, f * f), (ae.encode, x, enc_path, 1)):
        tiles = guidance_tiles(inp, path, per, tile_pixels=96 * 96)
        assert len(tiles) > 4
        results = []
        for chosen in (None, tiles):   # one piece (statistics detached), then tiled (frozen)
            leaf = inp.clone().requires_grad_(True)
            out = whole_call(fn, leaf, [ae.model], path, per, max_pixels=10 ** 9, tiles=chosen)
            weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
            (grad,) = torch.autograd.grad((out * weight).sum(), leaf)
            results.append((out.detach(), grad))
        (a, ga), (b, gb) = results
        assert torch.allclose(a, b, atol=tol, rtol=0) and torch.allclose(ga, gb, atol=tol, rtol=0)
        with torch.no_grad():   # the values are the autoencoder's own on the whole image
            assert torch.allclose(a, fn(inp), atol=tol, rtol=0)


def test_an_autoencoder_with_attention_runs_whole_or_says_why_not():
    ae = tiny_autoencoder("kl", dtype=torch.float64).eval()
    z = torch.randn(1, ae.latent_channels, 9, 7, dtype=torch.float64, requires_grad=True)
    with whole_image_autoencoder(ae):
        ae.decode(z).sum().backward()
        assert z.grad is not None
    with whole_image_autoencoder(ae, max_pixels=1), pytest.raises(ValueError, match="needs tiles"):
        ae.decode(z)


def test_the_context_swaps_encode_and_decode_and_restores_them():
    ae = tiny_autoencoder("s2d", dtype=torch.float64).eval()
    z = torch.randn(1, ae.latent_channels, 9, 7, dtype=torch.float64)
    with whole_image_autoencoder(ae, max_pixels=1):   # everything tiles
        tiled = ae.decode(z)
        with pytest.raises(RuntimeError, match="already"):
            with whole_image_autoencoder(ae):
                pass
    assert "decode" not in ae.__dict__ and "encode" not in ae.__dict__
    with torch.no_grad():
        assert torch.allclose(tiled, ae.decode(z), atol=1e-10, rtol=0)
