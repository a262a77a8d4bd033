"""The scheduling loop of a restore job, the same for every backend.

It holds only small records (keys, groups, start steps), a bounded number of batches and
references to payloads; images and latents travel stage to stage as references the
backend resolves (Ray object refs, or plain objects in process). The loop:

  readers ──records──▶ dedupe (shard order) ──▶ severity ──records──▶ Bucketer
  Bucketer ──exact batches, longest first──▶ solvers ──results by reference──▶ writer

Backpressure: a reader gets its next chunk only while the samples buffered between the
readers and the solvers stay under a cap; each stage actor has at most `depth` calls in
flight; solvers get no new batch while the writer lags. Chunks are consumed in shard
order (later shards prefetch one chunk), so which duplicate key is kept does not depend on
timing. When nothing is in flight, partial buckets are flushed, so the loop can never wait
on itself. `stop_after="severity"` runs the same loop without the solve and write stages
and hands back the severity records and error rows in read order (`workers.estimate`
prices a job from them). A backend supplies the stage pools (`submit`/`finish`, with its own retries),
`wait`, and the writer; see `workers/local_backend.py` and `workers/ray_backend.py`.
"""
from __future__ import annotations

import heapq
import itertools
import pickle
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from pipeline.execution.bucketing import Bucketer
from pipeline.execution.config import RestoreConfig
from pipeline.io.outputs import error_for, error_row
from pipeline.execution.records import SampleRecord
from pipeline.io.samples import SampleError
from pipeline.execution.stages import record_key
from pipeline.execution.stats import JobStats


@dataclass
class ShardSlot:
    shard: str
    reader: int
    pos: int = 0
    pending: bool = False
    done: bool = False
    chunks: deque = field(default_factory=deque)


class CallPool:
    """What a backend's stage pool shares: the calls in flight, keyed by their reference.
    Subclasses add `submit(args, prefer, force)`, `finish(ref)`, `free()` and `ensure()`."""

    calls: dict

    def idle(self) -> bool:
        return not self.calls

    def refs(self) -> list:
        return list(self.calls)

    def owns(self, ref) -> bool:
        return ref in self.calls


def unique(refs) -> list:
    """Payload references without repeats (by identity: plain dicts are not hashable)."""
    return list({id(r): r for r in refs}.values())


