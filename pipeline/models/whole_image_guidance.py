"""The autoencoder inside a guidance term on a whole photo: differentiable, tiled when large.

Why: a guided solver decodes its clean estimate and differentiates the measurement error
through the decoder (and, for the gluing terms, the encoder) every step. On a canvas that
is the whole photo: memory grows with the area, and a 12-megapixel photo's decoder
activations kept for the backward pass do not fit a small machine. Dropping the term under
tiling (as DiffBIR does) would leave the blur's data consistency out exactly where a blur
crosses tile borders, so the term stays whole and only its computation is cut:

  * Statistics: every GroupNorm normalises with the whole image's statistics (as in the
    forward of pipeline/models/whole_image.py), and the gradient holds them constant: they
    are means over the whole image, and treating them as constants makes the gradient of
    each output pixel depend only on its receptive field, which is what lets it be tiled
    exactly. (The exact gradient through the statistics adds, per group, a projection that
    removes the gradient's mean and its component along the normalised activation; the
    guidance step is a direction, and the forward pass that the next step decodes always
    uses the true statistics.)
  * Small photos (at most GUIDANCE_MAX_PIXELS image pixels per batch) run in one piece
    with the statistics detached: one forward, autograd keeps the activations.
  * Larger ones run as `_TiledCall`: the forward is the exact tiled pass with pooled
    statistics (`pooled_tiles`, inference only); the backward recomputes one tile (core
    plus halo of at least the receptive radius) at a time with the pooled statistics frozen
    (`frozen_statistics`) and adds the tile's vector-Jacobian product of its core's
    gradient. Memory: one tile's activations at a time, plus the image-sized in- and
    outputs. Time: the forward's prefix passes plus one recomputed forward and a backward.
Both give the same values and gradients (tests/models/test_whole_image_guidance.py, 1e-5).
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from fractions import Fraction
from typing import Callable, Sequence

import torch
from torch import nn

from pipeline.models.latent import Autoencoder, coders_replaced
from pipeline.models.tiled_groupnorm import NotTileable, Tile, frozen_statistics, pooled_tiles, reach, tile_grid
from pipeline.models.whole_image import stitch_cores

GUIDANCE_MAX_PIXELS = 1024 * 1024   # image pixels per batch differentiated in one piece
GUIDANCE_TILE_PIXELS = 512 * 512    # image pixels of one tile's box in the tiled backward


@contextmanager
def detached_statistics(roots: Sequence[nn.Module]):
    """While open, every GroupNorm under `roots` normalises with its input's own statistics,
    detached from the graph (the one-piece form of the frozen statistics)."""
    norms = {id(m): m for root in roots for m in root.modules() if isinstance(m, nn.GroupNorm)}.values()

    def forward(gn: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        xg = x.reshape(b, gn.num_groups, -1)
        var, mean = torch.var_mean(xg.detach(), dim=2, keepdim=True, correction=0)
        out = ((xg - mean) * (var + gn.eps).rsqrt()).reshape_as(x)
        if gn.affine:
            out = out * gn.weight.view(1, c, *([1] * (x.dim() - 2))) + gn.bias.view(1, c, *([1] * (x.dim() - 2)))
        return out

    for gn in norms:
        gn.forward = functools.partial(forward, gn)
    try:
        yield
    finally:
        for gn in norms:
            del gn.forward


class _TiledCall(torch.autograd.Function):
    """y = fn(x) from exact tiles; the backward recomputes tile by tile with frozen statistics."""

    @staticmethod
    def forward(ctx, x, fn, roots, tiles):
        statistics: list = []
        out = stitch_cores(pooled_tiles(lambda p: (fn(p),), x.detach(), roots, tiles, statistics), *x.shape[-2:])[0]
        ctx.fn, ctx.roots, ctx.tiles, ctx.statistics = fn, roots, tiles, statistics
        ctx.scale = (Fraction(out.shape[-2], x.shape[-2]), Fraction(out.shape[-1], x.shape[-1]))
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sh, sw = ctx.scale
        dx = torch.zeros_like(x)
        with torch.enable_grad(), frozen_statistics(ctx.roots, ctx.statistics) as restart:
            for t in ctx.tiles:
                restart()
                piece = x[..., t.box[0]:t.box[2], t.box[1]:t.box[3]].detach().requires_grad_(True)
                out = ctx.fn(piece)
                top, left = int((t.core[0] - t.box[0]) * sh), int((t.core[1] - t.box[1]) * sw)
                rows, cols = int((t.core[2] - t.core[0]) * sh), int((t.core[3] - t.core[1]) * sw)
                g = grad[..., int(t.core[0] * sh):int(t.core[0] * sh) + rows, int(t.core[1] * sw):int(t.core[1] * sw) + cols]
                (d,) = torch.autograd.grad(out[..., top:top + rows, left:left + cols], piece, g)
                dx[..., t.box[0]:t.box[2], t.box[1]:t.box[3]] += d
        return dx, None, None, None


def guidance_tiles(x: torch.Tensor, path: Sequence[nn.Module], pixels_per_input: int,
                   tile_pixels: int = GUIDANCE_TILE_PIXELS) -> list[Tile]:
    """Tiles whose box holds about `tile_pixels` image pixels (`pixels_per_input` per input pixel)."""
    r = reach(path)
    box = math.isqrt(max(1, tile_pixels // pixels_per_input))
    side = max(r.alignment, (box - 2 * r.halo) // r.alignment * r.alignment)
    return tile_grid(x.shape[-2], x.shape[-1], side, r.halo, r.alignment)


def whole_call(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, roots: Sequence[nn.Module],
               path: Sequence[nn.Module], pixels_per_input: int, max_pixels: int = GUIDANCE_MAX_PIXELS,
               tiles: Sequence[Tile] | None = None) -> torch.Tensor:
    """fn(x) for a loss on a whole image: whole-image statistics, held constant in the gradient;
    in one piece up to `max_pixels` image pixels, else tiled (`tiles`, or `guidance_tiles`)."""
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    if tiles is None and b * h * w * pixels_per_input <= max_pixels:
        with detached_statistics(roots):
            return fn(x)
    try:
        tiles = list(tiles or guidance_tiles(x, path, pixels_per_input))
    except NotTileable as exc:
        raise ValueError(f"a guidance term over {b}×{h * w * pixels_per_input} image pixels needs tiles, but {exc}: "
                         f"with this autoencoder photos are restored up to {max_pixels} pixels per batch") from None
    return _TiledCall.apply(x, fn, roots, tiles)


def _optional(model: nn.Module, name: str) -> list[nn.Module]:
    m = getattr(model, name, None)
    return [m] if isinstance(m, nn.Module) else []


def whole_image_autoencoder(ae: Autoencoder, max_pixels: int = GUIDANCE_MAX_PIXELS):
    """A context in which `ae.encode` and `ae.decode` are their `whole_call` forms, so any solver's
    guidance on a canvas runs with whole-image statistics, tiled when large, unchanged."""
    encode, decode, f = ae.encode, ae.decode, ae.downsample
    enc_path = [ae.model.encoder] + _optional(ae.model, "quant_conv")
    dec_path = _optional(ae.model, "post_quant_conv") + [ae.model.decoder]
    return coders_replaced(ae, lambda x: whole_call(encode, x, [ae.model], enc_path, 1, max_pixels),
                           lambda z: whole_call(decode, z, [ae.model], dec_path, f * f, max_pixels))
