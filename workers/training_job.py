"""A training job: check its inputs, save its config beside the outputs, train here or on Ray Train.

Why the checks first: an unreadable --autoencoder or data URL fails in a second, before
any data is loaded or a Ray cluster is started.
"""
from __future__ import annotations

import dataclasses

import fsspec

from pipeline.execution.typed_config import save
from pipeline.training.data import check_data
from pipeline.training.loop import load_frozen_autoencoder, run_training
from pipeline.training.tasks import load_severity_init


def preflight(kind: str, cfg) -> None:
    """Fail fast on an unreadable --autoencoder (before loading data or starting Ray)."""
    if kind in ("ldm", "severity"):
        ae, meta = load_frozen_autoencoder(cfg.autoencoder, "cpu")
        if kind == "ldm" and not meta.get("latent_scale"):
            raise ValueError(f"{cfg.autoencoder} records no latent_scale; train it with train-autoencoder")
        if kind == "severity" and cfg.init:
            load_severity_init(cfg.init, cfg.operator, ae, other_family=not cfg.loss.freeze_mean)


def run_job(kind: str, cfg, command: str, progress=None) -> dict:
    """Validate inputs, write the config beside the outputs, and train locally or with Ray Train
    (`progress`: start/update/close, e.g. a progress bar, for a local run)."""
    check_data(cfg.data.url)
    preflight(kind, cfg)
    data = dataclasses.asdict(cfg)
    fs, root = fsspec.core.url_to_fs(cfg.output)
    fs.makedirs(root, exist_ok=True)
    save(cfg, cfg.output.rstrip("/") + "/train_config.yaml")
    if cfg.run.workers > 1:
        from .train_ray import run_ray_training   # lazy: Ray only for data-parallel runs

        return run_ray_training(kind, data, command, cfg.run.workers)
    return run_training(kind, data, command, progress=progress)
