"""σ̂² per region of a photo: the severity encoder on each region's own window.

Why: the start step of a region comes from that region's σ̂² (pipeline/restoration/region_starts.py),
but the shipped variance head predicts one log σ̂² per *input* from energies pooled over the
whole input (pipeline/models/severity.py), so its per-element map is constant over a photo.
Run on one region's window, the tile the prior was trained on (64 px for the shipped models,
the crops the encoder was trained on too), it gives that region the σ̂² it would give the
region as a crop: its own blur, its own texture, its own GroupNorm statistics. A region
cut of the canvas with no overlap (`region_tiling`) costs about one more encoder pass over
the photo; windows of every photo in a batch share encoder batches (they have one shape), and
each window's σ̂² is independent of its batch partners up to the encoder's rounding.

A photo of exactly one region gets the σ̂² of `SeverityEncoder.forward` on the whole photo.
"""
from __future__ import annotations

import torch

from pipeline.models.severity import SeverityEncoder
from pipeline.sampling.tiles import TileLayout

WINDOW_BATCH = 64  # windows per encoder call: bounds memory on large photos


@torch.no_grad()
def region_sigma2(enc: SeverityEncoder, y_pad: torch.Tensor, layout: TileLayout,
                  batch: int = WINDOW_BATCH) -> torch.Tensor:
    """(B, my, mx) σ̂² of each region tile of padded photos y_pad (B, 3, f·h, f·w) in [−1, 1].

    `layout` cuts the latent canvas (h, w); a tile's window in pixels is its latent window
    times the encoder's factor f."""
    f = int(enc.config.downsample)
    B = y_pad.shape[0]
    h, w = layout.shape
    if tuple(y_pad.shape[-2:]) != (h * f, w * f):
        raise ValueError(f"padded photo {tuple(y_pad.shape[-2:])} is not the layout's canvas {(h, w)} × {f}")
    T = layout.y.tile * f
    spots = [(b, i, j) for b in range(B) for i in range(layout.y.count) for j in range(layout.x.count)]
    out = torch.empty(len(spots), dtype=torch.float64)
    for a in range(0, len(spots), batch):
        chunk = spots[a:a + batch]
        windows = torch.stack([y_pad[b, :, layout.y.origins[i] * f:layout.y.origins[i] * f + T,
                                     layout.x.origins[j] * f:layout.x.origins[j] * f + T] for b, i, j in chunk])
        _, sigma2 = enc(windows)
        out[a:a + len(chunk)] = sigma2.detach().to(torch.float64).cpu()
    return out.view(B, layout.y.count, layout.x.count)
