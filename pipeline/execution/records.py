"""What flows between the stages of a restore job.

Two kinds of thing travel: heavy payloads (`Prepared`, `Estimated`: tensors) that go stage
to stage by reference, and small `SampleRecord`s that the scheduler reads to dedupe, bucket
and account. The scheduler never needs a tensor, so at cluster scale the driver carries
bytes per sample, not images (a 64×64 float image alone is 48 KiB).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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

    @property
    def group(self) -> tuple:
        """What must be equal inside one batch: operator family and image size."""
        return (self.params["operator"], tuple(self.y.shape[-2:]))

    def record(self) -> "SampleRecord":
        return SampleRecord(self.key, self.shard, self.params["operator"], tuple(int(s) for s in self.y.shape[-2:]))


@dataclass
class Estimated:
    """A prepared sample with its severity estimate (the severity stage's output)."""

    prepared: Prepared
    z_hat: torch.Tensor | None
    sigma2: float
    start_step: int
    seconds_severity: float
    nfe_uncapped: int | None = None  # the start step's NFE before flash.max_nfe cut it (None: not cut)

    @property
    def key(self) -> str:
        return self.prepared.key

    def record(self) -> "SampleRecord":
        return replace(self.prepared.record(), start_step=self.start_step,
                       sigma2=None if self.sigma2 != self.sigma2 else self.sigma2)


@dataclass(frozen=True)
class SampleRecord:
    """The scheduler's view of a sample: who it is, what batch it may join, where it starts.

    `group` (family, image shape) is what a solver batch must share, so archives of mixed
    sizes bucket correctly; `start_step` and `sigma2` are set once severity has run.
    """

    key: str
    shard: str
    family: str
    shape: tuple[int, int]
    start_step: int | None = None
    sigma2: float | None = None

    @property
    def group(self) -> tuple:
        return (self.family, self.shape)


def pick(records: list[SampleRecord], payloads: tuple[dict, ...]) -> list:
    """The payload of each record, looked up by key across the payload dicts it came in."""
    merged: dict = {}
    for p in payloads:
        merged.update(p)
    missing = [r.key for r in records if r.key not in merged]
    if missing:
        raise KeyError(f"payloads lack keys {missing[:5]}")
    return [merged[r.key] for r in records]
