"""The Ray engine: the local engine's stages as actors, for archives and clusters.

Same inputs, outputs and resume rules as `jobs.local_engine.run_local` (the reference it
must match output for output); the stages run as named actors (`flash-reader-0`,
`flash-severity-0`, `flash-solver-0`, `flash-writer`) so the dashboard shows them, and the
driver (`workers.coordinator`) schedules between them with bounded queues. Solver and
severity actors restart when they die, and their lost calls are resubmitted, so each
key still lands exactly once.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Callable

from pipeline.config import RestoreConfig, save_config
from pipeline.outputs import OutputStore
from pipeline.shards import list_shards
from pipeline.stats import JobStats

from .local_engine import sample_limits

MAX_RESTARTS = 3


def ensure_ray(temp_dir: str | None = None) -> bool:
    """Connect to RAY_ADDRESS's cluster, or start a local Ray; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    kwargs: dict = {}
    if os.environ.get("RAY_ADDRESS"):
        kwargs["address"] = os.environ["RAY_ADDRESS"]  # a cluster (ray:// client addresses too)
    else:
        kwargs["include_dashboard"] = False  # a laptop-sized local Ray; clusters bring their own
        temp = temp_dir or os.environ.get("RAY_TMPDIR")
        if temp:
            kwargs["_temp_dir"] = os.path.abspath(temp)
    ray.init(**kwargs)
    return True


def _factories(cfg: RestoreConfig, output_url: str, namespace: str) -> tuple[dict, dict]:
    """How to create each stage's actors (named; restartable where they hold no state)."""
    import ray

    from workers.placement import plan_resources
    from workers.reader import ShardReader
    from workers.severity import SeverityStage
    from workers.solver import SolverStage
    from workers.writer import Writer

    plan = plan_resources(cfg, ray.cluster_resources())
    faults = {k: v for k, v in os.environ.items() if k.startswith("FLASH_FAULT_")}  # test fault injection

    def make(cls, stage, name, restarts, *args, **kw):
        p = plan[stage]
        opts = {"num_cpus": p["num_cpus"], "num_gpus": p["num_gpus"], "name": name, "namespace": namespace,
                "max_restarts": restarts, "max_task_retries": 0}
        if faults:
            opts["runtime_env"] = {"env_vars": faults}
        return ray.remote(cls).options(**opts).remote(*args, **kw)

    def model_stage(cls, stage):
        return lambda i: make(cls, stage, f"flash-{stage}-{i}", MAX_RESTARTS, cfg, device=plan[stage]["device"],
                              num_cpus=plan[stage]["num_cpus"])

    return plan, {
        "reader": lambda i: make(ShardReader, "reader", f"flash-reader-{i}", MAX_RESTARTS, sample_limits(cfg),
                                 num_cpus=plan["reader"]["num_cpus"]),
        "severity": model_stage(SeverityStage, "severity"),
        "solver": model_stage(SolverStage, "solver"),
        # the writer holds uncommitted rows: restarting it would hide their loss, so it fails the job
        "writer": lambda: make(Writer, "writer", "flash-writer", 0, output_url, cfg.execution.part_size),
    }


def run_ray(cfg: RestoreConfig, input_url: str, output_url: str, overwrite: bool = False,
            on_progress: Callable[[JobStats], None] | None = None) -> dict:
    """Restore every not-yet-committed sample of `input_url` into `output_url` on Ray; returns stats."""
    import ray

    from workers.coordinator import Coordinator
    from workers.pool import StagePool

    shards = list_shards(input_url)
    started = ensure_ray()
    stats = JobStats()
    namespace = f"flash-restore-{uuid.uuid4().hex[:8]}"
    ex = cfg.execution
    pools: dict[str, StagePool] = {}
    writer = None
    try:
        plan, make = _factories(cfg, output_url, namespace)
        pools = {"reader": StagePool("reader", make["reader"], ex.readers, "read", depth=1),
                 "severity": StagePool("severity", make["severity"], ex.severity_actors, "run", depth=2),
                 "solver": StagePool("solver", make["solver"], ex.solver_actors, "solve", depth=2, num_returns=2)}
        for pool in pools.values():  # every model loads and checks out before anything is written
            pool.start()
        store = OutputStore(output_url)
        manifest = store.prepare(cfg.output_hash(), overwrite=overwrite)
        save_config(cfg, store.public_url("_config.yaml"))
        done = store.done_keys(manifest)
        writer = make["writer"]()
        final = Coordinator(cfg, shards, done, pools["reader"], pools["severity"], pools["solver"], writer,
                            stats, on_progress).run()
    finally:
        for h in [writer] * (writer is not None) + [h for p in pools.values() for h in p.created]:
            ray.kill(h, no_restart=True)
        if started:
            ray.shutdown()
    wall = time.time() - stats.started
    summary = stats.to_dict(wall)
    n_actors = {"read": ex.readers, "severity": ex.severity_actors, "solve": ex.solver_actors, "write": 1}
    summary.update({
        "engine": "ray", "input": input_url, "output": output_url, "config_hash": cfg.output_hash(),
        "committed": final["counts"], "parts_committed": final["parts"],
        "busy_fraction": {stage: round(stats.stage_seconds.get(stage, 0.0) / wall, 4) if wall > 0 else None
                          for stage in n_actors},
        "utilisation": {stage: round(stats.stage_seconds.get(stage, 0.0) / (wall * n), 4) if wall > 0 else None
                        for stage, n in n_actors.items()},
        "actors": n_actors, "resources": plan,
        "actor_restarts": {name: p.restarts for name, p in pools.items()},
        "resubmitted_calls": {name: p.resubmitted for name, p in pools.items()},
    })
    store.write_json("stats.json", summary)
    return summary
