"""Flash on a whole photo at its own size: severity, the canvas loop, decode, crop back.

Why: the prior only knows its own latent size, so a photo of any other size is restored on
a latent canvas (docs/method.md §7): the image is reflect-padded at the bottom and right so
its latent is a whole number of latent pixels and at least one tile per side
(`pipeline.sampling.tiles.canvas_size`), the severity encoder runs on the padded image whole
(`severity_image`: ẑ and the image's σ̂²), and the start steps come from `flash.starts`:
"image" starts the whole photo from its σ̂² exactly as a crop; "region" gives each region
tile of a non-overlapping cut its own σ̂² (the encoder on the region's window,
`pipeline.models.region_severity`) and start; "image-max" starts the whole photo at its
worst region's start. `solve_canvas` runs the solver's own step with the default tiling (the
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
from pipeline.models.region_severity import region_sigma2
from pipeline.models.whole_image_guidance import whole_image_autoencoder
from pipeline.models.window_blend import blend_windows, windowed_autoencoder
from pipeline.models.whole_image_severity import severity_image
from pipeline.restoration.flash import Flash
from pipeline.restoration.region_loop import region_tiling, solve_canvas
from pipeline.restoration.region_starts import cover_max
from pipeline.sampling.tiles import Tiling, canvas_size, reflect_pad
from pipeline.solvers.base import ACCOUNT_KEYS


def native_size(model: LatentDiffusion) -> tuple[int, int]:
    """The image size the prior was trained on: its latent size times the autoencoder's factor."""
    f = model.autoencoder.downsample
    return model.latent_shape[1] * f, model.latent_shape[2] * f


def padded_measurement(flash: Flash, y: torch.Tensor) -> torch.Tensor:
    """y (B,3,H,W) reflect-padded to the canvas size: latent sides whole and at least one tile."""
    model = flash.solver.model
    h, w = canvas_size(y.shape[-2], y.shape[-1], model.autoencoder.downsample, model.latent_shape[1])
    return reflect_pad(y, h, w)


def coders(model: LatentDiffusion, statistics: str):
    """The context in which a solver's encode/decode of a canvas run as `statistics` says:
    windows of the prior's tile, blended (pipeline/models/window_blend.py), or the whole image
    (pipeline/models/whole_image_guidance.py)."""
    if statistics == "window":
        return windowed_autoencoder(model.autoencoder, model.latent_shape[1])
    return whole_image_autoencoder(model.autoencoder)


@torch.no_grad()
def decode_canvas(model: LatentDiffusion, z: torch.Tensor, statistics: str) -> torch.Tensor:
    """The padded image of a canvas latent, as `coders` decodes it."""
    ae = model.autoencoder
    if statistics == "window":
        return blend_windows(ae.decode, z, model.latent_shape[1], 1, ae.downsample)
    return decode_image(ae, z, z.shape[-2] * ae.downsample, z.shape[-1] * ae.downsample)


def default_tiling(model: LatentDiffusion) -> Tiling:
    """The default canvas tiling: the prior's tile size, overlap 2 (pipeline.sampling.tiles.Tiling)."""
    return Tiling(model.latent_shape[1])


@torch.no_grad()
def estimate_whole(flash: Flash, y: torch.Tensor, starts: str = "region", tiling: Tiling | None = None,
                   statistics: str = "window") -> tuple:
    """(ẑ over the canvas, the photo's σ̂² (B,), start index (B,), σ̂² per region (B, my, mx)).

    The photo's σ̂² is the mean of its regions' (the paper's per-image rule on the map); the
    start is that σ̂²'s in mode "image", the largest region's otherwise (the loop length)."""
    y_pad = padded_measurement(flash, y)
    if statistics == "window":
        f, T = flash.encoder.config.downsample, flash.solver.model.latent_shape[1]
        z_hat = blend_windows(lambda p: flash.encoder.head_inputs(p)[0], y_pad, T, f, 1)
    else:
        z_hat = severity_image(flash.encoder, y_pad).z_hat
    regions = region_tiling(tiling or default_tiling(flash.solver.model))
    per_region = region_sigma2(flash.encoder, y_pad, regions.layout(*z_hat.shape[-2:]))
    sigma2 = per_region.flatten(1).mean(dim=1)
    top = sigma2 if starts == "image" else per_region.flatten(1).amax(dim=1)
    return z_hat, sigma2, flash.solver.sampler.start_index(top), per_region


