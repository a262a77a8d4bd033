"""The restore job's typed config: YAML file + dotted CLI overrides (`pipeline.execution.typed_config`), hashed.

Each section validates itself when loaded. The hash covers only what changes a sample's output (models, solver, flash, operator
defaults, seed, limits); execution settings (engine, batching, actor counts) are left
out, so a job resumed with another batch size or on another cluster is the same job.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from pipeline.execution.blind_parameters import is_blind, unreadable
from pipeline.execution.typed_config import load, save
from pipeline.operators import OPERATORS
from pipeline.restoration.options import MODELS_DIR, FlashConfig, ModelsConfig, SolverConfig
from pipeline.restoration.solver_settings import sources, table_for, table_hash
from pipeline.solvers import default_sampler_name


def check_job_operator(params: dict) -> None:
    """input.operator, before any compute: a known family, and either whole parameters or a family whose
    parameters can be estimated blind (pipeline/execution/blind_parameters.py)."""
    family = params.get("operator") if isinstance(params, dict) else None
    if family not in OPERATORS:
        raise ValueError(f"input.operator must name a family {sorted(OPERATORS)}, got {params!r}")
    if is_blind(params):
        reason = unreadable(params)
        if reason:
            raise ValueError(f"input.operator {family!r} without severity: {reason} (or give the parameters per sample)")
        params = {**params, "severity": 0.0}
    try:
        OPERATORS[family]([dict(params)], ["input.operator"])
    except ValueError as exc:
        raise ValueError(f"input.operator: {exc}") from None


@dataclass
class InputConfig:
    """Sample validation limits, the job-wide operator for samples without `<key>.json`, and the
    noise level of samples whose parameters do not give it (`noise`: a σ in [0,1], or "estimate"
    from the image, `pipeline/quality/noise_level.py`; unset: such a sample is taken as noiseless)."""

    operator: dict[str, Any] | None = None
    expected_size: int | None = None
    max_pixels: int = 4096 * 4096
    allow_convert: bool = False
    noise: float | str | None = None

    def validate(self) -> None:
        if (self.expected_size is not None and self.expected_size < 1) or self.max_pixels < 1:
            raise ValueError(f"input.expected_size and input.max_pixels must be ≥ 1, got "
                             f"{self.expected_size}, {self.max_pixels}")
        if isinstance(self.noise, str) and self.noise != "estimate" or \
                isinstance(self.noise, float) and not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"input.noise must be a noise σ in [0, 1] or 'estimate', got {self.noise!r}")
        if self.operator is not None:
            check_job_operator(self.operator)


@dataclass
class MetricsConfig:
    """Per-sample metrics. Set-level ones (FID, KID) belong to an evaluation, not a job."""

    lpips_weights: str | None = None   # safetensors of the LPIPS heads; unset = lpips reported missing


# Execution options that only a Ray job can honour, and what each does there (docs/architecture.md,
# "Execution options per engine"); the local engine refuses them when set to anything but the default.
RAY_ONLY = {
    "readers": "sets how many reader actors Ray starts",
    "severity_actors": "sets how many severity actors Ray starts",
    "solver_actors": "sets how many solver actors Ray starts",
    "gpus_per_solver": "is the GPU share a solver actor reserves from Ray (locally models.device picks the device)",
    "cpus_per_actor": "is the CPU share an actor reserves from Ray (locally execution.solver_threads sets the "
                      "solver's threads)",
    "max_wait_s": "is how long a partial bucket keeps a Ray solver waiting before it is sent anyway (locally no "
                  "solver waits: a partial bucket goes when nothing else is left to run, so batches never depend on "
                  "timing)",
}


@dataclass
class ExecutionConfig:
    """How the job runs; never changes a sample's output, so it is not hashed."""

    engine: str = "ray"              # ray | local
    batch_size: int = 8
    bucket_width: int = 25           # start steps grouped per bucket
    max_wait_s: float = 10.0         # a partial bucket is flushed after this long (ray engine)
    part_size: int = 256             # samples per committed output part
    max_error_rate: float = 0.5
    severity_actors: int = 1
    solver_actors: int = 1
    readers: int = 1
    gpus_per_solver: float = 1.0
    cpus_per_actor: float = 0.5      # what an actor reserves (fractional: no deadlock on small nodes)
    solver_threads: int | None = None  # torch threads of a CPU solver; None = node cores / solver actors (ray),
    #                                    torch's own setting (local)
    budget_hours: float | None = None  # stop starting solver batches once this much solve time is spent
    max_sample_tile_steps: int | None = None  # a sample predicted to cost more tile-steps: an error row, no solve

    def validate(self) -> None:
        if self.max_sample_tile_steps is not None and (isinstance(self.max_sample_tile_steps, bool)
                                                       or self.max_sample_tile_steps < 1):
            raise ValueError(f"execution.max_sample_tile_steps must be ≥ 1, got {self.max_sample_tile_steps!r}")
        if self.budget_hours is not None and not self.budget_hours > 0:
            raise ValueError(f"execution.budget_hours must be > 0, got {self.budget_hours}")
        if self.engine not in ("ray", "local"):
            raise ValueError(f"execution.engine must be 'ray' or 'local', got {self.engine!r}")
        for name in ("batch_size", "bucket_width", "part_size", "severity_actors", "solver_actors", "readers"):
            if getattr(self, name) < 1:
                raise ValueError(f"execution.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.engine == "local":
            defaults = ExecutionConfig()
            for name, why in RAY_ONLY.items():
                if getattr(self, name) != getattr(defaults, name):
                    raise ValueError(f"execution.{name} {why}; the local engine runs its stages one after another "
                                     "in this process, so it has no effect there (leave it unset, or use "
                                     "execution.engine=ray)")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError(f"execution.max_error_rate must be in [0, 1], got {self.max_error_rate}")
        if self.max_wait_s <= 0 or self.gpus_per_solver <= 0 or self.cpus_per_actor <= 0:
            raise ValueError("execution.max_wait_s, gpus_per_solver and cpus_per_actor must be > 0")
        if self.solver_threads is not None and self.solver_threads < 1:
            raise ValueError(f"execution.solver_threads must be ≥ 1, got {self.solver_threads}")


@dataclass
class RestoreConfig:
    seed: int = 0
    models: ModelsConfig = field(default_factory=ModelsConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    flash: FlashConfig = field(default_factory=FlashConfig)
    input: InputConfig = field(default_factory=InputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def validate(self) -> None:
        if self.flash.max_nfe is not None and not self.flash.enabled:
            raise ValueError("flash.max_nfe caps Flash's start steps; the baseline runs its whole schedule (for a "
                             "shorter baseline set solver.sampler and solver.steps)")

    def settings_sources(self) -> dict[str, dict]:
        """Per operator family of `models.severity` (the families a job restores; callers that restore one
        family narrow it): where its solver settings come from and what they resolve to. An entry the
        settings table lacks raises unless set explicitly or `solver.untuned=defaults`
        (`pipeline.restoration.solver_settings.sources`); jobs check it before any model loads and
        record it in stats.json. Not part of `validate`: a config is loaded before it is narrowed."""
        sc, fl = self.solver, self.flash
        return sources(sc.name, self.models.severity, fl.enabled, sc.params, fl.noise_correction, sc.settings,
                       sc.untuned)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_hash(self) -> str:
        """Fingerprint of everything that determines outputs (execution settings excluded)."""
        return hashlib.sha256(json.dumps(self.hashed_fields(), sort_keys=True).encode()).hexdigest()[:16]

    def hashed_fields(self) -> dict:
        """What `output_hash` covers."""
        d = self.to_dict()
        d.pop("execution")
        d["models"].pop("device")
        d["solver"].pop("untuned")  # only decides whether a job runs, never what it writes
        for section, defaults in LATER_DEFAULTS.items():  # options added later: at their defaults they change
            for name, default in defaults.items():          # nothing, so hashes of outputs made before they
                if d[section][name] == default:             # existed stay the same
                    d[section].pop(name)
        d["models"] = shipped_relative(d["models"])
        if self.solver.settings is not None:
            d["solver_settings_table"] = table_hash(table_for(self.solver.settings))
        return d


LATER_DEFAULTS = {
    "flash": {"starts": "region", "tiling": "overlap", "tile_overlap": 2, "statistics": "window"},  # photos only
    "input": {"noise": None},   # None: each sample's parameters give their noise, as before the option
    "models": {"estimators": {}},   # none: a blind sample is an error row, as before blind parameters
}


def shipped_relative(value):
    """Model URLs with the shipped folder written as `models/…`, so the same commit hashes alike in any
    checkout (a job resumes from a clone at another path); other URLs are kept as given."""
    if isinstance(value, dict):
        return {k: shipped_relative(v) for k, v in value.items()}
    root = str(MODELS_DIR)
    if isinstance(value, str) and (value == root or value.startswith(root + "/")):
        return "models" + value[len(root):]
    return value


WHOLE = ("params", "operator", "severity")  # free-form mappings: merged one level


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RestoreConfig:
    """Defaults ← YAML file ← `a.b=value` overrides; unknown keys and bad values raise ValueError."""
    return load(RestoreConfig, path, overrides or (), whole=WHOLE)


def schedule_sets(solver: str, steps: int) -> list[str]:
    """Overrides for the solver's own sampler family on a schedule of `steps` (a shortened reference)."""
    return [f"solver.sampler={default_sampler_name(solver)}", f"solver.steps={steps}"]


def save_config(cfg: RestoreConfig, url: str) -> None:
    save(cfg, url)
