"""The denoiser on a latent canvas of any size: tiles of its training size, blended into one ε.

Why ε and one canvas step: the prior only knows its own latent size, so every step the canvas
is cut into tiles (`pipeline.sampling.tiles`), each tile goes through `LatentDiffusion.eps` at
its sample's timestep (tiles of every sample and size share batches: they all have one shape),
and the predictions are blended into one ε for the whole canvas. The sampler then takes one
step on the canvas with noise drawn for the whole canvas from the sample's own generator
(the solver's job, unchanged), so the output depends on neither batch partners, tile order,
tile batching nor engine (beyond the UNet's own rounding differences between batch sizes). Blending ε rather than each tile's z_{t−1} keeps one state and one
noise draw per pixel (MultiDiffusion's averaged steps would average independent noises).

Exactness where it is owed: the blend is written as base + Σ w·(ε_tile − base) / Σ w, with
`base` one covering tile's prediction. Where the predictions agree (a pixel covered by one
tile, a canvas of exactly one tile, identical predictions) the deviations are exactly zero
and the result is that prediction bit for bit; elsewhere it is the window-weighted mean.

Tiles whose cell holds no active pixel are not computed (they cost nothing); a pixel outside
every computed tile gets ε = 0 and a pixel covered only in part gets the blend of the
computed tiles. Callers that skip tiles overwrite those pixels anyway (re-injection,
`pipeline/restoration/region_loop.py`). Works under autograd (guided solvers differentiate
through it).
"""
from __future__ import annotations

from typing import Sequence

import torch

from torch.utils.checkpoint import checkpoint

from pipeline.models.latent import LatentDiffusion
from pipeline.sampling.tiles import Axis, TileLayout, reflect_pad


# Under autograd (guided solvers), tiles go through the denoiser in chunks of at most this many,
# each recomputed in the backward pass (activation checkpointing): memory then holds the tiles'
# inputs, not every tile's activations, so a 12-megapixel canvas's step fits a small machine.
GRAD_TILE_BATCH = 64


def tile_activity(layout: TileLayout, active: torch.Tensor) -> torch.Tensor:
    """(my, mx) bool: which tiles hold an active pixel in their cell; `active` is (h, w) bool."""
    h, w = layout.shape
    if tuple(active.shape) != (h, w):
        raise ValueError(f"activity map {tuple(active.shape)} does not match the layout's canvas {(h, w)}")
    s = torch.zeros(h + 1, w + 1, dtype=torch.long, device=active.device)
    s[1:, 1:] = active.to(torch.long).cumsum(0).cumsum(1)
    ya, yb = (torch.tensor(v, device=active.device) for v in zip(*layout.y.cells))
    xa, xb = (torch.tensor(v, device=active.device) for v in zip(*layout.x.cells))
    count = (s[yb][:, xb] - s[ya][:, xb] - s[yb][:, xa] + s[ya][:, xa])
    return count > 0


