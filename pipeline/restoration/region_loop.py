"""One reverse loop over a latent canvas: tiled denoiser, per-region starts, any solver's step.

Why one loop: regions with different start steps share a canvas, so the loop runs from the
largest start down to 0 and a pixel joins at its own start (the staggered batch of
`pipeline/solvers/base.py`, moved from rows to pixels). Before the denoiser call at grid step
k, every pixel with start ≤ k is set to its held latent (`held_latent`: ẑ forward-noised to
level k from one fixed draw, so a pixel starting at k starts from exactly Flash's start
latent); pixels already running keep their state. The denoiser runs only on tiles with a
pixel whose start ≥ k (`eps_canvas`), so a region that has not started costs no call. The
step itself is the solver's: the sampler's update on the whole canvas with the sample's own
noise, then its data-consistency `correct` (re-injection needs no retraining: the denoiser
always sees one level per call, as in Differential Diffusion, never a per-pixel time).

Every draw comes from (job seed, key): the fixed draw from `NOISE_INJECTION` (Flash's own
stream), the sampler noise from `SAMPLER`, the shifted layout's offsets from `TILE_SHIFT`.
A canvas of exactly one tile in mode "image" therefore reproduces `Flash.restore`'s latent.
The result is the clean canvas latent; decoding a canvas is the caller's (a tiled decoder).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.models.tiled_denoiser import eps_canvas, eps_whole
from pipeline.restoration.region_starts import RegionStarts, held_latent, region_starts
from pipeline.sampling.seeding import NOISE_INJECTION, SAMPLER, generators, randn_per_sample, sample_seed
from pipeline.sampling.tiles import TILE_SHIFT, Tiling
from pipeline.solvers.base import ACCOUNT_KEYS, Solver, canvas_norms


@dataclass
class CanvasResult:
    """Per-sample results of a canvas solve: clean latent, starts, NFE (top + 1) and costs.

    `tile_steps` counts denoiser calls summed over tiles (also `account["tile_steps"]`);
    `account["denoiser_calls"]` counts canvas steps, as NFE does for a crop."""

    z0: torch.Tensor
    starts: RegionStarts
    nfe: torch.Tensor
    tile_steps: torch.Tensor
    account: dict[str, torch.Tensor]


def region_tiling(tiling: Tiling) -> Tiling:
    """The region tiles: the denoiser's own tiles when its layout is fixed (overlap mode), so
    a tile runs exactly from its own start and costs start + 1 calls; a non-overlapping cut
    when the layout moves every step (shifted mode) or there are no tiles (whole)."""
    return tiling if tiling.mode == "overlap" else Tiling(tiling.tile, "overlap", 0)


def _reverse_step(solver: Solver, z, k, active, tiles_on, layouts, y, op, gens, count, tile_batch, whole=False):
    """`Solver.reverse_step` with the canvas denoiser: ε, the sampler's step, `correct` (its
    unsquared norms at a crop's per-pixel strength, `canvas_norms`)."""
    index = torch.full((z.shape[0],), k, dtype=torch.long)
    grad = torch.enable_grad() if solver.differentiable else torch.no_grad()
    scale = math.sqrt(z.shape[-2] * z.shape[-1]) / solver.model.latent_shape[1]
    with grad, canvas_norms(solver, scale):
        z_t = z.detach().requires_grad_(solver.differentiable)
        t = solver.sampler.timesteps(index)
        eps, calls = eps_whole(solver.model, z_t, t, layouts, active) if whole else \
            eps_canvas(solver.model, z_t, t, layouts, active, tile_batch, tiles_on)
        count["denoiser_calls"] += 1
        z_prev, z0_hat = solver.sampler.step(z_t, eps, index, gens)
        return solver.correct(z_t, z_prev, z0_hat, y, op, k, gens, count).detach(), calls


