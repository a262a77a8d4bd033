"""The autoencoder on a whole photo at its own size: pad to the latent grid, encode, decode, crop back.

Why: photos come at any size (8 px to 12 MP, any aspect ratio) and must come back at
exactly that size, while the autoencoder needs sides that are multiples of its factor f.

Sizes. The image is padded at the bottom and right only, to the next multiple of f, so
latent cell (i, j) covers pixels [f·i, f·i+f) × [f·j, f·j+f) of the photo itself (a later
tiling of the prior can cut the latent and the photo on one grid). Padding reflects the
image (no artificial edge for the convolutions to see); a side not longer than its
padding cannot be reflected and is replicated instead, which only happens for a factor
above the minimum side (f > 8; the shipped f = 4 pads at most 3 px). Sides under
`MIN_SIDE` = 8 px are refused. Decoding crops the padded result back to H×W.

Whole-image statistics. The shipped autoencoder normalises with GroupNorm over its whole
input, so a whole photo is encoded with statistics of the whole photo, not of 64-px crops
as in training: docs/model-design.md ("Whole photos") measures what that costs.

Memory rule. Untiled where it fits, else tiled exactly (pipeline/models/tiled_groupnorm.py):
    peak ≈ LIVE_ACTIVATIONS × (bytes of the widest activation per input pixel) × pixels,
and a run is untiled while that is within `MemoryRule.budget_bytes` (2 GiB by default).
Measured on this 2-core CPU box (peak RSS growth of one untiled float32 forward of the
shipped models, in a fresh process per size, after a warm-up): 249–268 bytes per image
pixel for encode, decode and severity at 1 and 4 MP, where the widest activation is 64
channels at half resolution = 64 bytes per pixel, so 3.9–4.2 activations are live at the
peak; LIVE_ACTIVATIONS = 4.5 keeps a margin. The shipped models thus run untiled up to
2 GiB / (4.5 × 64 B) = 7.5 MP; a 12 MP photo is cut into tiles whose side (halo included)
keeps one tile within the same budget. A tiled run's peak does not grow with the photo
(256 MiB budget: 189–422 MiB at 4 and 9 MP; the excess is glibc keeping freed heap blocks).
Tiling costs time, not accuracy: n_groupnorm + 1 prefix passes (the shipped encoder has 7
GroupNorms: 4.9× the untiled time measured at 4 MP). Figures: docs/model-design.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.latent import Autoencoder
from pipeline.models.tiled_groupnorm import Tile, pooled_tiles, reach, tile_grid

MIN_SIDE = 8
LIVE_ACTIVATIONS = 4.5
DEFAULT_BUDGET_BYTES = 2 * 2 ** 30


def padded_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """(H, W) rounded up to multiples of `factor`."""
    return -(-height // factor) * factor, -(-width // factor) * factor


def pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """x (B,C,H,W) padded at the bottom and right to multiples of `factor` (reflect; replicate if a side is too short)."""
    h, w = x.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise ValueError(f"an image side must be at least {MIN_SIDE} px, got {h}×{w}")
    ph, pw = padded_size(h, w, factor)
    if pw > w:
        x = F.pad(x, (0, pw - w, 0, 0), mode="reflect" if pw - w < w else "replicate")
    if ph > h:
        x = F.pad(x, (0, 0, 0, ph - h), mode="reflect" if ph - h < h else "replicate")
    return x


@dataclass(frozen=True)
class MemoryRule:
    """Run untiled while LIVE_ACTIVATIONS × widest activation × pixels fits `budget_bytes`."""

    budget_bytes: int = DEFAULT_BUDGET_BYTES
    live_activations: float = LIVE_ACTIVATIONS

    def max_pixels(self, widest_bytes_per_pixel: float) -> int:
        """Input pixels one untiled forward may have."""
        return int(self.budget_bytes // (self.live_activations * widest_bytes_per_pixel))

    def tile_side(self, widest_bytes_per_pixel: float, halo: int, alignment: int) -> int:
        """The core side of square tiles whose halo-grown box stays within `max_pixels`."""
        box = math.isqrt(self.max_pixels(widest_bytes_per_pixel))
        side = (box - 2 * halo) // alignment * alignment
        if side < alignment:
            raise ValueError(f"a budget of {self.budget_bytes} bytes leaves no room for a tile inside a {halo}-px halo")
        return side


def widest_bytes_per_pixel(fn: Callable, probe: torch.Tensor, roots: Sequence[nn.Module]) -> float:
    """Bytes of the largest tensor any module under `roots` outputs while `fn` runs, per input pixel of `probe`.

    Per pixel of one sample: a batch of B images of P pixels counts B·P pixels."""
    widest = [0]

    def hook(_m, _args, out):
        if isinstance(out, torch.Tensor):
            widest[0] = max(widest[0], out.numel() * out.element_size())

    handles = [m.register_forward_hook(hook) for root in roots for m in root.modules()]
    try:
        with torch.no_grad():
            fn(probe)
    finally:
        for h in handles:
            h.remove()
    return widest[0] / (probe.shape[0] * probe.shape[-2] * probe.shape[-1])


def plan_tiles(fn: Callable, x: torch.Tensor, roots: Sequence[nn.Module], path: Sequence[nn.Module], *,
               rule: MemoryRule = MemoryRule(), tile: int | None = None) -> list[Tile] | None:
    """None when fn(x) fits the memory rule in one piece (and no `tile` side is forced), else exact tiles.

    `path` lists the modules fn runs, in order, for the receptive field; `roots` hold its GroupNorms.
    """
    b, (h, w) = x.shape[0], x.shape[-2:]
    if tile is None:
        per_pixel = widest_bytes_per_pixel(fn, x[..., :min(h, 64), :min(w, 64)], roots)
        if b * h * w <= rule.max_pixels(per_pixel):
            return None
    r = reach(path)
    if tile is None:
        tile = rule.tile_side(b * per_pixel, r.halo, r.alignment)
    return tile_grid(h, w, tile, r.halo, r.alignment)


def run_whole(fn: Callable[[torch.Tensor], Sequence[torch.Tensor]], x: torch.Tensor, roots: Sequence[nn.Module],
              path: Sequence[nn.Module], *, rule: MemoryRule = MemoryRule(), tile: int | None = None
              ) -> list[torch.Tensor]:
    """fn(x), in one piece or stitched from the cores of exact tiles (`plan_tiles`); inference only."""
    tiles = plan_tiles(fn, x, roots, path, rule=rule, tile=tile)
    if tiles is None:
        with torch.no_grad():
            return list(fn(x))
    return stitch_cores(pooled_tiles(fn, x, roots, tiles), *x.shape[-2:])


def stitch_cores(tiles_and_pieces, h: int, w: int) -> list[torch.Tensor]:
    """The outputs of an (h, w) input put together from (tile, [core outputs]) pairs."""
    outs: list[torch.Tensor] = []
    for t, pieces in tiles_and_pieces:
        for i, p in enumerate(pieces):
            sh, sw = Fraction(p.shape[-2], t.core[2] - t.core[0]), Fraction(p.shape[-1], t.core[3] - t.core[1])
            if i == len(outs):
                outs.append(p.new_empty(*p.shape[:-2], int(h * sh), int(w * sw)))
            outs[i][..., int(t.core[0] * sh):int(t.core[2] * sh), int(t.core[1] * sw):int(t.core[3] * sw)] = p
    return outs


def _optional(model: nn.Module, name: str) -> list[nn.Module]:
    m = getattr(model, name, None)
    return [m] if isinstance(m, nn.Module) else []


def encode_image(ae: Autoencoder, x: torch.Tensor, *, rule: MemoryRule = MemoryRule(),
                 tile: int | None = None) -> torch.Tensor:
    """Scaled latent (B,C,⌈H/f⌉,⌈W/f⌉) of x (B,3,H,W) in [−1,1], with whole-image GroupNorm statistics."""
    xp = pad_to_multiple(x, ae.downsample)
    path = [ae.model.encoder] + _optional(ae.model, "quant_conv")
    return run_whole(lambda p: (ae.encode(p),), xp, [ae.model], path, rule=rule, tile=tile)[0]


def decode_image(ae: Autoencoder, z: torch.Tensor, height: int, width: int, *, rule: MemoryRule = MemoryRule(),
                 tile: int | None = None) -> torch.Tensor:
    """The image (B,3,height,width) of a latent from `encode_image` (decoded at the padded size, then cropped)."""
    f = ae.downsample
    if tuple(z.shape[-2:]) != (-(-height // f), -(-width // f)):
        raise ValueError(f"a {height}×{width} image has a {-(-height // f)}×{-(-width // f)} latent, got "
                         f"{tuple(z.shape[-2:])}")
    path = _optional(ae.model, "post_quant_conv") + [ae.model.decoder]
    out = run_whole(lambda p: (ae.decode(p),), z, [ae.model], path, rule=rule, tile=tile)[0]
    return out[..., :height, :width]


def reconstruct_image(ae: Autoencoder, x: torch.Tensor, *, rule: MemoryRule = MemoryRule()) -> torch.Tensor:
    """decode(encode(x)) at x's own size."""
    return decode_image(ae, encode_image(ae, x, rule=rule), x.shape[-2], x.shape[-1], rule=rule)
