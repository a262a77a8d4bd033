"""An autoencoder (or encoder head) on a whole photo as a blend of windows of its training size.

Why: the shipped autoencoder and severity encoders were trained on 64-px crops, each with
its own GroupNorm statistics. Run on a whole photo with the photo's statistics
(pipeline/models/whole_image.py), their outputs lose up to 1 dB on photos whose statistics
differ from a crop's (docs/method.md §7, measured on the dev photos); cut into independent
crops they keep the crops' quality but leave seams. Here every window of the training size
runs on its own, exactly as a crop, and the windows (50 % overlap by default) are blended
with a raised-cosine window (`window_profile`) whose neighbours cross-fade to 1: each output
pixel is a smooth mix of crop outputs, so neither the crops' tone nor their borders show.

f(x) = Σ_w P_w·fn(x_w) / Σ_w P_w over the windows w of `spread_axis(…, tile, overlap)`.
It is a sum over windows, so computing it in chunks of windows changes nothing but the
summation order (tests/models/test_window_blend.py: chunked equals one piece, values and
gradients). Under autograd each chunk is recomputed in the backward pass (activation
checkpointing), so memory holds one chunk's activations plus the image-sized in- and
outputs at any photo size. Cost: (tile / (tile − overlap))² forwards over the area, about
4× the photo at 50 % overlap.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from pipeline.models.latent import Autoencoder, coders_replaced
from pipeline.sampling.tiles import spread_axis, window_profile

WINDOW_CHUNK = 32     # windows per forward call
FLOOR = 1e-3


def window_weights(side: int, ramp_y: int, ramp_x: int, dtype, device) -> torch.Tensor:
    """(side, side) blending weights; each axis ramps over its own overlap (none with one window)."""
    py, px = (window_profile(side, r, FLOOR).to(dtype=dtype, device=device) for r in (ramp_y, ramp_x))
    return py[:, None] * px[None, :]


def blend_windows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, factor_in: int,
                  factor_out: int, overlap: int | None = None, chunk: int = WINDOW_CHUNK) -> torch.Tensor:
    """fn on windows of x (B, C, h·factor_in, w·factor_in), blended into (B, C', h·factor_out, w·factor_out).

    Windows are `tile` latent pixels wide (`tile`·factor_in input pixels), `overlap` apart at
    least (default tile // 2: 50 %); fn maps a window of tile·factor_in to one of tile·factor_out pixels."""
    overlap = tile // 2 if overlap is None else overlap
    h, w = x.shape[-2] // factor_in, x.shape[-1] // factor_in
    if (h * factor_in, w * factor_in) != tuple(x.shape[-2:]):
        raise ValueError(f"input {tuple(x.shape[-2:])} is not a whole number of {factor_in}-px latent pixels")
    ay, ax = spread_axis(h, tile, overlap, FLOOR), spread_axis(w, tile, overlap, FLOOR)
    spots = [(oy, ox) for oy in ay.origins for ox in ax.origins]
    side_in, side_out = tile * factor_in, tile * factor_out
    B = x.shape[0]
    out = den = weight = None
    for a in range(0, len(spots), chunk):
        part = spots[a:a + chunk]
        windows = torch.cat([x[..., oy * factor_in:oy * factor_in + side_in, ox * factor_in:ox * factor_in + side_in]
                             for oy, ox in part])
        y = checkpoint(fn, windows, use_reentrant=False) if torch.is_grad_enabled() and x.requires_grad \
            else fn(windows)
        if out is None:
            weight = window_weights(side_out, ay.ramp * factor_out, ax.ramp * factor_out, y.dtype, y.device)
            out = y.new_zeros(B, y.shape[1], h * factor_out, w * factor_out)
            den = y.new_zeros(h * factor_out, w * factor_out)
        for i, (oy, ox) in enumerate(part):
            rows = slice(oy * factor_out, oy * factor_out + side_out)
            cols = slice(ox * factor_out, ox * factor_out + side_out)
            out[..., rows, cols] += y[i * B:(i + 1) * B] * weight
            den[rows, cols] += weight
    return out / den


def windowed_autoencoder(ae: Autoencoder, tile: int, overlap: int | None = None):
    """A context in which `ae.encode` / `ae.decode` are blends of `tile`-latent-px windows, so a
    solver's guidance on a canvas sees the decoder as the final decode does."""
    encode, decode, f = ae.encode, ae.decode, ae.downsample
    return coders_replaced(ae, lambda x: blend_windows(encode, x, tile, f, 1, overlap),
                           lambda z: blend_windows(decode, z, tile, 1, f, overlap))