def solve_canvas(solver: Solver, y: torch.Tensor | None, operator, z_hat: torch.Tensor, sigma2_map: torch.Tensor,
                 keys: Sequence[str], job_seed: int, tiling: Tiling, mode: str = "region",
                 noise_correction: float | None = 1.2, regions: Tiling | None = None,
                 tile_batch: int | None = None, start: torch.Tensor | None = None,
                 tile_sigma2: torch.Tensor | None = None, max_start: torch.Tensor | None = None) -> CanvasResult:
    """Restore canvases z_hat (B, C, h, w) of one size from their σ̂² maps (B, 1 or C, h, w).

    `y`/`operator` go to the solver's `correct` (None for the unconditional solver);
    `regions` cuts the map into regions (default `region_tiling(tiling)`). `start` (B,), mode
    "image" only: each canvas's start index as the caller decided it (Flash's start after a
    budget cap or a fixed start); the map then only sets the start latent's noise.
    `tile_sigma2` (B, my, mx): each region's own σ̂² (`region_starts`); `max_start` (B,): a
    cap on every pixel's start (flash.max_nfe), in any mode.
    """
    keys = list(keys)
    B, C, h, w = z_hat.shape
    model, sampler = solver.model, solver.sampler
    if len(keys) != B:
        raise ValueError(f"solve_canvas: {len(keys)} keys for {B} canvases")
    if C != model.latent_shape[0] or tiling.tile != model.latent_shape[1]:
        raise ValueError(f"solve_canvas: canvas channels {C} / tile {tiling.tile} do not match the prior's latent "
                         f"{tuple(model.latent_shape)}")
    if noise_correction is not None and not 0.0 <= float(noise_correction) < float("inf"):
        raise ValueError(f"noise_correction must be a non-negative number or None, got {noise_correction!r}")
    regions = regions or region_tiling(tiling)
    same_layout = regions == tiling   # a denoiser tile is a region: it runs from its own start
    rs = region_starts(sampler, sigma2_map, regions.layout(h, w), mode, tile_sigma2)
    if start is not None:
        if mode != "image" or tuple(start.shape) != (B,):
            raise ValueError(f"solve_canvas: a given start must be (B,) = ({B},) in mode 'image', got "
                             f"{tuple(start.shape)} in mode {mode!r}")
        if int(start.min()) < 0 or int(start.max()) >= sampler.num_steps:
            raise ValueError(f"solve_canvas: start {start.tolist()} is off the grid 0..{sampler.num_steps - 1}")
        rs.start = start.to(rs.start.device).view(B, 1, 1, 1).expand_as(rs.start).clone()
        rs.tile_start = start.to(rs.tile_start.device).view(B, 1, 1).expand_as(rs.tile_start).clone()
    if max_start is not None:
        rs.start = torch.minimum(rs.start, max_start.to(rs.start).view(B, 1, 1, 1))
        rs.tile_start = torch.minimum(rs.tile_start, max_start.to(rs.tile_start).view(B, 1, 1))
    noise = randn_per_sample((C, h, w), generators(job_seed, keys, NOISE_INJECTION), dtype=z_hat.dtype,
                             device=z_hat.device)
    gens = generators(job_seed, keys, SAMPLER)
    seeds = [sample_seed(job_seed, key, TILE_SHIFT) for key in keys]
    top = rs.top
    z = z_hat.detach().clone()
    account = {key: torch.zeros(B, dtype=torch.long) for key in ACCOUNT_KEYS}
    tile_steps = torch.zeros(B, dtype=torch.long)
    rows = None
    for k in range(int(top.max()) if B else -1, -1, -1):
        now = (top >= k).nonzero().flatten()
        if rows is None or now.numel() != rows.numel():   # rows only ever join
            rows, dev = now, now.to(z.device)
            op = operator if operator is None or rows.numel() == B else operator.subset(rows)
            y_act = None if y is None else y[dev]
            gens_act = [gens[i] for i in rows.tolist()]
        start = rs.start[dev]
        held = held_latent(z_hat[dev], noise[dev], rs.sigma2[dev], start, k, sampler, noise_correction)
        z_k = torch.where(start <= k, held, z[dev])
        layouts = [tiling.layout(h, w, seeds[i], k) for i in rows.tolist()]
        count = {key: torch.zeros(rows.numel(), dtype=torch.long) for key in ACCOUNT_KEYS}
        tiles_on = rs.tile_start[dev] >= k if same_layout else None
        z_new, calls = _reverse_step(solver, z_k, k, start >= k, tiles_on, layouts, y_act, op, gens_act, count,
                                     tile_batch, tiling.mode == "whole")
        z[dev] = z_new
        tile_steps[rows] += calls
        for key in ACCOUNT_KEYS:
            account[key][rows] += count[key]
    account["tile_steps"] = tile_steps.clone()
    return CanvasResult(z0=z, starts=rs, nfe=top + 1, tile_steps=tile_steps, account=account)
