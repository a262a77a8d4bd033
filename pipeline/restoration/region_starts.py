"""Per-region start steps on a latent canvas, and the latent a region holds before its start.

Why: one photo is rarely damaged evenly (a blurred corner, a scratched band). Flash's rule
k̂ = start(σ̂²) (method §3.2) applied per region gives every region the steps its own damage
asks for: σ̂² is the severity encoder's per-element error map pooled over each region tile
(`pool_tiles`), each tile gets the sampler's own start index, and a latent pixel takes the
largest start of the tiles that cover it (the max, not a bilinear blend between tile centres:
a blend would give the pixels near a damaged tile's edge fewer steps than that tile asks
for, while the max under-serves no region and over-serves only the overlaps).

Modes (`REGION_MODES`): "region" as above; "image" the whole canvas at the start of the mean
of the map (Flash's per-image σ̂²); "image-max" the whole canvas at its worst region's start.

`held_latent`: a pixel that has not started yet holds ẑ forward-noised to the current level
from one fixed noise draw per sample, so at its own start it is exactly Flash's start latent
√(1 − c·σ̂²)·ẑ + √(c·σ̂²)·ε (`pipeline.restoration.flash.start_latent`, same formula, same draw).
Above its start the noise-to-signal ratio of that start latent is scaled by SNR_start/SNR_k,
the ratio the forward process itself applies between the two levels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.models.tiled_denoiser import cut
from pipeline.sampling.schedules import Sampler
from pipeline.sampling.tiles import TileLayout

REGION_MODES = ("region", "image", "image-max")


def _shifted_mean(x: torch.Tensor, mask: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Masked mean over `dims`, computed as ref + mean(x − ref) with ref the first element.

    Why: a constant map then pools to exactly its value, so a uniform σ̂² map gives every
    region the per-image σ̂² bit for bit (mode region equals mode image)."""
    ref = x.flatten(dims[0])[..., :1].reshape(*x.shape[:dims[0]], *([1] * len(dims)))
    dev = (x - ref) * mask
    return ref.reshape(x.shape[:dims[0]]) + dev.sum(dim=dims) / mask.sum(dim=dims)