def eps_whole(ldm: LatentDiffusion, z: torch.Tensor, timesteps: torch.Tensor,
              layouts: Sequence[TileLayout], active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ε of canvases z (B, C, h, w) from one untiled denoiser call each (tiling mode `whole`), and the
    cost in tile equivalents: the tiles of the non-overlapping cut `layouts` holding an active pixel.

    The canvas is reflect-padded to a multiple of the UNet's downsampling (2^(levels − 1)) and
    the prediction cropped back; a canvas without an active pixel is not computed."""
    B = z.shape[0]
    calls = torch.stack([tile_activity(layout, a.reshape(z.shape[-2:]).to(torch.bool)).sum()
                         for layout, a in zip(layouts, active.reshape(B, -1))]).cpu()
    eps = torch.zeros_like(z)
    run = (calls > 0).nonzero().flatten().tolist()
    if run:
        m = 2 ** (len(getattr(ldm.unet.config, "block_out_channels", (0,))) - 1)
        h, w = z.shape[-2:]
        padded = reflect_pad(z[run], -(-h // m) * m, -(-w // m) * m)
        eps[run] = ldm.eps(padded, torch.as_tensor(timesteps).reshape(-1)[run])[..., :h, :w]
    return eps, calls.to(torch.long)


def cut(z: torch.Tensor, layout: TileLayout) -> torch.Tensor:
    """(C, h, w) → (my, mx, C, T, T): every tile's window of one canvas."""
    if tuple(z.shape[-2:]) != layout.shape:
        raise ValueError(f"canvas {tuple(z.shape[-2:])} does not match the layout's {layout.shape}")
    rows, cols = layout.y.index(z.device), layout.x.index(z.device)
    return z[:, rows[:, None, :, None], cols[None, :, None, :]].permute(1, 2, 0, 3, 4)


def _placement(axis: Axis, dtype, device) -> torch.Tensor:
    """(count·T, length): row i·T + u puts tile i's pixel u at o_i + u with its window weight."""
    T = axis.tile
    out = torch.zeros(axis.count * T, axis.length, dtype=torch.float64)
    prof = axis.profiles()
    for i, o in enumerate(axis.origins):
        out[i * T:(i + 1) * T, o:o + T] = torch.diag(prof[i])
    return out.to(dtype=dtype, device=device)


def _owner(axis: Axis, device) -> torch.Tensor:
    """(length,): for each canvas coordinate, the mosaic row of the last tile whose cell starts
    at or before it (a tile whose cell holds it)."""
    starts = torch.tensor([a for a, _ in axis.cells])
    pos = torch.arange(axis.length)
    i = torch.searchsorted(starts, pos, right=True) - 1
    origins = torch.tensor(axis.origins)
    return (i * axis.tile + pos - origins[i]).to(device)


def blend(preds: torch.Tensor, index: torch.Tensor, layout: TileLayout, channels: int) -> torch.Tensor:
    """Blend tile predictions (N, C, T, T) at tile positions `index` (N, 2) into (C, h, w).

    The tiles are laid side by side in a mosaic (C, my·T, mx·T) by their index, so their order
    never matters; the window-weighted overlap-add is then two matrix products with the
    layout's placement matrices, Pyᵀ·M·Px. Tiles not listed weigh nothing."""
    my, mx, T = layout.y.count, layout.x.count, layout.tile
    dtype, device = preds.dtype, preds.device
    grid = preds.new_zeros(my, mx, channels, T, T)
    present = torch.zeros(my, mx, dtype=dtype, device=device)
    if index.numel():
        iy, ix = index[:, 0].to(device), index[:, 1].to(device)
        grid = grid.index_put((iy, ix), preds)
        present = present.index_put((iy, ix), torch.ones_like(iy, dtype=dtype))
    mosaic = grid.permute(2, 0, 3, 1, 4).reshape(channels, my * T, mx * T)
    on = present.repeat_interleave(T, 0).repeat_interleave(T, 1)
    base = mosaic[:, _owner(layout.y, device)][:, :, _owner(layout.x, device)]   # one covering tile's ε
    rows, cols = layout.y.index(device).reshape(-1), layout.x.index(device).reshape(-1)
    deviation = (mosaic - base[:, rows][:, :, cols]) * on
    py, px = _placement(layout.y, dtype, device), _placement(layout.x, dtype, device)
    num = py.T @ deviation @ px
    den = py.T @ on @ px
    return base + num / torch.where(den > 0, den, torch.ones_like(den))


def eps_canvas(ldm: LatentDiffusion, z: torch.Tensor, timesteps: torch.Tensor,
               layouts: TileLayout | Sequence[TileLayout], active: torch.Tensor | None = None,
               tile_batch: int | None = None,
               tiles_on: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """ε of a canvas batch z (B, C, h, w) at per-sample DDPM timesteps (B,).

    `layouts`: one layout for every sample, or one per sample (the shifted mode draws each
    sample's own). `active`: (B, 1, h, w) or (B, h, w) bool, the pixels whose ε is wanted; a
    tile with no active pixel in its cell is skipped. `tile_batch`: tiles per denoiser call
    (None: all at once); it changes memory, not the result. `tiles_on` (B, my, mx) bool, with
    one layout for all: which tiles to compute, in place of `active`'s rule (a tile that is its
    own region runs from its own start). Returns ε (B, C, h, w) and the
    tiles computed per sample (B,) long, the tile-steps this call costs.
    """
    B, C = z.shape[:2]
    layouts = [layouts] * B if isinstance(layouts, TileLayout) else list(layouts)
    timesteps = torch.as_tensor(timesteps).reshape(-1)
    if len(layouts) != B or timesteps.numel() != B:
        raise ValueError(f"eps_canvas: {B} canvases, {len(layouts)} layouts, {timesteps.numel()} timesteps")
    if active is not None:
        active = active.reshape(B, *z.shape[-2:]).to(torch.bool)
    if tile_batch is not None and tile_batch < 1:
        raise ValueError(f"tile_batch must be at least 1, got {tile_batch}")

    tiles, t_tiles, where = [], [], []
    for b, layout in enumerate(layouts):
        grid = cut(z[b], layout)
        if tiles_on is not None:
            on = tiles_on[b].to(device=z.device, dtype=torch.bool)
        elif active is not None:
            on = tile_activity(layout, active[b])
        else:
            on = torch.ones(layout.y.count, layout.x.count, dtype=torch.bool, device=z.device)
        idx = on.nonzero()
        tiles.append(grid[idx[:, 0], idx[:, 1]])
        t_tiles.append(timesteps[b].expand(idx.shape[0]))
        where.append(idx)
    calls = torch.tensor([i.shape[0] for i in where], dtype=torch.long)
    all_tiles, all_t = torch.cat(tiles), torch.cat(t_tiles)
    n = all_tiles.shape[0]
    step = n if tile_batch is None else tile_batch
    if torch.is_grad_enabled() and n > GRAD_TILE_BATCH:   # guided solvers: keep inputs, not activations
        step = min(step, GRAD_TILE_BATCH)
        preds = [checkpoint(ldm.eps, all_tiles[s:s + step], all_t[s:s + step], use_reentrant=False)
                 for s in range(0, n, step)]
    else:
        preds = [ldm.eps(all_tiles[s:s + step], all_t[s:s + step]) for s in range(0, n, max(step, 1))]
    preds = torch.cat(preds) if preds else all_tiles
    out, start = [], 0
    for b, layout in enumerate(layouts):
        k = int(calls[b])
        out.append(blend(preds[start:start + k], where[b], layout, C))
        start += k
    return torch.stack(out), calls