@dataclass
class WholeResult:
    """Per-sample results at the photos' own size, in `FlashResult`'s fields plus the tiling cost."""

    x: torch.Tensor
    start_index: torch.Tensor
    nfe: torch.Tensor
    account: dict[str, torch.Tensor]
    tiles: int           # tiles per step of the canvas layout (the default tiling)
    tile_steps: torch.Tensor
    start_maps: list[dict] | None = None   # per sample: where the compute went (`start_map`)


def start_map(starts, factor: int, b: int) -> dict:
    """Sample b's region tiles in pixels of the padded photo and each one's start step: the
    picture of where the steps went (`inspect` draws it); a pixel ran from the largest start
    of the tiles covering it."""
    layout = starts.layout
    return {"tile_px": layout.y.tile * factor, "y_px": [o * factor for o in layout.y.origins],
            "x_px": [o * factor for o in layout.x.origins], "starts": starts.tile_start[b].cpu().tolist()}


def restore_whole(flash: Flash, y: torch.Tensor, operator, keys: Sequence[str], job_seed: int,
                  z_hat: torch.Tensor | None, level: torch.Tensor, start: torch.Tensor,
                  tiling: Tiling | None = None, starts: str = "image",
                  per_region: torch.Tensor | None = None, statistics: str = "window") -> WholeResult:
    """Restore photos y (B,3,H,W) of one size from their estimate (ẑ canvas, noise level, start).

    `level` is the σ̂² that sets the start latent's noise (Flash's `level`); `start` (B,) is
    each photo's start index after flash.max_nfe / flash.start_step. z_hat None is the
    baseline: pure noise from the top of the grid. `starts` "region" / "image-max" take the
    σ̂² of each region (`per_region`, (B, my, mx) from `estimate_whole`; None: the whole photo
    at `start`, as in mode "image") and cap every start at `start`.
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
    start = torch.as_tensor(start).reshape(-1).to(torch.long)
    with coders(model, statistics):   # the solver's guidance decodes the canvas as the final decode does
        if starts != "image" and not baseline and per_region is not None:
            per_region = per_region.to(z_hat.device, z_hat.dtype)
            sigma2_map = cover_max(per_region, region_tiling(tiling).layout(h, w))
            res = solve_canvas(solver, y_pad, operator, z_hat, sigma2_map, list(keys), job_seed, tiling, mode=starts,
                               noise_correction=c, tile_sigma2=per_region, max_start=start)
        else:
            sigma2_map = torch.as_tensor(level).reshape(B, 1, 1, 1).to(z_hat.device, z_hat.dtype).expand(B, 1, h, w)
            res = solve_canvas(solver, y_pad, operator, z_hat, sigma2_map, list(keys), job_seed, tiling, mode="image",
                               noise_correction=c, start=start)
    x = decode_canvas(model, res.z0, statistics)[..., :H, :W]
    account = {k: res.account[k].clone() for k in ACCOUNT_KEYS}
    account["decoder_forward"] += 1
    account["inversion_calls"] = torch.zeros(B, dtype=torch.long)
    account["severity_forward"] = torch.full((B,), int(not baseline), dtype=torch.long)
    return WholeResult(x=x, start_index=res.starts.top.clone(), nfe=res.nfe, account=account,
                       tiles=tiling.layout(h, w).num_tiles, tile_steps=res.tile_steps,
                       start_maps=[start_map(res.starts, f, b) for b in range(B)])


@torch.no_grad()
def decode_whole(flash: Flash, z_hat: torch.Tensor, height: int, width: int,
                 tiling: Tiling | None = None, statistics: str = "window") -> WholeResult:
    """flash.decode_only at any size: D(ẑ) of the canvas cropped to height×width (NFE 0, start −1)."""
    model, B = flash.solver.model, z_hat.shape[0]
    x = decode_canvas(model, z_hat, statistics)[..., :height, :width]
    account = {k: torch.zeros(B, dtype=torch.long) for k in ACCOUNT_KEYS}
    account["decoder_forward"] += 1
    account["severity_forward"] = torch.ones(B, dtype=torch.long)
    account["inversion_calls"] = torch.zeros(B, dtype=torch.long)
    zero = torch.zeros(B, dtype=torch.long)
    return WholeResult(x=x, start_index=torch.full((B,), -1, dtype=torch.long), nfe=zero, account=account,
                       tiles=(tiling or default_tiling(model)).layout(*z_hat.shape[-2:]).num_tiles,
                       tile_steps=zero.clone())