def pool_tiles(sigma2_map: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(B, C, h, w) or (B, 1, h, w) σ̂² map → (B, my, mx): its mean over each tile's cell (all channels)."""
    weight = layout.weights(device=sigma2_map.device) > 0                    # (my, mx, T, T) cells
    out = []
    for b in range(sigma2_map.shape[0]):
        tiles = cut(sigma2_map[b], layout)                                    # (my, mx, C, T, T)
        mask = weight[:, :, None].expand_as(tiles).to(tiles.dtype)
        out.append(_shifted_mean(tiles, mask, (2, 3, 4)))
    return torch.stack(out)


def cover_max(values: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(B, my, mx) per-tile values → (B, 1, h, w): each pixel takes the largest value of the
    tiles whose cell holds it."""
    B = values.shape[0]
    h, w = layout.shape
    out = values.new_full((B, 1, h, w), float("-inf"))
    cells = layout.weights(device=values.device) > 0
    rows, cols = layout.y.index(values.device), layout.x.index(values.device)
    for gy, gx in layout.phase_groups():
        r, c = rows[gy][:, None, :, None], cols[gx][None, :, None, :]
        cur = out[:, :, r, c]                                                  # (B, 1, a, b, T, T)
        val = values[:, gy, gx][:, None, :, :, None, None]
        out[:, :, r, c] = torch.where(cells[gy, gx], torch.maximum(cur, val), cur)
    return out


@dataclass
class RegionStarts:
    """Where each latent pixel starts, and from which σ̂².

    tile_sigma2 (B, my, mx): the map pooled per region tile; sigma2 (B, 1, h, w): the σ̂² a
    pixel starts from (in the map's dtype); start (B, 1, h, w) long: its start index;
    tile_start (B, my, mx) long: each region tile's own start (the largest of its pixels' is
    never below it; a pixel takes the largest of its tiles')."""

    mode: str
    layout: TileLayout
    tile_sigma2: torch.Tensor
    sigma2: torch.Tensor
    start: torch.Tensor
    tile_start: torch.Tensor

    @property
    def top(self) -> torch.Tensor:
        """(B,) the largest start of each sample: its loop length is top + 1 steps."""
        return self.start.flatten(1).amax(dim=1).cpu()


def region_starts(sampler: Sampler, sigma2_map: torch.Tensor, layout: TileLayout,
                  mode: str = "region", tile_sigma2: torch.Tensor | None = None) -> RegionStarts:
    """Per-pixel σ̂² and start index of a canvas from its σ̂² map and the region layout.

    `tile_sigma2` (B, my, mx), when the severity model gives each region its own σ̂²
    (`pipeline.models.region_severity`), replaces the map pooled per tile."""
    if mode not in REGION_MODES:
        raise ValueError(f"region mode must be one of {REGION_MODES}, got {mode!r}")
    if sigma2_map.dim() != 4 or tuple(sigma2_map.shape[-2:]) != layout.shape:
        raise ValueError(f"σ̂² map must be (B, C, h, w) over the layout's canvas {layout.shape}, "
                         f"got {tuple(sigma2_map.shape)}")
    if not torch.isfinite(sigma2_map).all() or (sigma2_map < 0).any():
        raise ValueError("σ̂² map must be finite and non-negative")
    B = sigma2_map.shape[0]
    h, w = layout.shape
    tiles = pool_tiles(sigma2_map, layout) if tile_sigma2 is None else tile_sigma2.to(sigma2_map)
    if tuple(tiles.shape) != (B, layout.y.count, layout.x.count):
        raise ValueError(f"per-tile σ̂² must be (B, my, mx) = {(B, layout.y.count, layout.x.count)}, "
                         f"got {tuple(tiles.shape)}")
    if mode == "region":
        pixel, per_tile = cover_max(tiles, layout), tiles
    else:
        ones = torch.ones_like(sigma2_map)
        whole = (_shifted_mean(sigma2_map, ones, (1, 2, 3)) if mode == "image"
                 else tiles.flatten(1).amax(dim=1))
        pixel = whole.view(B, 1, 1, 1).expand(B, 1, h, w).clone()
        per_tile = whole.view(B, 1, 1).expand_as(tiles)
    values, inverse = torch.unique(torch.cat([pixel.flatten(), per_tile.flatten()]), return_inverse=True)
    index = sampler.start_index(values).to(pixel.device)[inverse]
    start, tile_start = index[:pixel.numel()].view_as(pixel), index[pixel.numel():].view_as(per_tile)
    return RegionStarts(mode, layout, tiles, pixel, start, tile_start)


def tile_starts(sampler: Sampler, tile_sigma2: torch.Tensor | None, tiles: int, mode: str, start: int) -> list[int]:
    """Each denoiser tile's start index as `solve_canvas` runs it (tiles in overlap mode are the
    regions): in mode "region" the start of the tile's own σ̂², capped at `start` (the photo's
    loop start after any cap); in the other modes, or without per-tile σ̂², `start` for all."""
    if mode != "region" or tile_sigma2 is None or start < 0:
        return [int(start)] * int(tiles)
    own = sampler.start_index(torch.as_tensor(tile_sigma2, dtype=torch.float64).flatten())
    return own.clamp(max=int(start)).tolist()


def held_latent(z_hat: torch.Tensor, noise: torch.Tensor, sigma2: torch.Tensor, start: torch.Tensor,
                k: int, sampler: Sampler, noise_correction: float | None) -> torch.Tensor:
    """The latent a pixel with start s ≤ k holds at grid step k (B, C, h, w).

    At s = k: √(1 − v)·ẑ + √v·ε with v = clamp(c·σ̂², 0, 1), exactly `start_latent`'s. Above its
    start the noise-to-signal ratio v/(1 − v) is multiplied by g = SNR_s/SNR_k ≥ 1, i.e.
    v_k = v·g/(1 − v + v·g). `noise_correction` None (ẑ as the start) holds ẑ. Values at
    pixels with s > k are not meaningful (the caller keeps its running state there).
    """
    c = 0.0 if noise_correction is None else float(noise_correction)
    v = (c * sigma2).clamp(0.0, 1.0).to(device=z_hat.device, dtype=z_hat.dtype)
    snr = sampler.snr
    g = (snr[start.cpu().clamp(0, sampler.num_steps - 1)] / snr[k]).to(device=z_hat.device, dtype=z_hat.dtype)
    v_k = torch.where(start == k, v, v * g / (1.0 - v + v * g))
    return (1.0 - v_k).sqrt() * z_hat + v_k.sqrt() * noise
