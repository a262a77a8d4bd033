"""Exact tiled inference for convolution + GroupNorm networks: halo-cropped tiles, GroupNorm over the whole image.

Why: a photo of many megapixels does not fit one forward pass, but the result must not
depend on how it was cut. Two things make tiles differ from the whole:
  * a convolution near a tile edge sees the tile's zero padding, not the neighbours. Each
    tile is grown by a halo of at least the network's receptive radius (`reach`) and only
    its core is kept (overlap-and-crop; exact because the radius is bounded). A tile that
    touches the image edge stops there, so the zero padding there is the image's own.
  * GroupNorm normalises with the mean and variance of its whole input. Per-tile statistics
    give every tile its own tone (diffusers' blended tiles show it). Here the statistics of
    every GroupNorm are pooled over the whole image first, the idea behind Tiled VAE
    (reimplemented): pass k runs every tile up to the k-th GroupNorm call, normalising the
    earlier ones with their pooled statistics, adds the core's per-group count, mean and
    sum of squared deviations (float64, merged pairwise) and stops there; once no GroupNorm
    is left, the last pass yields each tile's outputs cropped to its core.
Memory is one tile's activations plus what the caller keeps; time is that of n_groupnorm+1
prefix passes (4.9× the untiled time for the shipped encoder, docs/model-design.md).
Inference only: it runs under torch.no_grad.
"""
from __future__ import annotations

import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from pipeline.models.space_to_depth_autoencoder import ResBlock, SpaceToDepthDecoder, SpaceToDepthEncoder

POINTWISE = (nn.GroupNorm, nn.SiLU, nn.Identity, nn.ReLU, nn.GELU)


class NotTileable(TypeError):
    """The network holds a layer whose reach is unknown or global (e.g. attention): run it untiled."""


@dataclass(frozen=True)
class Reach:
    """How far an output depends on its input, in input pixels, and the grid tiles must sit on."""

    radius: float
    alignment: int

    @property
    def halo(self) -> int:
        """The radius rounded up to a multiple of the alignment."""
        return math.ceil(self.radius / self.alignment) * self.alignment


def reach(modules: Iterable[nn.Module]) -> Reach:
    """The receptive radius and alignment of `modules` applied one after another (an upper bound).

    Position is tracked in input pixels: a layer whose input pixels are S input pixels wide
    adds its kernel's reach times S; strides and PixelUnshuffle multiply S, PixelShuffle
    divides it. A residual block reaches as far as its body. Anything else raises NotTileable.
    """
    radius, scale, align = Fraction(0), Fraction(1), 1
    for m in modules:
        radius, scale, align = _walk(m, radius, scale, align)
    return Reach(float(radius), align)


def _walk(m: nn.Module, radius: Fraction, scale: Fraction, align: int) -> tuple[Fraction, Fraction, int]:
    if isinstance(m, (SpaceToDepthEncoder, SpaceToDepthDecoder)):
        return _walk(m.net, radius, scale, align)
    if isinstance(m, ResBlock):
        return _walk(m.body, radius, scale, align)
    if isinstance(m, nn.Sequential):
        for child in m:
            radius, scale, align = _walk(child, radius, scale, align)
        return radius, scale, align
    if isinstance(m, POINTWISE):
        return radius, scale, align
    if isinstance(m, nn.Conv2d):
        k, d, p, s = m.kernel_size[0], m.dilation[0], m.padding, m.stride[0]
        if isinstance(p, str) or len(set(m.kernel_size)) > 1 or len(set(m.stride)) > 1 or m.padding_mode != "zeros":
            raise NotTileable(f"only square zero-padded convolutions are tiled, got {m}")
        radius += max(p[0], d * (k - 1) - p[0]) * scale
        scale *= s
    elif isinstance(m, nn.PixelUnshuffle):
        scale *= m.downscale_factor  # an output cell is exactly its r×r input cells: no reach
    elif isinstance(m, nn.PixelShuffle):
        radius += scale  # a sub-pixel reads the one input pixel it lies in
        scale /= m.upscale_factor
    else:
        raise NotTileable(f"cannot bound the receptive field of {type(m).__name__}; run it untiled")
    if scale >= 1:
        if scale.denominator != 1:
            raise NotTileable(f"a cumulative stride of {scale} puts tiles off the grid")
        align = math.lcm(align, int(scale))
    return radius, scale, align


