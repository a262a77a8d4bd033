"""The severity encoder on a whole photo at its own size: ẑ, the σ̂² map and the image's σ̂², tiled exactly when large.

Why: the start step of a photo comes from its σ̂², and (later) each region's from the map
pooled over the region, so both must be the same whichever way the photo was cut.
The photo is padded as for the autoencoder (pipeline/models/whole_image.py) and
`SeverityEncoder.heads` runs on it whole when the memory rule allows. Otherwise tiles run
the encoder and the head's two convolutions with every GroupNorm (the encoder's and the
head's input norm) pooled over the whole image (pipeline/models/tiled_groupnorm.py);
the head reads each map's mean energy, so the tiles add up their cores' sums of squares,
and the head's final layer runs once on the pooled energies. The optional band energies
(`head_bands`) are computed on the whole grey image: one channel, cheap beside the encoder.

The map is what the head predicts per latent element, exp(log_var). The shipped head
predicts one log σ̂² per image from energies pooled over the whole image, so its map is
constant over the photo: pooling it per region gives every region the image's σ̂².
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.models.severity import SeverityEncoder
from pipeline.models.tiled_groupnorm import pooled_tiles
from pipeline.models.whole_image import MemoryRule, pad_to_multiple, plan_tiles


@dataclass
class SeverityMap:
    """ẑ and σ̂² of one batch of photos; latents are at the padded size ⌈H/f⌉×⌈W/f⌉."""

    z_hat: torch.Tensor       # (B, C, h, w), scaled latent units
    sigma2_map: torch.Tensor  # (B, C, h, w), exp(log-variance) per latent element
    sigma2: torch.Tensor      # (B,), the mean of the map: the image's σ̂²
    height: int
    width: int


def _path(enc: SeverityEncoder) -> list:
    extra = [enc.quant_conv] if enc.quant_conv is not None else []
    return [enc.encoder] + extra + [enc.variance_head.conv1, enc.variance_head.conv2]


def severity_image(enc: SeverityEncoder, y: torch.Tensor, *, rule: MemoryRule = MemoryRule(),
                   tile: int | None = None) -> SeverityMap:
    """S_θ on degraded photos y (B,3,H,W) in [−1,1], any H, W ≥ 8, with whole-image statistics."""
    height, width = y.shape[-2:]
    yp = pad_to_multiple(y, int(enc.config.downsample))
    head = enc.variance_head

    def hidden(piece: torch.Tensor):
        z_hat, inputs = enc.head_inputs(piece)
        return (z_hat, *head.hidden(inputs))

    tiles = plan_tiles(hidden, yp, [enc], _path(enc), rule=rule, tile=tile)
    with torch.no_grad():
        if tiles is None:
            z_hat, log_var = enc.heads(yp)
        else:
            z_hat, log_s2 = _tiled_heads(enc, hidden, yp, tiles)
            log_var = log_s2.view(-1, 1, 1, 1).expand_as(z_hat)
    sigma2_map = log_var.exp()
    return SeverityMap(z_hat, sigma2_map, sigma2_map.flatten(1).mean(dim=1), int(height), int(width))


def _tiled_heads(enc: SeverityEncoder, hidden, yp: torch.Tensor, tiles) -> tuple[torch.Tensor, torch.Tensor]:
    """(ẑ stitched, log σ̂² per image) from exact tiles: the head's energies summed over the cores."""
    f = int(enc.config.downsample)
    z_hat = None
    sums = None
    count = 0
    for t, (z, h1, h2) in pooled_tiles(hidden, yp, [enc], tiles):
        if z_hat is None:
            z_hat = z.new_empty(*z.shape[:2], yp.shape[-2] // f, yp.shape[-1] // f)
        z_hat[..., t.core[0] // f:t.core[2] // f, t.core[1] // f:t.core[3] // f] = z
        part = torch.cat([h1, h2], dim=1).to(torch.float64).pow(2).sum(dim=(2, 3))
        sums = part if sums is None else sums + part
        count += h1.shape[-2] * h1.shape[-1]
    log_energies = (sums / count).to(z_hat.dtype).add(1e-6).log()
    return z_hat, enc.variance_head.predict(log_energies, yp)

