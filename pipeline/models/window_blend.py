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
checkpointing), so memory holds one chunk's activations plus the windows' outputs (about
4× the output at 50 % overlap) at any photo size. Cost: (tile / (tile − overlap))² forwards over the area, about
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
    grad = torch.is_grad_enabled() and x.requires_grad
    parts = [spots[a:a + chunk] for a in range(0, len(spots), chunk)]
    cut = _Placement(x.shape, tile * factor_in, factor_in)
    chunks = _CutWindows.apply(x, cut, parts) if grad else (cut.gather(x, part) for part in parts)
    ys, place, out = [], None, None
    for windows, part in zip(chunks, parts):
        y = checkpoint(fn, windows, use_reentrant=False) if grad else fn(windows)
        if place is None:
            side = tile * factor_out
            place = _Placement((x.shape[0], y.shape[1], h * factor_out, w * factor_out), side, factor_out,
                               window_weights(side, ay.ramp * factor_out, ax.ramp * factor_out, y.dtype, y.device))
            out = None if grad else y.new_zeros(place.shape)
        if grad:
            ys.append(y)      # added in one autograd node below (_OverlapAdd)
        else:
            place.add(out, y, part)
    if grad:
        out = _OverlapAdd.apply(place, parts, *ys)
    return out / place.denominator(spots)


class _Placement:
    """Where each window sits on a canvas of `shape` (B, C, H, W): `side` px at `factor`× its latent origin,
    with an optional blending weight."""

    def __init__(self, shape, side: int, factor: int, weight: torch.Tensor | None = None):
        self.shape, self.side, self.factor, self.weight = tuple(shape), side, factor, weight

    def box(self, oy: int, ox: int) -> tuple[slice, slice]:
        return (slice(oy * self.factor, oy * self.factor + self.side),
                slice(ox * self.factor, ox * self.factor + self.side))

    def _weighted(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.weight is None else t * self.weight

    def add(self, canvas: torch.Tensor, windows: torch.Tensor, part) -> None:
        """canvas[window] += P·window for each window of a chunk (B rows per window), in place."""
        b = self.shape[0]
        for i, spot in enumerate(part):
            canvas[(..., *self.box(*spot))] += self._weighted(windows[i * b:(i + 1) * b])

    def gather(self, canvas: torch.Tensor, part) -> torch.Tensor:
        """The adjoint of `add`: each window's (weighted) slice of the canvas, stacked as a chunk."""
        return torch.cat([self._weighted(canvas[(..., *self.box(*spot))]) for spot in part])

    def denominator(self, spots) -> torch.Tensor:
        den = self.weight.new_zeros(self.shape[-2:])
        for spot in spots:
            den[self.box(*spot)] += self.weight
        return den


# Cutting and overlap-adding as single autograd nodes whose backward is the other one: done with autograd's
# slices and in-place slice adds, every window's backward would allocate or copy a whole canvas gradient
# (time quadratic in the photo's area: a 12-MP photo took hours).

class _CutWindows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, place: _Placement, parts):
        ctx.place, ctx.parts, ctx.like = place, parts, (x.dtype, x.device)
        return tuple(place.gather(x, part) for part in parts)

    @staticmethod
    def backward(ctx, *grads):
        dx = torch.zeros(ctx.place.shape, dtype=ctx.like[0], device=ctx.like[1])
        for g, part in zip(grads, ctx.parts):
            if g is not None:
                ctx.place.add(dx, g, part)
        return dx, None, None


class _OverlapAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, place: _Placement, parts, *ys):
        out = ys[0].new_zeros(place.shape)
        for y, part in zip(ys, parts):
            place.add(out, y, part)
        ctx.place, ctx.parts = place, parts
        return out

    @staticmethod
    def backward(ctx, grad):
        return (None, None, *(ctx.place.gather(grad, part) for part in ctx.parts))


def windowed_autoencoder(ae: Autoencoder, tile: int, overlap: int | None = None):
    """A context in which `ae.encode` / `ae.decode` are blends of `tile`-latent-px windows, so a
    solver's guidance on a canvas sees the decoder as the final decode does."""
    encode, decode, f = ae.encode, ae.decode, ae.downsample
    return coders_replaced(ae, lambda x: blend_windows(encode, x, tile, f, 1, overlap),
                           lambda z: blend_windows(decode, z, tile, 1, f, overlap))
