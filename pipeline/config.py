"""The one typed config that drives every job: YAML file + dotted CLI overrides, hashed.

The hash covers only what changes a sample's output (models, solver, flash, operator
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

import yaml

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


@dataclass
class ModelsConfig:
    """Where the models live (any fsspec URL). `severity` maps operator family → encoder."""

    autoencoder: str = str(MODELS_DIR / "autoencoder")
    denoiser: str = str(MODELS_DIR / "ldm")
    severity: dict[str, str] = field(default_factory=lambda: {
        fam: str(MODELS_DIR / f"severity-{fam}") for fam in ("gaussian_blur", "inpainting", "nonlinear_blur")})
    device: str = "auto"          # auto | cpu | cuda | cuda:N
    dtype: str = "float32"        # float32 | float64 | bfloat16 (autocast on GPU)


@dataclass
class SolverConfig:
    """The latent solver and its sampler; `params` are the solver's own hyperparameters."""

    name: str = "ldps"
    sampler: str | None = None    # default per solver: ddpm (1000) or ddim (500, η=1) for resample
    steps: int | None = None
    eta: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    settings: str | None = "tuned"   # tuned = pipeline/solver_settings.yaml per family; null = built-in defaults


@dataclass
class FlashConfig:
    """Severity-adaptive start (flash-spec §3). enabled=False runs the baseline from noise."""

    enabled: bool = True
    noise_correction: float | str | None = "tuned"   # c; "tuned" = the solver settings table (else 1.2)
    init: str = "noise_correction"   # noise_correction | encoder_mean | ddim_inversion


@dataclass
class InputConfig:
    """Sample validation limits and the job-wide operator for samples without `<key>.json`."""

    operator: dict[str, Any] | None = None
    expected_size: int | None = None
    max_pixels: int = 4096 * 4096
    allow_convert: bool = False


@dataclass
class MetricsConfig:
    lpips_weights: str | None = None
    fid: bool = False


@dataclass
class ExecutionConfig:
    """How the job runs; never changes a sample's output, so it is not hashed."""

    engine: str = "ray"              # ray | local
    batch_size: int = 8
    bucket_width: int = 25           # start steps grouped per bucket
    max_wait_s: float = 10.0         # a partial bucket is flushed after this long
    part_size: int = 256             # samples per committed output part
    max_error_rate: float = 0.5
    severity_actors: int = 1
    solver_actors: int = 1
    readers: int = 1
    gpus_per_solver: float = 1.0
    cpus_per_actor: float = 0.5      # what an actor reserves (fractional: no deadlock on small nodes)
    solver_threads: int | None = None  # torch threads of a CPU solver; None = node cores / solver actors


@dataclass
class RestoreConfig:
    seed: int = 0
    models: ModelsConfig = field(default_factory=ModelsConfig)
    solver: SolverConfig = field(default_factory=SolverConfig)
    flash: FlashConfig = field(default_factory=FlashConfig)
    input: InputConfig = field(default_factory=InputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def output_hash(self) -> str:
        """Fingerprint of everything that determines outputs (execution settings excluded)."""
        d = self.to_dict()
        d.pop("execution")
        d["models"].pop("device")
        if self.solver.settings == "tuned":
            from .solver_settings import table_hash

            d["solver_settings_table"] = table_hash()
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _build(cls, data: dict, path: str):
    """Construct a dataclass from a dict, refusing unknown keys (fail fast, before compute)."""
    if not isinstance(data, dict):
        raise ValueError(f"config {path or 'root'}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"config {path or 'root'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        f = names[name]
        sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            kwargs[name] = _build(sub, value, f"{path}.{name}".lstrip("."))
        else:
            kwargs[name] = value
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`solver.params.step_size=2.0` → (['solver','params','step_size'], 2.0); values parse as YAML."""
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like section.key=value")
    dotted, raw = text.split("=", 1)
    return dotted.strip().split("."), yaml.safe_load(raw)


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RestoreConfig:
    """Defaults ← YAML file ← `a.b=value` overrides; unknown keys and bad values raise ValueError."""
    data: dict = RestoreConfig().to_dict()
    if path:
        import fsspec

        with fsspec.open(path, "r") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top level")
        _merge(data, loaded, "")
    for text in overrides or []:
        keys, value = parse_override(text)
        _merge(data, _nest(keys, value), "")
    cfg = _build(RestoreConfig, data, "")
    validate(cfg)
    return cfg


def _nest(keys: list[str], value):
    out = value
    for k in reversed(keys):
        out = {k: out}
    return out


def _merge(base: dict, update: dict, path: str) -> None:
    for k, v in update.items():
        where = f"{path}.{k}".lstrip(".")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k not in ("params", "operator", "severity"):
            _merge(base[k], v, where)
        elif isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v


def validate(cfg: RestoreConfig) -> None:
    """Checks that need no model or data: they fail the job before any compute."""
    ex = cfg.execution
    if ex.engine not in ("ray", "local"):
        raise ValueError(f"execution.engine must be 'ray' or 'local', got {ex.engine!r}")
    for name in ("batch_size", "bucket_width", "part_size", "severity_actors", "solver_actors", "readers"):
        if not isinstance(getattr(ex, name), int) or getattr(ex, name) < 1:
            raise ValueError(f"execution.{name} must be a positive integer, got {getattr(ex, name)!r}")
    if not 0.0 <= float(ex.max_error_rate) <= 1.0:
        raise ValueError(f"execution.max_error_rate must be in [0, 1], got {ex.max_error_rate}")
    if cfg.flash.init not in ("noise_correction", "encoder_mean", "ddim_inversion"):
        raise ValueError(f"flash.init must be noise_correction|encoder_mean|ddim_inversion, got {cfg.flash.init!r}")
    c = cfg.flash.noise_correction
    if c is not None and c != "tuned" and (isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0):
        raise ValueError(f"flash.noise_correction must be a non-negative number, 'tuned' or null, got {c!r}")
    if cfg.solver.settings not in (None, "tuned"):
        raise ValueError(f"solver.settings must be 'tuned' or null, got {cfg.solver.settings!r}")
    if cfg.models.dtype not in ("float32", "float64", "bfloat16"):
        raise ValueError(f"models.dtype must be float32|float64|bfloat16, got {cfg.models.dtype!r}")
    if not isinstance(cfg.seed, int):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")


def save_config(cfg: RestoreConfig, url: str) -> None:
    import fsspec

    with fsspec.open(url, "w") as fh:
        yaml.safe_dump(cfg.to_dict(), fh, sort_keys=False)
