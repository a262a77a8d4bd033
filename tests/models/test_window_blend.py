"""Windows of the training size, blended: chunking changes nothing, one window is the model itself."""
from __future__ import annotations

import torch

from pipeline.models.window_blend import blend_windows
from tests.helpers import tiny_autoencoder


def test_chunked_equals_one_piece_in_values_and_gradients():
    ae = tiny_autoencoder("s2d", dtype=torch.float64).eval()
    f = ae.downsample
    z = torch.randn(2, ae.latent_channels, 11, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weight = torch.randn(2, 3, 11 * f, 9 * f, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = []
    for chunk in (1000, 2):
        leaf = z.clone().requires_grad_(True)
        out = blend_windows(ae.decode, leaf, 4, 1, f, overlap=2, chunk=chunk)
        (grad,) = torch.autograd.grad((out * weight).sum(), leaf)
        got.append((out.detach(), grad))
    (a, ga), (b, gb) = got
    assert torch.allclose(a, b, atol=1e-12, rtol=0) and torch.allclose(ga, gb, atol=1e-12, rtol=0)
    with torch.no_grad():   # the encoder side maps pixels to latents the same way
        x = torch.rand(1, 3, 11 * f, 9 * f, dtype=torch.float64)
        assert blend_windows(ae.encode, x, 4, f, 1, overlap=2).shape == (1, ae.latent_channels, 11, 9)


def test_one_window_is_the_model_and_a_constant_blend_is_exact():
    ae = tiny_autoencoder("s2d", dtype=torch.float64).eval()
    f = ae.downsample
    with torch.no_grad():
        z = torch.randn(1, ae.latent_channels, 4, 4, dtype=torch.float64)
        assert torch.allclose(blend_windows(ae.decode, z, 4, 1, f, overlap=2), ae.decode(z), atol=1e-12, rtol=0)
        ones = blend_windows(lambda p: torch.ones(p.shape[0], 1, *p.shape[-2:], dtype=p.dtype),
                             torch.zeros(1, 1, 13, 22, dtype=torch.float64), 4, 1, 1, overlap=2)
        assert torch.allclose(ones, torch.ones_like(ones), atol=1e-12, rtol=0)   # weights normalise to 1


def test_the_cut_and_overlap_add_nodes_have_the_true_gradient():
    """Cutting and overlap-adding are single autograd nodes with hand-written backwards (each the other's
    adjoint); gradcheck compares them with finite differences, on both sides of an autoencoder."""
    ae = tiny_autoencoder("s2d", dtype=torch.float64).eval()
    f = ae.downsample
    z = torch.randn(1, ae.latent_channels, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: blend_windows(ae.decode, v, 4, 1, f, overlap=2, chunk=2), (z,))
    x = torch.rand(1, 3, 4 * f, 5 * f, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: blend_windows(ae.encode, v, 4, f, 1, overlap=2, chunk=3), (x,))
    with_grad = blend_windows(ae.decode, z, 4, 1, f, overlap=2, chunk=2)
    with torch.no_grad():   # the no-grad path adds in place, chunk by chunk: the same values
        assert torch.equal(blend_windows(ae.decode, z, 4, 1, f, overlap=2, chunk=2), with_grad.detach())
