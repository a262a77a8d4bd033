"""What the restorer takes and gives per sample: `Prepared` (a measurement and its operator
dict) and `Estimated` (the same with its severity estimate). These are the heavy payloads
that travel between stages by reference; the scheduler reads only the small records
`pipeline.execution.records` makes of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Prepared:
    """A sample ready for the models: measurement y ∈ [−1,1] and its operator dict."""

    key: str
    shard: str
    y: torch.Tensor
    clean01: torch.Tensor | None
    params: dict
    input_sha256: str | None = None
    estimated: dict | None = None     # parameters the job estimated from the image (e.g. noise_sigma)
    pending: tuple = ()               # fields the severity stage estimates (blind Gaussian blur: severity)

    @property
    def group(self) -> tuple:
        """What must be equal inside one batch: operator family and image size."""
        return (self.params["operator"], tuple(self.y.shape[-2:]))


@dataclass
class Estimated:
    """A prepared sample with its severity estimate (the severity stage's output)."""

    prepared: Prepared
    z_hat: torch.Tensor | None
    sigma2: float
    start_step: int
    seconds_severity: float
    nfe_uncapped: int | None = None  # the start step's NFE before flash.max_nfe cut it (None: not cut)
    region_sigma2: torch.Tensor | None = None  # (my, mx) σ̂² per region tile (photos off the prior's size, flash.starts)
    tiles: int = 1                 # denoiser tiles of one canvas step (1 at the prior's own size)
    tile_steps: int | None = None  # predicted denoiser calls summed over tiles (None: start + 1)

    @property
    def key(self) -> str:
        return self.prepared.key