@dataclass(frozen=True)
class Tile:
    """`core` (top, left, bottom, right) is what this tile contributes; `box` holds it with at least the halo
    on every side that is not the image's edge."""

    core: tuple[int, int, int, int]
    box: tuple[int, int, int, int]


def _span(lo: int, hi: int, tile: int, halo: int, size: int) -> tuple[int, int]:
    """The box of core [lo, hi): the halo on both sides, and as long as a full tile's box where the image allows,
    so every tile has one shape (the last core is shorter; its box reaches further back). Fewer distinct
    shapes keep the allocator's high-water mark and the convolution backend's caches down."""
    start, stop = max(lo - halo, 0), min(hi + halo, size)
    full = min(tile + 2 * halo, size)
    if stop - start < full:
        start = max(min(start, stop - full), 0)
        stop = min(start + full, size)
    return start, stop


def tile_grid(height: int, width: int, tile: int, halo: int, alignment: int = 1) -> list[Tile]:
    """Row-major tiles whose cores partition the image: cores of side `tile`, the last row and column shorter."""
    if tile < 1 or tile % alignment or halo % alignment or height % alignment or width % alignment:
        raise ValueError(f"tile {tile}, halo {halo} and image {height}×{width} must be multiples of {alignment}")
    out = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            bottom, right = min(top + tile, height), min(left + tile, width)
            (t, b), (l, r) = _span(top, bottom, tile, halo, height), _span(left, right, tile, halo, width)
            out.append(Tile((top, left, bottom, right), (t, l, b, r)))
    return out


class _Collected(Exception):
    """Raised inside the forward once the pending GroupNorm has read its input: the rest of the pass is not needed."""


def _crop(t: torch.Tensor, tile: Tile, in_hw: tuple[int, int]) -> torch.Tensor:
    """The part of `t` (computed on tile.box, input size `in_hw`) that lies over the tile's core."""
    bounds = []
    for axis, (lo, hi, start, n) in enumerate(((tile.core[0], tile.core[2], tile.box[0], in_hw[0]),
                                                (tile.core[1], tile.core[3], tile.box[1], in_hw[1]))):
        s = Fraction(t.shape[-2 + axis], n)
        a, b = (lo - start) * s, (hi - start) * s
        if a.denominator != 1 or b.denominator != 1:
            raise ValueError(f"the core {tile.core} falls between pixels of a {tuple(t.shape[-2:])} activation")
        bounds.append((int(a), int(b)))
    (a0, b0), (a1, b1) = bounds
    return t[..., a0:b0, a1:b1]


