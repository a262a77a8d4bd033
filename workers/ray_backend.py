"""The Ray backend: the job's stages as named actors, for archives and clusters.

The actors (`flash-reader-0`, `flash-severity-0`, `flash-solver-0`, `flash-writer`) show up
in the dashboard; `pipeline.execution.scheduler` runs in the driver and moves only records and object
references between them. Reader, severity and solver actors restart when they die and their
lost calls are resubmitted (`workers.pool`), so each key still lands exactly once; the
writer does not restart (it holds uncommitted rows), and the job fails and resumes instead.
"""
from __future__ import annotations

import os
import time
import uuid

from pipeline.execution.config import RestoreConfig
from pipeline.execution.validation import read_limits

from .placement import plan_resources
from .pool import StagePool
from .reader import ShardReader
from .severity import SeverityStage
from .solver import SolverStage
from .writer import Writer

MAX_RESTARTS = 3


def ensure_ray(temp_dir: str | None = None) -> bool:
    """Connect to RAY_ADDRESS's cluster, or start a local Ray; True when this call started it."""
    # lazy: Ray loads only where the Ray engine runs
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


class RayBackend:
    engine = "ray"

    def __init__(self, cfg: RestoreConfig):
        self.cfg = cfg
        self.max_wait_s = cfg.execution.max_wait_s
        self.pools: dict = {}
        self.writer = None
        self.writer_process: dict | None = None
        self.started_ray = False
        self.namespace = f"flash-restore-{uuid.uuid4().hex[:8]}"

    def _actor(self, cls, stage: str, name: str, restarts: int, *args, **kw):
        # lazy: Ray loads only where the Ray engine runs
        import ray

        p = self.plan[stage]
        spread = {"scheduling_strategy": "SPREAD"} if stage == "solver" else {}  # solvers on different nodes
        return ray.remote(cls).options(num_cpus=p["num_cpus"], num_gpus=p["num_gpus"], name=name,
                                       namespace=self.namespace, max_restarts=restarts,
                                       max_task_retries=0, **spread).remote(*args, **kw)

    def start(self) -> None:
        """Create every actor and wait until each is up: a model that does not load fails the
        job before anything is written."""
        # lazy: Ray loads only where the Ray engine runs
        import ray

        self.started_ray = ensure_ray()
        cfg, ex = self.cfg, self.cfg.execution
        nodes = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")]
        self.plan = plan = plan_resources(cfg, ray.cluster_resources(), min(nodes) if nodes else None)
        limits = read_limits(cfg)

        def model_stage(cls, stage):
            return lambda i: self._actor(cls, stage, f"flash-{stage}-{i}", MAX_RESTARTS, cfg,
                                         device=plan[stage]["device"], num_cpus=plan[stage]["num_cpus"])

        reader = lambda i: self._actor(ShardReader, "reader", f"flash-reader-{i}", MAX_RESTARTS,  # noqa: E731
                                       cfg, limits, num_cpus=plan["reader"]["num_cpus"])
        self.pools = {"reader": StagePool("reader", reader, ex.readers, "read", depth=1, num_returns=2),
                      "severity": StagePool("severity", model_stage(SeverityStage, "severity"), ex.severity_actors,
                                            "run", depth=2, num_returns=2),
                      "solver": StagePool("solver", model_stage(SolverStage, "solver"), ex.solver_actors, "solve",
                                          depth=2, num_returns=2)}
        for pool in self.pools.values():
            pool.start()

    def open_writer(self, output_url: str, lineage: dict | None = None) -> None:
        self.writer = self._actor(Writer, "writer", "flash-writer", 0, output_url, self.cfg.execution.part_size,
                                  lineage)
        # lazy: Ray loads only where the Ray engine runs
        import ray

        self.writer_process = ray.get(self.writer.process.remote())

    def wait(self, refs: list, timeout: float) -> list:
        # lazy: Ray loads only where the Ray engine runs
        import ray

        return ray.wait(refs, num_returns=1, timeout=timeout)[0]

    def write(self, results_or_ref):
        return self.writer.add.remote(results_or_ref)

    def get_write(self, ref) -> dict:
        # lazy: Ray loads only where the Ray engine runs
        import ray

        return ray.get(ref)

    def finish_writes(self) -> dict:
        # lazy: Ray loads only where the Ray engine runs
        import ray

        return ray.get(self.writer.finish.remote())

    def describe(self, stats, wall: float) -> dict:
        ex = self.cfg.execution
        n_actors = {"read": ex.readers, "severity": ex.severity_actors, "solve": ex.solver_actors, "write": 1}
        busy = {stage: stats.stage_seconds.get(stage, 0.0) for stage in n_actors}
        return {
            "busy_fraction": {s: round(b / wall, 4) if wall > 0 else None for s, b in busy.items()},
            "utilisation": {s: round(busy[s] / (wall * n), 4) if wall > 0 else None for s, n in n_actors.items()},
            "actors": n_actors, "resources": self.plan, "namespace": self.namespace,
            "actor_restarts": {name: p.restarts for name, p in self.pools.items()},
            "resubmitted_calls": {name: p.resubmitted for name, p in self.pools.items()},
        }

    def close(self) -> None:
        # lazy: Ray loads only where the Ray engine runs
        import ray

        if not ray.is_initialized():
            return
        for h in [self.writer] * (self.writer is not None) + [h for p in self.pools.values() for h in p.created]:
            ray.kill(h, no_restart=True)
        if self.writer_process is not None:
            wait_until_gone(**self.writer_process)
        if self.started_ray:
            ray.shutdown()


def wait_until_gone(node: str, pid: int, timeout_s: float = 30.0) -> bool:
    """`ray.kill` returns, and Ray reports the actor dead, before its process is gone: a writer
    in the middle of a commit could still land a part after the job returned. Wait until the
    writer's own process has ended, on its node; False if it outlives the timeout."""
    # lazy: Ray loads only where the Ray engine runs
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if node == ray.get_runtime_context().get_node_id():
        return process_ended(pid, timeout_s)
    on_node = NodeAffinitySchedulingStrategy(node, soft=False)
    try:
        return ray.get(ray.remote(process_ended).options(num_cpus=0, scheduling_strategy=on_node).remote(pid, timeout_s),
                       timeout=timeout_s + 10)
    except (ray.exceptions.RayError, TimeoutError):  # the node itself is gone: so is the writer
        return True


def process_ended(pid: int, timeout_s: float) -> bool:
    """Poll until process `pid` has exited; a zombie counts as ended, since it runs no code."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if is_zombie(pid):
            return True
        time.sleep(0.02)
    return False


def is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
