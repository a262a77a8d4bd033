"""A restore job's config from command-line flags, and the checks that need no compute.

Shared by every command that runs or prices a restore job (restore, demo, estimate, the
benchmarks): flags become dotted overrides on the YAML, so one config has one hash.
"""
from __future__ import annotations

from typing import List, Optional

import fsspec

from pipeline.execution.config import load_config
from pipeline.io.shards import list_shards
from pipeline.solvers import SOLVERS


def build_config(config: Optional[str], solver: Optional[str], baseline: bool, batch_size: Optional[int],
                 bucket_width: Optional[int], max_error_rate: Optional[float], engine: Optional[str],
                 seed: Optional[int], overrides: Optional[List[str]]):
    """CLI flags become dotted overrides on top of the YAML file: one config, one hash."""
    sets = list(overrides or [])
    for flag, dotted in ((solver, "solver.name"), (batch_size, "execution.batch_size"),
                         (bucket_width, "execution.bucket_width"), (max_error_rate, "execution.max_error_rate"),
                         (engine, "execution.engine"), (seed, "seed")):
        if flag is not None:
            sets.append(f"{dotted}={flag}")
    if baseline:
        sets.append("flash.enabled=false")
    return load_config(config, sets)


def preflight(cfg, input_url: str) -> list[str]:
    """Everything that can fail without compute fails here: input listing, model folders, solver setup."""
    shards = list_shards(input_url)
    if cfg.solver.name not in SOLVERS:
        raise ValueError(f"unknown solver {cfg.solver.name!r}; choose one of {sorted(SOLVERS)}")
    urls = [cfg.models.autoencoder, cfg.models.denoiser]
    if cfg.flash.enabled:
        urls += list(cfg.models.severity.values())
    for url in urls:
        fs, path = fsspec.core.url_to_fs(url)
        if not fs.exists(f"{path.rstrip('/')}/config.json"):
            raise ValueError(f"model folder {url} has no config.json (train models or point models.* at them)")
    return shards