def _merge(acc, x: torch.Tensor, groups: int):
    """Pairwise (Chan et al.) merge of per-(sample, group) count, mean and squared deviations, in float64.

    The tile's own moments come from torch.var_mean in x's dtype on a view (no copy of the
    activation, as precise as GroupNorm's own statistics); only the merge is float64."""
    b, c, h, w = x.shape
    var, mean = torch.var_mean(x.detach().unflatten(1, (groups, c // groups)), dim=(2, 3, 4), correction=0)
    n, mean, m2 = (c // groups) * h * w, mean.to(torch.float64), var.to(torch.float64) * ((c // groups) * h * w)
    if acc is None:
        return n, mean, m2
    na, ma, m2a = acc
    total, delta = na + n, mean - ma
    return total, ma + delta * (n / total), m2a + m2 + delta.pow(2) * (na * n / total)


class _GroupNormPool:
    """Replaces the forward of every GroupNorm under the roots while a pooled pass runs."""

    def __init__(self, roots: Sequence[nn.Module]):
        seen: dict[int, nn.GroupNorm] = {}
        for root in roots:
            for m in root.modules():
                if isinstance(m, nn.GroupNorm):
                    seen.setdefault(id(m), m)
        self.norms = list(seen.values())
        self.known: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.acc = None
        self.eps = 0.0
        self.calls = 0
        self.tile: Tile | None = None
        self.in_hw = (0, 0)

    @contextmanager
    def installed(self):
        if any("forward" in gn.__dict__ for gn in self.norms):
            raise RuntimeError("a GroupNorm already has its forward replaced (nested tiled passes?)")
        for gn in self.norms:
            gn.forward = functools.partial(self._forward, gn)
        try:
            yield self
        finally:
            for gn in self.norms:
                del gn.forward

    def _forward(self, gn: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
        k = self.calls
        self.calls += 1
        if k < len(self.known):
            mean, rstd = self.known[k]
            per = x.shape[1] // gn.num_groups  # y = x·a + c with a, c per (sample, channel): one new tensor
            a, c = rstd.repeat_interleave(per, dim=1), (-mean * rstd).repeat_interleave(per, dim=1)
            if gn.affine:
                a, c = a * gn.weight.double(), c * gn.weight.double() + gn.bias.double()
            return torch.addcmul(c.to(x.dtype)[..., None, None], x, a.to(x.dtype)[..., None, None])
        self.acc = _merge(self.acc, _crop(x, self.tile, self.in_hw), gn.num_groups)
        self.eps = gn.eps
        raise _Collected

    def close_statistics(self) -> None:
        """The pending GroupNorm's pooled mean and 1/std (biased variance, as GroupNorm) become known."""
        n, mean, m2 = self.acc
        self.known.append((mean, (m2 / n + self.eps).rsqrt()))
        self.acc = None


def pooled_tiles(fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], x: torch.Tensor, roots: Sequence[nn.Module],
                 tiles: Sequence[Tile], statistics: list | None = None) -> Iterator[tuple[Tile, list[torch.Tensor]]]:
    """Run `fn` on every tile of x (B,C,H,W) with every GroupNorm under `roots` normalised over the whole image.

    `fn` returns tensors (B,·,h,w) whose size is a fixed multiple of the tile's; each is
    yielded cropped to the tile's core, tile by tile (the caller stitches or sums them).
    The tiles' halo must be at least `reach(...)` of what `fn` runs, else the cores are wrong.
    `statistics`, when given, receives every GroupNorm's pooled (mean, 1/std) in call order
    (for `frozen_statistics`).
    """
    pool = _GroupNormPool(roots)
    with torch.no_grad(), pool.installed():
        while True:
            pending = finished = False
            for t in tiles:
                piece = x[..., t.box[0]:t.box[2], t.box[1]:t.box[3]]
                pool.tile, pool.in_hw, pool.calls = t, tuple(piece.shape[-2:]), 0
                try:
                    outs = fn(piece)
                except _Collected:
                    pending = True
                else:
                    finished = True
                if pending and finished:
                    raise RuntimeError("tiles made different GroupNorm calls; fn must not depend on the tile")
                if finished:
                    yield t, [_crop(o, t, pool.in_hw) for o in outs]
            if not pending:
                if statistics is not None:
                    statistics.extend(pool.known)
                return
            pool.close_statistics()


@contextmanager
def frozen_statistics(roots: Sequence[nn.Module], statistics: Sequence[tuple[torch.Tensor, torch.Tensor]]):
    """While open, every GroupNorm under `roots` normalises with the given (mean, 1/std), in call
    order, as constants: differentiable in its input, the same map on every tile. Call the
    yielded `restart()` before each forward pass."""
    pool = _GroupNormPool(roots)
    pool.known = list(statistics)

    def restart() -> None:
        pool.calls = 0

    with pool.installed():
        yield restart
