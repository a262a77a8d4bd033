"""A job's `Restorer`: the restore config's sections and values handed to it, nothing more.

Why a function here: the restorer sits below the job config (it takes models, solver and
flash sections, a seed, the output hash, LPIPS weights and a batch bound), so mapping the
one onto the other belongs to the job floor.
"""
from __future__ import annotations

import torch

from pipeline.execution.config import RestoreConfig
from pipeline.execution.validation import SampleValidator
from pipeline.io.samples import Sample
from pipeline.restoration.items import Prepared
from pipeline.restoration.restore import Restorer


def build_restorer(cfg: RestoreConfig, device: str | torch.device | None = None) -> Restorer:
    return Restorer(cfg.models, cfg.solver, cfg.flash, seed=cfg.seed, config_hash=cfg.output_hash(),
                    lpips_weights=cfg.metrics.lpips_weights, batch_size=cfg.execution.batch_size, device=device)


def prepare_samples(cfg: RestoreConfig, samples: list[Sample]) -> list[Prepared]:
    """Read-time validation of decoded samples, for callers that restore in one place (a
    `SampleError` propagates: such callers hand in samples they made themselves)."""
    validator = SampleValidator(cfg)
    return [validator.prepare(s) for s in samples]
