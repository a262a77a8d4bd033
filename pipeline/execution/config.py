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
from pathlib import Path
from typing import Any

from pipeline.execution.typed_config import load, save

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


@dataclass
class ModelsConfig:
    """Where the models live (any fsspec URL). `severity` maps operator family → encoder."""

    autoencoder: str = str(MODELS_DIR / "autoencoder")
    denoiser: str = str(MODELS_DIR / "ldm")
    severity: dict[str, str] = field(default_factory=lambda: {
        fam: str(MODELS_DIR / f"severity-{fam}") for fam in ("gaussian_blur", "inpainting", "nonlinear_blur")})
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "float32"        # float32 | float64

    def validate(self) -> None:
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"models.dtype must be float32|float64, got {self.dtype!r} (the solvers' data-"
                             "consistency gradients need at least float32)")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"models.device must be auto|cpu|cuda|cuda:N, got {self.device!r}")


@dataclass
class SolverConfig:
    """The latent solver and its sampler; `params` are the solver's own hyperparameters."""

    name: str = "ldps"
    sampler: str | None = None    # default per solver: ddpm (1000) or ddim (500, η=1) for resample
    steps: int | None = None
    eta: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    settings: str | None = "tuned"   # tuned = pipeline/restoration/solver_settings.yaml; a path = that table; null = built-ins
    untuned: str = "error"           # a (solver, family, mode) the table lacks: error | defaults (the built-ins)

    def validate(self) -> None:
        if self.untuned not in ("error", "defaults"):
            raise ValueError(f"solver.untuned must be error|defaults, got {self.untuned!r}")
        if self.settings not in (None, "tuned"):
            from pipeline.restoration.solver_settings import load_table

            try:   # a settings table of the shipped format, e.g. one `flash-restore tune --table` wrote for another prior
                load_table(self.settings)
            except (OSError, ValueError) as exc:
                raise ValueError(f"solver.settings must be 'tuned', null or the path of a settings table "
                                 f"(flash-restore tune --table); {self.settings!r}: {exc}") from None
        if self.sampler is None and (self.steps is not None or self.eta is not None):
            raise ValueError("solver.steps and solver.eta configure solver.sampler: name the sampler too "
                             "(ddpm | ddim), or leave them unset for the solver's default sampler")
        if self.eta is not None and self.sampler is not None and self.sampler != "ddim":
            raise ValueError(f"solver.eta is DDIM's η; the {self.sampler} sampler has none (use solver.sampler=ddim, "
                             "or leave solver.eta unset)")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"solver.steps must be ≥ 1, got {self.steps}")


@dataclass
class FlashConfig:
    """Severity-adaptive start (method §3). enabled=False runs the baseline from noise."""

    enabled: bool = True
    noise_correction: float | str | None = "tuned"   # c; "tuned" = the solver settings table (else 1.2)
    init: str = "noise_correction"   # noise_correction | encoder_mean | ddim_inversion
    max_nfe: int | None = None       # cap on reverse steps per sample (a budget); rows say when it cut
    start_step: int | None = None    # one start index for every sample (the fixed-start ablation); σ̂² is still reported
    decode_only: bool = False        # decode ẑ with no reverse step (the "autoencoder only" row, NFE 0)

    def validate(self) -> None:
        if self.max_nfe is not None and self.max_nfe < 1:
            raise ValueError(f"flash.max_nfe must be ≥ 1, got {self.max_nfe}")
        if self.start_step is not None and (isinstance(self.start_step, bool) or self.start_step < 0):
            raise ValueError(f"flash.start_step must be an index ≥ 0 on the sampler's grid, got {self.start_step!r}")
        if (self.start_step is not None or self.decode_only) and not self.enabled:
            raise ValueError("flash.start_step and flash.decode_only need the severity encoder (flash.enabled=true)")
        if self.start_step is not None and self.decode_only:
            raise ValueError("flash.decode_only runs no reverse step; it takes no flash.start_step")
        if self.init not in ("noise_correction", "encoder_mean", "ddim_inversion"):
            raise ValueError(f"flash.init must be noise_correction|encoder_mean|ddim_inversion, got {self.init!r}")
        c = self.noise_correction
        if c is not None and c != "tuned" and (isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0):
            raise ValueError(f"flash.noise_correction must be a non-negative number, 'tuned' or null, got {c!r}")


@dataclass
class InputConfig:
    """Sample validation limits and the job-wide operator for samples without `<key>.json`."""

    operator: dict[str, Any] | None = None
    expected_size: int | None = None
    max_pixels: int = 4096 * 4096
    allow_convert: bool = False

    def validate(self) -> None:
        if (self.expected_size is not None and self.expected_size < 1) or self.max_pixels < 1:
            raise ValueError(f"input.expected_size and input.max_pixels must be ≥ 1, got "
                             f"{self.expected_size}, {self.max_pixels}")


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

    def validate(self) -> None:
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
        from pipeline.restoration.solver_settings import sources  # torch and the solvers: not needed to read a config

        sc, fl = self.solver, self.flash
        return sources(sc.name, self.models.severity, fl.enabled, sc.params, fl.noise_correction, sc.settings,
                       sc.untuned)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_hash(self) -> str:
        """Fingerprint of everything that determines outputs (execution settings excluded)."""
        d = self.to_dict()
        d.pop("execution")
        d["models"].pop("device")
        d["solver"].pop("untuned")  # only decides whether a job runs, never what it writes
        if self.solver.settings is not None:
            from pipeline.restoration.solver_settings import table_for, table_hash

            d["solver_settings_table"] = table_hash(table_for(self.solver.settings))
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


WHOLE = ("params", "operator", "severity")  # free-form mappings: merged one level


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RestoreConfig:
    """Defaults ← YAML file ← `a.b=value` overrides; unknown keys and bad values raise ValueError."""
    return load(RestoreConfig, path, overrides or (), whole=WHOLE)


def save_config(cfg: RestoreConfig, url: str) -> None:
    save(cfg, url)
