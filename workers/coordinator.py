"""The scheduling loop of a Ray restore job, run in the driver.

Why in the driver: it holds only keys, small severity results and a bounded number of
batches; images travel actor to actor through the object store. The loop:

  readers ──chunks──▶ dedupe (shard order) ──samples──▶ severity ──estimates──▶ Bucketer
  Bucketer ──exact batches, longest first──▶ solvers ──results by reference──▶ writer

Backpressure: a reader gets its next chunk only while the samples buffered between the
readers and the solvers stay under a cap; each severity and solver actor has at most
`depth` calls in flight; solvers get no new batch while the writer lags. Chunks are
consumed in shard order (later shards prefetch one chunk), so which duplicate key is
kept does not depend on timing. When nothing is in flight, partial buckets are flushed,
so the loop can never wait on itself.
"""
from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import ray

from pipeline.bucketing import Bucketer
from pipeline.config import RestoreConfig
from pipeline.outputs import error_row
from pipeline.restore import Restorer
from pipeline.samples import SampleError
from pipeline.stats import JobStats

from .pool import StagePool
from .reader import wire_key


@dataclass
class ShardSlot:
    shard: str
    reader: int
    pos: int = 0
    pending: bool = False
    done: bool = False
    chunks: deque = field(default_factory=deque)


