"""Ray Train data-parallel wrapper around `pipeline.training.loop.run_training`.

Why a thin wrapper: the per-step code is the same as a local run; Ray Train only starts N
workers, initialises torch.distributed (gloo on CPU, NCCL on GPU) and gives each worker its
device. `pipeline.training.loop.fit` then wraps the loss module in DDP and gives rank r its
contiguous slice of every global batch, so the data order stays a function of (seed, step).

On a small CPU box workers ask for fractional CPUs so the trainer's own actors can still be
scheduled (docs/architecture.md, "Gotchas": a 2-core box deadlocks otherwise). Ray's session files go to
`RAY_TMPDIR` (or `temp_dir`) when this module starts Ray itself.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import torch

from pipeline.training.loop import run_training
from pipeline.training.state import load_checkpoint_meta


class LineProgress:
    """Plain log lines from rank 0 (a live progress bar does not survive Ray's log forwarding)."""

    def __init__(self, title: str):
        self.title, self.t0, self.first, self.total = title, time.time(), 0, 0

    def start(self, first_step: int, max_steps: int) -> None:
        self.t0, self.first, self.total = time.time(), first_step, max_steps
        print(f"{self.title}: steps {first_step} → {max_steps}", flush=True)

    def update(self, step: int, logs: dict[str, float] | None) -> None:
        if logs is None:
            return
        done = step - self.first
        eta = (time.time() - self.t0) / max(1, done) * (self.total - step)
        losses = "  ".join(f"{k} {v:.4g}" for k, v in sorted(logs.items()))
        print(f"{self.title}: step {step}/{self.total}  {losses}  ETA {eta:.0f} s", flush=True)

    def close(self) -> None:
        print(f"{self.title}: done in {time.time() - self.t0:.1f} s", flush=True)


def _worker_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    # lazy: Ray loads only where the Ray engine runs
    import ray.train.torch


    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(config.get("threads", 1))))
    run_training(config["kind"], config["cfg"], config["command"], device=device,
                 progress=LineProgress(f"train-{config['kind']}"))


def run_ray_training(kind: str, cfg: dict, command: str, workers: int, *, use_gpu: bool | None = None,
                     cpus_per_worker: float | None = None, temp_dir: str | None = None) -> dict:
    """Train with `workers` data-parallel Ray Train workers; returns the rank-0 summary."""
    # lazy: Ray loads only where the Ray engine runs
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer


    started = False
    if not ray.is_initialized():
        kwargs = {"include_dashboard": False, "log_to_driver": True}
        if not os.environ.get("RAY_ADDRESS"):
            temp = temp_dir or os.environ.get("RAY_TMPDIR")
            if temp:
                kwargs["_temp_dir"] = os.path.abspath(temp)
        ray.init(**kwargs)
        started = True
    try:
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        cpus = float(ray.cluster_resources().get("CPU", 1))
        if cpus_per_worker is None:
            cpus_per_worker = 1.0 if use_gpu or cpus >= workers + 1 else max(0.1, (cpus - 0.5) / workers)
        storage = os.path.abspath(os.environ.get("FLASH_RAY_STORAGE")
                                  or tempfile.mkdtemp(prefix="flash-train-", dir=temp_dir))
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"kind": kind, "cfg": cfg, "command": command,
                               "threads": max(1, int(cpus_per_worker))},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                         resources_per_worker={"CPU": cpus_per_worker}),
            run_config=RunConfig(name=f"train-{kind}-{int(time.time())}", storage_path=storage),
        )
        result = trainer.fit()
        if getattr(result, "error", None):
            raise RuntimeError(f"Ray Train run failed: {result.error}")
        # Train V2 keeps only metrics attached to Ray checkpoints: read rank 0's own checkpoint record.
        meta = load_checkpoint_meta(cfg["output"].rstrip("/") + "/checkpoint") or {}
        return {"steps": meta.get("step", 0), "wall_s": meta.get("wall_s", 0.0),
                "losses": meta.get("last_losses", {}), "world": meta.get("world", workers)}
    finally:
        if started:
            ray.shutdown()
        sys.stdout.flush()
