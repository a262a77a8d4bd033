"""Flash on a whole photo at its own size: severity, the canvas loop, decode, crop back.

Why: the prior only knows its own latent size, so a photo of any other size is restored on
a latent canvas (docs/method.md §7): the image is reflect-padded at the bottom and right so
its latent is a whole number of latent pixels and at least one tile per side
(`pipeline.sampling.tiles.canvas_size`), the severity encoder runs on the padded image whole
(`severity_image`: ẑ and the image's σ̂²), the start step comes from σ̂² exactly as for a
crop (one start per image: per-region starts wait for a head whose map is not constant),
`solve_canvas` runs the solver's own step in mode "image" with the default tiling (the
solver's data consistency decodes the whole canvas and applies the operator to the padded
measurement), and `decode_image` decodes the canvas, cropped back to H×W.

The noise of the start latent and of the sampler comes from the same (job seed, key)
streams as `Flash.restore`; the baseline (no severity encoder) starts every pixel from pure
noise at the top of the grid, drawn from the start-noise stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.models.whole_image import decode_image
from pipeline.models.whole_image_severity import severity_image
from pipeline.restoration.flash import Flash
from pipeline.restoration.region_loop import solve_canvas
from pipeline.sampling.tiles import Tiling, canvas_size, reflect_pad
from pipeline.solvers.base import ACCOUNT_KEYS


# The solvers' data-consistency step decodes (and back-propagates through) the whole canvas, so
# memory grows with the photo; until that step is tiled, larger photos are refused at read time.
WHOLE_PHOTO_MAX_PIXELS = 1024 * 1024


def native_size(model: LatentDiffusion) -> tuple[int, int]:
    """The image size the prior was trained on: its latent size times the autoencoder's factor."""
    f = model.autoencoder.downsample
    return model.latent_shape[1] * f, model.latent_shape[2] * f


def padded_measurement(flash: Flash, y: torch.Tensor) -> torch.Tensor:
    """y (B,3,H,W) reflect-padded to the canvas size: latent sides whole and at least one tile."""
    model = flash.solver.model
    h, w = canvas_size(y.shape[-2], y.shape[-1], model.autoencoder.downsample, model.latent_shape[1])
    return reflect_pad(y, h, w)


def default_tiling(model: LatentDiffusion) -> Tiling:
    """The default canvas tiling: the prior's tile size, overlap 2 (pipeline.sampling.tiles.Tiling)."""
    return Tiling(model.latent_shape[1])


@torch.no_grad()
def estimate_whole(flash: Flash, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ẑ over the canvas, σ̂² (B,) of the padded image, start index (B,)) for photos y in [−1,1]."""
    sm = severity_image(flash.encoder, padded_measurement(flash, y))
    return sm.z_hat, sm.sigma2, flash.solver.sampler.start_index(sm.sigma2)


@dataclass
class WholeResult:
    """Per-sample results at the photos' own size, in `FlashResult`'s fields plus the tiling cost."""

    x: torch.Tensor
    start_index: torch.Tensor
    nfe: torch.Tensor
    account: dict[str, torch.Tensor]
    tiles: int           # tiles per step of the canvas layout (the default tiling)
    tile_steps: torch.Tensor


def restore_whole(flash: Flash, y: torch.Tensor, operator, keys: Sequence[str], job_seed: int,
                  z_hat: torch.Tensor | None, level: torch.Tensor, start: torch.Tensor,
                  tiling: Tiling | None = None) -> WholeResult:
    """Restore photos y (B,3,H,W) of one size from their estimate (ẑ canvas, noise level, start).

    `level` is the σ̂² that sets the start latent's noise (Flash's `level`); `start` (B,) is
    each photo's start index after flash.max_nfe / flash.start_step. z_hat None is the
    baseline: pure noise from the top of the grid.
    """
    if flash.init == "ddim_inversion":
        raise ValueError("flash.init=ddim_inversion is not implemented for photos at their own size")
    solver, model = flash.solver, flash.solver.model
    H, W = y.shape[-2:]
    y_pad = padded_measurement(flash, y)
    f = model.autoencoder.downsample
    B, C = y.shape[0], model.latent_shape[0]
    h, w = y_pad.shape[-2] // f, y_pad.shape[-1] // f
    c = flash.noise_correction if flash.init == "noise_correction" else None
    baseline = z_hat is None
    if baseline:  # baseline: ẑ = 0 held at full noise (v = c·σ̂² = 1)
        z_hat = torch.zeros(B, C, h, w, dtype=y.dtype, device=y.device)
        level, c = torch.ones(B, dtype=torch.float64), 1.0
    tiling = tiling or default_tiling(model)
    sigma2_map = torch.as_tensor(level).reshape(B, 1, 1, 1).to(z_hat.device, z_hat.dtype).expand(B, 1, h, w)
    res = solve_canvas(solver, y_pad, operator, z_hat, sigma2_map, list(keys), job_seed, tiling, mode="image",
                       noise_correction=c, start=torch.as_tensor(start).reshape(-1).to(torch.long))
    x = decode_image(model.autoencoder, res.z0, y_pad.shape[-2], y_pad.shape[-1])[..., :H, :W]
    account = {k: res.account[k].clone() for k in ACCOUNT_KEYS}
    account["decoder_forward"] += 1
    account["inversion_calls"] = torch.zeros(B, dtype=torch.long)
    account["severity_forward"] = torch.full((B,), int(not baseline), dtype=torch.long)
    return WholeResult(x=x, start_index=res.starts.top.clone(), nfe=res.nfe, account=account,
                       tiles=tiling.layout(h, w).num_tiles, tile_steps=res.tile_steps)


@torch.no_grad()
def decode_whole(flash: Flash, z_hat: torch.Tensor, height: int, width: int) -> WholeResult:
    """flash.decode_only at any size: D(ẑ) of the canvas cropped to height×width (NFE 0, start −1)."""
    model, B = flash.solver.model, z_hat.shape[0]
    ae = model.autoencoder
    f = ae.downsample
    x = decode_image(ae, z_hat, z_hat.shape[-2] * f, z_hat.shape[-1] * f)[..., :height, :width]
    account = {k: torch.zeros(B, dtype=torch.long) for k in ACCOUNT_KEYS}
    account["decoder_forward"] += 1
    account["severity_forward"] = torch.ones(B, dtype=torch.long)
    account["inversion_calls"] = torch.zeros(B, dtype=torch.long)
    zero = torch.zeros(B, dtype=torch.long)
    return WholeResult(x=x, start_index=torch.full((B,), -1, dtype=torch.long), nfe=zero, account=account,
                       tiles=default_tiling(model).layout(*z_hat.shape[-2:]).num_tiles, tile_steps=zero.clone())