class Coordinator:
    def __init__(self, cfg: RestoreConfig, shards: list[str], done: set[str], readers: StagePool,
                 severity: StagePool, solvers: StagePool, writer, stats: JobStats,
                 on_progress: Callable[[JobStats], None] | None = None):
        ex = cfg.execution
        self.bs, self.stats, self.on_progress, self.writer = ex.batch_size, stats, on_progress, writer
        self.readers, self.severity, self.solvers = readers, severity, solvers
        self.shards, self.next_shard, self.open = list(shards), 0, deque()
        self.done, self.seen = done, set()
        self.bucketer = Bucketer(ex.batch_size, ex.bucket_width, ex.max_wait_s)
        self.pending, self.rows_out, self.ready, self.writes = [], [], [], []
        self.sev_items, self.seq = 0, itertools.count()
        self.chunk = 2 * self.bs
        self.cap = self.bs * (4 * severity.size + 2 * solvers.depth * solvers.size + 4)
        self.max_writes = solvers.depth * solvers.size + 2
        self.tick = min(0.5, max(0.05, float(ex.max_wait_s)))

    # --- the loop -------------------------------------------------------------------
    def run(self) -> dict:
        while True:
            self._schedule()
            waitable = self.readers.refs() + self.severity.refs() + self.solvers.refs() + self.writes
            if not waitable:
                if self._unblock():
                    continue
                break
            ready, _ = ray.wait(waitable, num_returns=1, timeout=self.tick)
            for ref in ready:
                self._handle(ref)
        final = ray.get(self.writer.finish.remote())
        self.stats.stage("write", final["seconds"], 0)
        return final

    def buffered(self) -> int:
        return len(self.pending) + self.sev_items + len(self.bucketer) + sum(len(b) for _, _, b in self.ready)

    def reading_done(self) -> bool:
        return self.next_shard >= len(self.shards) and not self.open

    def _schedule(self) -> None:
        # 1. readers: one open shard per reader, one chunk in flight or buffered per shard
        self.readers.ensure()
        if not self.readers.handles and not self.reading_done():
            raise RuntimeError(f"every reader actor is dead; the job cannot go on (rerun to resume); "
                               f"last error: {self.readers.last_error}")
        busy = {s.reader for s in self.open}
        for idx in list(self.readers.handles):
            if idx not in busy and self.next_shard < len(self.shards):
                self.open.append(ShardSlot(self.shards[self.next_shard], idx))
                self.next_shard += 1
        for slot in self.open:
            if not (slot.done or slot.pending or slot.chunks) and self.buffered() < self.cap:
                slot.reader = self.readers.submit((slot.shard, slot.pos, self.chunk), prefer=slot.reader, force=True)
                slot.pending = True
        # 2. consume chunks in shard order
        while self.open and self.open[0].chunks:
            head = self.open[0]
            self._consume(head.shard, head.chunks.popleft())
            if head.done and not head.chunks:
                self.open.popleft()
                self.stats.stage("read", 0.0, 1)
        # 3. severity
        while self.pending and self.severity.free() and (len(self.pending) >= self.bs or self.reading_done()):
            self._submit_severity()
        # 4. buckets: expired ones, and everything once input has ended
        self._release(self.bucketer.expired())
        if self.reading_done() and not self.pending and self.severity.idle():
            self._release(self.bucketer.flush())
        # 5. solvers, longest batch first, while the writer keeps up
        while self.ready and self.solvers.free() and len(self.writes) < self.max_writes:
            self.solvers.submit(heapq.heappop(self.ready)[2])
        # 6. error rows to the writer
        if self.rows_out and (len(self.rows_out) >= self.bs or self.reading_done()):
            self._write(list(self.rows_out))
            self.rows_out.clear()

    def _unblock(self) -> bool:
        """Nothing in flight: push what is buffered onward (never wait on ourselves)."""
        if self.pending:
            self._submit_severity(force=True)
        elif len(self.bucketer):
            self._release(self.bucketer.flush())
        elif self.rows_out:
            self._write(list(self.rows_out))
            self.rows_out.clear()
        else:
            return bool(self.ready) or not self.reading_done()
        return True

    # --- stage hand-offs ------------------------------------------------------------
    def _consume(self, shard: str, items: list) -> None:
        for item in items:
            key = wire_key(item)
            if key in self.done:
                self.stats.skipped += 1
                continue
            if key in self.seen:
                self.rows_out.append(Restorer.error(key, shard, SampleError(
                    "duplicate", key, "key already read from another shard; the first occurrence is kept", shard)))
                continue
            self.seen.add(key)
            (self.rows_out if isinstance(item, dict) else self.pending).append(item)

    def _submit_severity(self, force: bool = False) -> None:
        take, self.pending = self.pending[:self.chunk], self.pending[self.chunk:]
        self.severity.submit(take, force=force)
        self.sev_items += len(take)

    def _release(self, batches: list) -> None:
        for batch in batches:
            start = max(e.start_step for e in batch)
            heapq.heappush(self.ready, (-start, next(self.seq), batch))

    def _write(self, results_or_ref) -> None:
        if isinstance(results_or_ref, list):
            results_or_ref = [(r, None, None) for r in results_or_ref]
        self.writes.append(self.writer.add.remote(results_or_ref))

    def _handle(self, ref) -> None:
        if self.readers.owns(ref):
            status, (shard, pos, _), res, _ = self.readers.finish(ref)
            if status == "lost":
                raise RuntimeError(f"reading {shard} failed {self.readers.max_attempts} times (reader actors died)")
            if status == "ok":
                slot = next(s for s in self.open if s.shard == shard)
                slot.pending, slot.done = False, res["done"]
                slot.pos += len(res["items"])
                slot.chunks.append(res["items"])
                self.stats.stage("read", res["seconds"], 0)
        elif self.severity.owns(ref):
            status, samples, res, _ = self.severity.finish(ref)
            if status == "retried":
                return
            self.sev_items -= len(samples)
            if status == "lost":
                self.rows_out += [lost_row(s.key, s.shard, "severity") for s in samples]
                return
            self.rows_out += res["rows"]
            self.stats.stage("severity", res["seconds"], len(samples))
            self._release(self.bucketer.add_many((e, e.prepared.group, e.start_step) for e in res["estimates"]))
        elif self.solvers.owns(ref):
            status, batch, res, extra = self.solvers.finish(ref)
            if status == "lost":
                self.rows_out += [lost_row(e.key, e.prepared.shard, "solver") for e in batch]
            elif status == "ok":
                self.stats.stage("solve", res["seconds"], res["n"])
                self._write(extra[0])  # the results stay in the object store; the writer fetches them
        else:
            self.writes.remove(ref)
            res = ray.get(ref)  # a dead writer fails the job: committed parts stay, a rerun resumes
            for row in res["rows"]:
                self.stats.row(row)
            self.stats.stage("write", res["seconds"], len(res["rows"]))
            if self.on_progress:
                self.on_progress(self.stats)


def lost_row(key: str, shard: str, stage: str) -> dict:
    return error_row(key, shard, f"sample {key}: the {stage} actor died on every attempt", "worker_lost")
