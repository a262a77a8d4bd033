"""Resources and options for the job's actors, sized so the job always fits its cluster.

Why: on a 2-core box, whole-CPU actors deadlock the job (docs/architecture.md, "Gotchas"), so every actor asks
for a fraction of a CPU, shrunk until all of them would fit on the smallest node (reservations
are scheduling hints here, not limits). A solver does most of the work and reserves
SOLVER_WEIGHT shares; solvers are placed with Ray's SPREAD strategy, so each node gets one
before any gets two. Model stages ask for GPUs only when `models.device` wants CUDA (`cuda`,
`cuda:N`, or `auto` on a cluster that has GPUs); `cpu` asks for none and runs on CPU even on
a GPU cluster. The severity stage takes what the solvers leave (at most a quarter GPU each)
and runs on CPU when nothing is left.
"""
from __future__ import annotations

import uuid

import torch

from pipeline.execution.config import RestoreConfig

STAGES = ("reader", "severity", "solver", "writer")
SOLVER_WEIGHT = 2
GPU_DEVICE = "cuda"  # Ray narrows CUDA_VISIBLE_DEVICES to the actor's GPU(s): `cuda:N` is plain `cuda` inside


def actor_counts(cfg: RestoreConfig) -> dict[str, int]:
    ex = cfg.execution
    return {"reader": ex.readers, "severity": ex.severity_actors, "solver": ex.solver_actors, "writer": 1}


def plan_resources(cfg: RestoreConfig, cluster: dict, smallest_node_cpus: float | None = None) -> dict[str, dict]:
    """Per stage: num_cpus, num_gpus and the torch device its actors use."""
    counts = actor_counts(cfg)
    gpus = float(cluster.get("GPU", 0.0))
    cpus = float(smallest_node_cpus or cluster.get("CPU", 1.0))
    weights = {s: (SOLVER_WEIGHT if s == "solver" else 1) * counts[s] for s in STAGES}
    share = min(float(cfg.execution.cpus_per_actor), cpus / sum(weights.values()))
    plan = {s: {"num_cpus": max(0.01, int(share * (SOLVER_WEIGHT if s == "solver" else 1) * 100) / 100),
                "num_gpus": 0.0, "device": "cpu"} for s in STAGES}
    if wants_gpu(cfg.models.device, gpus):
        gps = min(float(cfg.execution.gpus_per_solver), gpus / counts["solver"])
        plan["solver"].update(num_gpus=gps, device=GPU_DEVICE)
        left = gpus - gps * counts["solver"]
        sev = min(0.25, left / counts["severity"])
        if sev >= 0.01:
            plan["severity"].update(num_gpus=int(sev * 100) / 100, device=GPU_DEVICE)
    return plan


def wants_gpu(device: str, cluster_gpus: float) -> bool:
    """Whether model stages reserve GPUs: a configured `cpu` never does, `auto` only where the
    cluster has them, and `cuda`/`cuda:N` must find them (else the job fails before any actor starts)."""
    if device == "cpu":
        return False
    if device == "auto":
        return cluster_gpus > 0
    if cluster_gpus <= 0:
        raise ValueError(f"models.device={device!r} but the Ray cluster has no GPUs")
    return True


def new_incarnation() -> str:
    """An id per actor process: a changed id after an actor error means Ray restarted it."""
    return uuid.uuid4().hex[:12]


def set_threads(num_cpus: float) -> None:
    torch.set_num_threads(max(1, int(num_cpus)))