def nbytes(value) -> int:
    """What the scheduler received, as it would cross a process boundary."""
    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class Scheduler:
    def __init__(self, cfg: RestoreConfig, shards: list[str], done: set[str], backend, stats: JobStats,
                 on_progress: Callable[[JobStats], None] | None = None,
                 only: set[str] | Callable[[str, str], bool] | None = None, stop_after: str | None = None):
        if stop_after not in (None, "severity"):
            raise ValueError(f"stop_after must be None or 'severity', got {stop_after!r}")
        ex = cfg.execution
        self.bs, self.stats, self.on_progress, self.backend = ex.batch_size, stats, on_progress, backend
        self.readers, self.severity, self.solvers = (backend.pools[s] for s in ("reader", "severity", "solver"))
        self.shards, self.next_shard, self.open = list(shards), 0, deque()
        self.done, self.seen = done, set()
        # only: restrict the job to these keys, or to what only(key, shard) wants (reprocess)
        self.only = only if only is None or callable(only) else (lambda key, shard, keys=only: key in keys)
        self.bucketer = Bucketer(ex.batch_size, ex.bucket_width, backend.max_wait_s)
        self.pending, self.rows_out, self.ready, self.writes = [], [], [], []
        self.sev_items, self.seq = 0, itertools.count()
        self.chunk = 2 * self.bs
        self.cap = self.bs * (4 * self.severity.size + 2 * self.solvers.depth * self.solvers.size + 4)
        self.max_writes = self.solvers.depth * self.solvers.size + 2
        self.tick = min(0.5, max(0.05, float(ex.max_wait_s)))
        self.budget_s = ex.budget_hours * 3600 if ex.budget_hours else None
        self.max_sample_tile_steps = ex.max_sample_tile_steps
        self.budget_reached = False  # then no new solver batch starts; what is left waits for a rerun
        self.rowsteps_done = self.rowsteps_inflight = 0  # Σ tile-steps (a crop: start + 1) over solved / running samples
        self.stop_after = stop_after
        self.order: dict[str, int] = {}                 # stop_after: read position of each key
        self.estimated: list[SampleRecord] = []         # stop_after: severity records, not bucketed
        self.kept_rows: list[dict] = []                 # stop_after: error rows, not written

    # --- the loop -------------------------------------------------------------------
    def run(self) -> dict:
        while True:
            self._schedule()
            waitable = self.readers.refs() + self.severity.refs() + self.solvers.refs() + self.writes
            if not waitable:
                if self.budget_reached:
                    if self.rows_out:
                        self._write_rows()
                        continue
                    break
                if self._unblock():
                    continue
                break
            for ref in self.backend.wait(waitable, self.tick):
                self._handle(ref)
        if self.stop_after:   # severity calls may finish out of order (Ray): read order, as a job buckets
            return {"records": sorted(self.estimated, key=lambda r: self.order[r.key]), "rows": self.kept_rows}
        final = self.backend.finish_writes()
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
            raise RuntimeError(f"every reader is dead; the job cannot go on (rerun to resume); "
                               f"last error: {self.readers.last_error}")
        busy = {s.reader for s in self.open}
        for idx in list(self.readers.handles):
            if idx not in busy and self.next_shard < len(self.shards):
                self.open.append(ShardSlot(self.shards[self.next_shard], idx))
                self.next_shard += 1
        for slot in self.open:
            if not (slot.done or slot.pending or slot.chunks or self.budget_reached) and self.buffered() < self.cap:
                slot.pending = True
                slot.reader = self.readers.submit(((slot.shard, slot.pos, self.chunk),), prefer=slot.reader,
                                                  force=True)
        # 2. consume chunks in shard order
        while self.open and self.open[0].chunks:
            head = self.open[0]
            self._consume(head.shard, *head.chunks.popleft())
            if head.done and not head.chunks:
                self.open.popleft()
                self.stats.stage("read", 0.0, 1)
        # 3. severity
        while self.pending and self.severity.free() and (len(self.pending) >= self.bs or self.reading_done()) \
                and not self.budget_reached:
            self._submit_severity()
        # 4. buckets: expired ones, and everything once input has ended
        self._release(self.bucketer.expired())
        if self.reading_done() and not self.pending and self.severity.idle():
            self._release(self.bucketer.flush())
        # 5. solvers, longest batch first, while the writer keeps up
        while self.ready and self.solvers.free() and len(self.writes) < self.max_writes and not self.budget_reached:
            part = self._startable(self.ready[0][2])
            if part is None:  # wait for a batch to finish: its time sets the rate
                break
            batch = heapq.heappop(self.ready)[2]
            if len(part) < len(batch):  # what does not fit goes back; it waits for a rerun if nothing fits
                taken = {id(it) for it in part}
                self._release([[it for it in batch if id(it) not in taken]])
            if not part:
                self.budget_reached = not self.rowsteps_inflight
                break
            self.rowsteps_inflight += rowsteps([r for r, _ in part])
            self.solvers.submit(([r for r, _ in part], *unique(ref for _, ref in part)))
        # 6. error rows to the writer
        if self.rows_out and (len(self.rows_out) >= self.bs or self.reading_done()):
            self._write_rows()

    def _startable(self, batch: list) -> list | None:
        """The part of `batch` that may start within the solve budget: all of it, its cheapest
        samples, or none; None = wait. Costs are the seconds per tile-step measured on the
        batches done so far, counted for this batch and those still running; until one batch
        is done there is no rate, so the first batch runs alone."""
        if self.budget_s is None:
            return batch
        if not self.rowsteps_done:
            return None if self.rowsteps_inflight else batch
        rate = self.stats.stage_seconds["solve"] / self.rowsteps_done
        left = self.budget_s - self.stats.stage_seconds["solve"] - rate * self.rowsteps_inflight
        part: list = []
        for item in sorted(batch, key=lambda it: it[0].cost):
            left -= rate * item[0].cost
            if left < 0:
                break
            part.append(item)
        return batch if len(part) == len(batch) else part

    def _affordable(self, records: list[SampleRecord]) -> list[SampleRecord]:
        """execution.max_sample_tile_steps: a sample predicted to cost more becomes a `cost` error
        row before its solve (a 12-megapixel photo at a high start, say), and the job goes on."""
        limit = self.max_sample_tile_steps
        if limit is None:
            return records
        for r in records:
            if r.cost > limit:
                self.rows_out.append(error_row(
                    r.key, r.shard, f"sample {r.key}: {r.shape[0]}×{r.shape[1]} px, predicted {r.cost} tile-steps "
                    f"({r.tiles} tiles, start {r.start_step}) > execution.max_sample_tile_steps={limit}; raise the "
                    "limit, cap the steps (flash.max_nfe) or scale the photo down", "cost"))
        return [r for r in records if r.cost <= limit]

    def _unblock(self) -> bool:
        """Nothing in flight: push what is buffered onward (never wait on ourselves)."""
        if self.pending:
            self._submit_severity(force=True)
        elif len(self.bucketer):
            self._release(self.bucketer.flush())
        elif self.rows_out:
            self._write_rows()
        else:
            return bool(self.ready) or not self.reading_done()
        return True

    # --- stage hand-offs ------------------------------------------------------------
    def _consume(self, shard: str, records: list, payload_ref) -> None:
        for rec in records:
            key = record_key(rec)
            if self.only is not None and not self.only(key, shard):
                continue
            if key in self.done:
                self.stats.skipped += 1
                continue
            if key in self.seen:
                self.rows_out.append(error_for(key, shard, SampleError(
                    "duplicate", key, "key already read from another shard; the first occurrence is kept", shard)))
                continue
            self.seen.add(key)
            if self.stop_after:
                self.order[key] = len(self.order)
            if isinstance(rec, SampleRecord):
                self.pending.append((rec, payload_ref))
            else:
                self.rows_out.append(rec)

    def _submit_severity(self, force: bool = False) -> None:
        take, self.pending = self.pending[:self.chunk], self.pending[self.chunk:]
        self.severity.submit(([r for r, _ in take], *unique(ref for _, ref in take)), force=force)
        self.sev_items += len(take)

    def _release(self, batches: list) -> None:
        for batch in batches:
            start = max(rec.start_step for rec, _ in batch)
            heapq.heappush(self.ready, (-start, next(self.seq), batch))

    def _write_rows(self) -> None:
        if self.stop_after:
            self.kept_rows += self.rows_out
            self.rows_out = []
            return
        self.writes.append(self.backend.write([(r, None, None) for r in self.rows_out]))
        self.rows_out = []

    def _received(self, value) -> None:
        self.stats.driver_bytes += nbytes(value)

    def _handle(self, ref) -> None:
        if self.readers.owns(ref):
            status, ((shard, _, _),), res, extra = self.readers.finish(ref)
            if status == "lost":
                raise RuntimeError(f"reading {shard} failed {self.readers.max_attempts} times (readers died)")
            if status == "ok":
                self._received(res)
                slot = next(s for s in self.open if s.shard == shard)
                slot.pending, slot.done = False, res["done"]
                slot.pos += res["n"]
                slot.chunks.append((res["records"], extra[0]))
                self.stats.stage("read", res["seconds"], 0)
        elif self.severity.owns(ref):
            status, (records, *_), res, extra = self.severity.finish(ref)
            if status == "retried":
                return
            self.sev_items -= len(records)
            if status == "lost":
                self.rows_out += [lost_row(r.key, r.shard, "severity") for r in records]
                return
            self._received(res)
            self.rows_out += res["rows"]
            self.stats.stage("severity", res["seconds"], len(records))
            payload = extra[0]
            res["records"] = self._affordable(res["records"])
            if self.stop_after:
                self.estimated += res["records"]
                return
            self._release(self.bucketer.add_many(((r, payload), r.group, r.start_step) for r in res["records"]))
        elif self.solvers.owns(ref):
            status, (records, *_), res, extra = self.solvers.finish(ref)
            if status != "retried":
                self.rowsteps_inflight -= rowsteps(records)
            if status == "lost":
                self.rows_out += [lost_row(r.key, r.shard, "solver") for r in records]
            elif status == "ok":
                self.rowsteps_done += rowsteps(records)
                self._received(res)
                self.stats.stage("solve", res["seconds"], res["n"])
                self.writes.append(self.backend.write(extra[0]))  # results go to the writer by reference
        else:
            self.writes.remove(ref)
            res = self.backend.get_write(ref)  # a dead writer fails the job: committed parts stay
            self._received(res)
            for row in res["rows"]:
                self.stats.row(row)
            self.stats.stage("write", res["seconds"], len(res["rows"]))
            if self.on_progress:
                self.on_progress(self.stats)


def rowsteps(records: list[SampleRecord]) -> int:
    """Denoiser tile calls of the records' solves (a crop's are its steps)."""
    return sum(r.cost for r in records)


def lost_row(key: str, shard: str, stage: str) -> dict:
    return error_row(key, shard, f"sample {key}: the {stage} worker died on every attempt", "worker_lost")
