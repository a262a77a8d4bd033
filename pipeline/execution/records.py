"""What flows between the stages of a restore job.

Two kinds of thing travel: heavy payloads (`Prepared`, `Estimated`: tensors) that go stage
to stage by reference, and small `SampleRecord`s that the scheduler reads to dedupe, bucket
and account. The scheduler never needs a tensor, so at cluster scale the driver carries
bytes per sample, not images (a 64×64 float image alone is 48 KiB).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.restoration.items import Estimated, Prepared


@dataclass(frozen=True)
class SampleRecord:
    """The scheduler's view of a sample: who it is, what batch it may join, where it starts.

    `group` (family, image shape) is what a solver batch must share, so archives of mixed
    sizes bucket correctly; `start_step` and `sigma2` are set once severity has run, and for
    photos off the prior's size `tiles`, the predicted `tile_steps` and each tile's σ̂² (a few
    hundred numbers for a megapixel photo: what `estimate` needs to price other solvers).
    """

    key: str
    shard: str
    family: str
    shape: tuple[int, int]
    start_step: int | None = None
    sigma2: float | None = None
    tiles: int = 1
    tile_steps: int | None = None
    tile_sigma2: tuple[float, ...] = ()

    @property
    def cost(self) -> int:
        """Denoiser tile calls the solve will take: tile_steps, else start + 1."""
        return self.tile_steps if self.tile_steps is not None else self.start_step + 1

    @property
    def group(self) -> tuple:
        return (self.family, self.shape)


def record_of(item: Prepared | Estimated) -> SampleRecord:
    """The scheduler's record of a payload: size and family, plus the start once severity ran."""
    if isinstance(item, Estimated):
        regions = () if item.region_sigma2 is None else tuple(float(v) for v in item.region_sigma2.flatten())
        return SampleRecord(item.key, item.prepared.shard, item.prepared.params["operator"],
                            tuple(int(s) for s in item.prepared.y.shape[-2:]), item.start_step,
                            None if item.sigma2 != item.sigma2 else item.sigma2, item.tiles, item.tile_steps, regions)
    return SampleRecord(item.key, item.shard, item.params["operator"], tuple(int(s) for s in item.y.shape[-2:]))


def pick(records: list[SampleRecord], payloads: tuple[dict, ...]) -> list:
    """The payload of each record, looked up by key across the payload dicts it came in."""
    merged: dict = {}
    for p in payloads:
        merged.update(p)
    missing = [r.key for r in records if r.key not in merged]
    if missing:
        raise KeyError(f"payloads lack keys {missing[:5]}")
    return [merged[r.key] for r in records]
