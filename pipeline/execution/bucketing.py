"""Buckets of samples with neighbouring start steps, released as exact batches.

A bucket is keyed by (group, start_step // width): `group` holds what must be equal inside a
solver batch (operator family, image size). A bucket is released as soon as it holds a full
batch; the rest goes on `flush` (end of input) or when its oldest sample has waited longer
than `max_wait_s`. Released batches are ordered longest-first (largest start step), which
keeps solvers busy at the tail of a job. Pure Python: the Ray and the local backend
share it.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable


@dataclass
class Bucket:
    items: list[Any] = field(default_factory=list)
    opened: float = 0.0


class Bucketer:
    def __init__(self, batch_size: int, width: int, max_wait_s: float | None = None, clock=time.monotonic):
        if batch_size < 1 or width < 1:
            raise ValueError(f"batch_size and bucket width must be positive, got {batch_size}, {width}")
        self.batch_size, self.width, self.max_wait_s, self.clock = batch_size, width, max_wait_s, clock
        self.buckets: "OrderedDict[tuple, Bucket]" = OrderedDict()

    def __len__(self) -> int:
        return sum(len(b.items) for b in self.buckets.values())

    def bucket_key(self, group: Hashable, start_step: int) -> tuple:
        return (group, int(start_step) // self.width)

    def add(self, item: Any, group: Hashable, start_step: int) -> list[list[Any]]:
        """Add one item; return the full batches this completes (usually none or one)."""
        key = self.bucket_key(group, start_step)
        bucket = self.buckets.get(key)
        if bucket is None:
            bucket = self.buckets[key] = Bucket(opened=self.clock())
        bucket.items.append((int(start_step), item))
        out = []
        while len(bucket.items) >= self.batch_size:
            out.append(self._take(key, self.batch_size))
        return _longest_first(out)

    def add_many(self, entries: Iterable[tuple[Any, Hashable, int]]) -> list[list[Any]]:
        out = []
        for item, group, start in entries:
            key = self.bucket_key(group, start)
            bucket = self.buckets.setdefault(key, Bucket(opened=self.clock()))
            bucket.items.append((int(start), item))
            while len(bucket.items) >= self.batch_size:
                out.append(self._take(key, self.batch_size))
        return _longest_first(out)

    def expired(self) -> list[list[Any]]:
        """Partial batches whose oldest item waited past the limit (longest first)."""
        if self.max_wait_s is None:
            return []
        now = self.clock()
        keys = [k for k, b in self.buckets.items() if b.items and now - b.opened >= self.max_wait_s]
        return _longest_first([self._take(k, None) for k in keys])

    def flush(self) -> list[list[Any]]:
        """Everything left, as batches of at most batch_size, longest first."""
        out = []
        for key in list(self.buckets):
            while key in self.buckets:
                out.append(self._take(key, self.batch_size))
        return _longest_first(out)

    def _take(self, key: tuple, n: int | None) -> tuple[int, list[Any]]:
        bucket = self.buckets[key]
        n = len(bucket.items) if n is None else min(n, len(bucket.items))
        batch, bucket.items = bucket.items[:n], bucket.items[n:]
        if bucket.items:
            bucket.opened = self.clock()
        else:
            del self.buckets[key]
        return max(s for s, _ in batch), [item for _, item in batch]


def _longest_first(taken: list[tuple[int, list[Any]]]) -> list[list[Any]]:
    return [items for _, items in sorted(taken, key=lambda t: t[0], reverse=True)]
