"""The in-process engine: shards → severity → buckets → exact batches → committed parts.

Same stages and outputs as the Ray engine, in one process; used for small archives, for
tests, and as the reference the Ray engine must match.
"""
from __future__ import annotations

import time
from typing import Callable

from pipeline.bucketing import Bucketer
from pipeline.config import RestoreConfig, save_config
from pipeline.outputs import OutputStore, PartBuffer
from pipeline.restore import Estimated, Restorer
from pipeline.samples import SampleError
from pipeline.shards import iter_samples, list_shards
from pipeline.stats import JobStats


def sample_limits(cfg: RestoreConfig) -> dict:
    """Read-time limits. Without `input.expected_size` the models' image size is required, so a
    sample the models cannot take (a 1×1 PNG, a 2048² photo for 64-px models) is an error row
    at read time, before any compute."""
    from pipeline.model_store import model_image_size

    size = cfg.input.expected_size or model_image_size(cfg.models.autoencoder)
    return {"expected_size": (size, size) if isinstance(size, int) else size, "max_pixels": cfg.input.max_pixels,
            "allow_convert": cfg.input.allow_convert}


def run_local(cfg: RestoreConfig, input_url: str, output_url: str, overwrite: bool = False,
              on_progress: Callable[[JobStats], None] | None = None) -> dict:
    """Restore every not-yet-committed sample of `input_url` into `output_url`; returns stats."""
    shards = list_shards(input_url)
    restorer = Restorer(cfg)  # loads and checks every model before anything is written
    store = OutputStore(output_url)
    manifest = store.prepare(cfg.output_hash(), overwrite=overwrite)
    save_config(cfg, store.public_url("_config.yaml"))
    done = store.done_keys(manifest)
    stats = JobStats()
    ex = cfg.execution
    bucketer = Bucketer(ex.batch_size, ex.bucket_width)
    part, seen, pending = PartBuffer(), set(), []

    def emit(row, png=None, meta=None):
        nonlocal part
        part.add(row, png, meta)
        stats.row(row)
        if len(part) >= ex.part_size:
            store.commit(part, manifest)
            part = PartBuffer()
        if on_progress:
            on_progress(stats)

    def solve(batch: list[Estimated]):
        t0 = time.perf_counter()
        results = restorer.solve_isolating(batch)
        stats.stage("solve", time.perf_counter() - t0, len(batch))
        for row, png, meta in results:
            emit(row, png, meta)

    def drain(final: bool):
        if not pending:
            batches = bucketer.flush() if final else []
        else:
            t0 = time.perf_counter()
            estimates = restorer.estimate(pending)
            stats.stage("severity", time.perf_counter() - t0, len(pending))
            pending.clear()
            batches = bucketer.add_many((e, e.prepared.group, e.start_step) for e in estimates)
            if final:
                batches += bucketer.flush()
        for batch in batches:
            solve(batch)

    for shard in shards:
        t0 = time.perf_counter()
        for item in iter_samples(shard, **sample_limits(cfg)):
            key = item.key
            if isinstance(item, SampleError) and not key:
                key = f"{shard}#{item.kind}"  # e.g. a corrupt tar: one row for the shard
            if key in done:
                stats.skipped += 1
                continue
            if key in seen:
                emit(Restorer.error(key, shard, SampleError("duplicate", key, "key already read from another "
                                                            "shard; the first occurrence is kept", shard)))
                continue
            seen.add(key)
            if isinstance(item, SampleError):
                emit(Restorer.error(key, shard, item))
                continue
            try:
                pending.append(restorer.prepare(item))
            except SampleError as exc:
                emit(Restorer.error(key, shard, exc))
            if len(pending) >= ex.batch_size * 4:
                stats.stage("read", time.perf_counter() - t0, 0)
                drain(final=False)
                t0 = time.perf_counter()
        stats.stage("read", time.perf_counter() - t0, 1)
    drain(final=True)
    if len(part):
        store.commit(part, manifest)
    summary = stats.to_dict()
    summary.update({"engine": "local", "input": input_url, "output": output_url, "config_hash": cfg.output_hash(),
                    "committed": manifest["counts"]})
    store.write_json("stats.json", summary)
    return summary
