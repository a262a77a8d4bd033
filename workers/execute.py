"""`execute(config, input, output)`: one restore job, on the backend the config names.

The frame every backend shares: list the shards and check the output is writable (fail
fast), load the models (before
anything is written), prepare or resume the output (its manifest, the resolved config,
the keys already done), run `pipeline.execution.scheduler` over the backend's stages, and write
OUTPUT/stats.json.
"""
from __future__ import annotations

import time
from typing import Callable

from pipeline.execution.config import RestoreConfig, save_config
from pipeline.execution.scheduler import Scheduler
from pipeline.execution.stats import JobStats
from pipeline.io.outputs import OutputStore
from pipeline.io.shards import list_shards

from .local_backend import LocalBackend


def open_output(cfg: RestoreConfig, output_url: str, overwrite: bool = False) -> tuple[OutputStore, dict, set]:
    """Prepare (or resume) the output: its manifest, the resolved config beside it, and the
    keys already committed, which the job skips."""
    store = OutputStore(output_url)
    manifest = store.prepare(cfg.output_hash(), overwrite=overwrite)
    save_config(cfg, store.public_url("_config.yaml"))
    return store, manifest, store.done_keys(manifest)


def make_backend(cfg: RestoreConfig):
    if cfg.execution.engine == "ray":
        # lazy: Ray loads only where the Ray engine runs
        from .ray_backend import RayBackend

        return RayBackend(cfg)

    return LocalBackend(cfg)


def execute(cfg: RestoreConfig, input_url: str | list[str], output_url: str, overwrite: bool = False,
            on_progress: Callable[[JobStats], None] | None = None,
            only: set[str] | Callable[[str, str], bool] | None = None,
            lineage: dict[str, dict] | None = None, shards: list[str] | None = None) -> dict:
    """Restore every not-yet-committed sample of `input_url` (shards, or a list of shard URLs)
    into `output_url`; returns stats. `only` restricts the job to some keys (or to what
    `only(key, shard)` wants) and `lineage` adds per-key (else per-shard) columns to their rows
    (`flash-restore reprocess`). `shards`: the input already listed (`workers.job_config.preflight`),
    so it is listed once."""
    if shards is None:
        shards = sorted({u for url in input_url for u in list_shards(url)}) if isinstance(input_url, list) \
            else list_shards(input_url)
    settings = cfg.settings_sources()  # an untuned (solver, family, mode) fails here, before any model loads
    OutputStore(output_url).check_writable()
    backend = make_backend(cfg)
    stats = JobStats()
    try:
        backend.start()
        stats.startup_seconds = time.time() - stats.started
        store, manifest, done = open_output(cfg, output_url, overwrite)
        backend.open_writer(output_url, lineage)
        scheduler = Scheduler(cfg, shards, done, backend, stats, on_progress, only)
        final = scheduler.run()
    finally:
        backend.close()
    wall = time.time() - stats.started
    summary = stats.to_dict(wall)
    summary.update({"engine": backend.engine, "input": input_url, "output": output_url,
                    "config_hash": cfg.output_hash(), "committed": final["counts"],
                    "parts_committed": final["parts"], "solver_settings": settings,
                    **backend.describe(stats, wall)})
    if cfg.execution.budget_hours:
        summary["budget"] = {"hours": cfg.execution.budget_hours, "reached": scheduler.budget_reached,
                             "solve_hours_spent": round(stats.stage_seconds["solve"] / 3600, 4),
                             "note": "samples not restored are not committed: rerun the same command to continue"}
    store.write_json("stats.json", summary)
    return summary
