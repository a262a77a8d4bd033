"""`flash-restore train-autoencoder | train-ldm | train-severity`: typed configs and the commands.

Each job is a dataclass config. Its values come from, in order: the dataclass defaults (the
tiny CPU model), a preset (`cpu`, or `gpu` = the feasibility-probe models with large batches
and bf16), a YAML file (`--config`), `--set a.b=value` overrides, then the dedicated flags
(`--data`, `--max-steps`, …). Everything is validated before any data or model is loaded.
Rerunning a command with the same --output continues from OUTPUT/checkpoint/.
"""
from __future__ import annotations

import dataclasses
import shlex
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import typer


@dataclass
class RunConfig:
    seed: int = 0
    max_steps: int = 200
    batch_size: int = 16
    workers: int = 1              # 1 = this process; > 1 = Ray Train data parallel
    device: str = "auto"          # auto | cpu | cuda | cuda:N (local runs)
    precision: str = "auto"       # auto (bf16 autocast on GPU, fp32 on CPU) | fp32 | bf16
    threads: Optional[int] = None  # torch CPU threads (None = torch's default); 1 is faster on a busy shared box
    checkpoint_every: int = 100
    log_every: int = 10


@dataclass
class DataConfig:
    url: Optional[str] = None     # corpus export folder or clean-crop shards (any fsspec URL)
    hflip: bool = True
    max_items: Optional[int] = None


@dataclass
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.9
    beta2: float = 0.999
    weight_decay: float = 0.0
    warmup_steps: int = 0
    grad_clip: float = 1.0
    ema_decay: float = 0.0        # 0 = save the raw weights


@dataclass
class AutoencoderModelConfig:
    kind: str = "s2d"             # s2d (SpaceToDepthAutoencoder) | kl (AutoencoderKL) | vq (VQModel)
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128])  # s2d: f = 2^levels; kl/vq: 2^(levels-1)
    layers_per_block: int = 1     # kl/vq: ResNet layers per block
    stage_layers: list[int] = field(default_factory=lambda: [1, 2])  # s2d: ResBlocks per stage
    latent_channels: int = 8
    norm_num_groups: int = 16
    num_vq_embeddings: int = 1024


@dataclass
class AutoencoderLossConfig:
    l1: float = 1.0
    mse: float = 0.5
    kl: float = 1e-6
    vq: float = 1.0               # weight of VQModel's codebook + commitment loss
    latent_scale_samples: int = 2048


@dataclass
class AutoencoderJob:
    output: Optional[str] = None
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    model: AutoencoderModelConfig = field(default_factory=AutoencoderModelConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [4])   # latent sizes with attention
    norm_num_groups: int = 16
    attention_head_dim: int = 8
    num_timesteps: int = 1000


@dataclass
class LDMJob:
    output: Optional[str] = None
    autoencoder: Optional[str] = None
    run: RunConfig = field(default_factory=lambda: RunConfig(batch_size=32))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(ema_decay=0.999))
    model: UNetConfig = field(default_factory=UNetConfig)


@dataclass
class SeverityLossConfig:
    lambda_sigma: float = 1.0
    lambda_img: float = 0.0
    variance_loss: str = "log"      # log | mse (the reference's) | nll (see pipeline.severity.severity_loss)
    couple_variance: bool = False   # True = the reference's non-detached variance target
    head_channels: int = 64         # width of the variance head
    init_sigma2: float = 0.03       # σ̂² at initialisation (near the realised latent error level)
    head_lr_scale: float = 10.0     # the new variance head's learning rate, × optim.lr


@dataclass
class SeverityJob:
    output: Optional[str] = None
    autoencoder: Optional[str] = None
    operator: str = "gaussian_blur"
    noise_sigma: float = 0.05       # in [0,1] units
    operator_params: dict[str, Any] = field(default_factory=dict)   # params_for overrides
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    loss: SeverityLossConfig = field(default_factory=SeverityLossConfig)


JOBS = {"autoencoder": AutoencoderJob, "ldm": LDMJob, "severity": SeverityJob}

# GPU presets: the feasibility probe's models (H100), large batches, bf16 autocast.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"autoencoder": {}, "ldm": {}, "severity": {}},
    "gpu": {
        "autoencoder": {"model.block_out_channels": [128, 256], "model.stage_layers": [2, 3], "model.norm_num_groups": 32,
                        "run.batch_size": 128, "run.max_steps": 6000, "run.checkpoint_every": 500,
                        "run.log_every": 50},
        "ldm": {"model.block_out_channels": [64, 128, 256], "model.layers_per_block": 2,
                "model.attention_resolutions": [8, 4], "model.norm_num_groups": 32, "run.batch_size": 256,
                "run.max_steps": 10000, "run.checkpoint_every": 500, "run.log_every": 50,
                "optim.ema_decay": 0.9995},
        "severity": {"run.batch_size": 128, "run.max_steps": 10000, "run.checkpoint_every": 500,
                     "run.log_every": 50},
    },
}


# ------------------------------------------------------------------ config building

def _coerce(value, hint, path: str):
    """Check (and gently convert) a YAML value against a dataclass field's type."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), path)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            try:
                return float(value)   # YAML reads "1e-4" as a string
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is list:
        if isinstance(value, (list, tuple)):
            return [_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value)]
    elif origin is dict:
        if isinstance(value, dict):
            return dict(value)
    raise ValueError(f"config {path}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _build(cls, data: dict, path: str = ""):
    if not isinstance(data, dict):
        raise ValueError(f"config {path or 'root'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"config {path or 'root'}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}".lstrip(".")
        hint = hints[name]
        kwargs[name] = _build(hint, value, where) if dataclasses.is_dataclass(hint) else _coerce(value, hint, where)
    return cls(**kwargs)


def _set(data: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            raise ValueError(f"config override {dotted}: {k!r} is not a section")
        node = node[k]
    node[keys[-1]] = value


def _merge(base: dict, update: dict) -> None:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "operator_params":
            _merge(base[k], v)
        else:
            base[k] = v


def build_config(kind: str, preset: str = "cpu", path: str | None = None, overrides: list[str] | None = None,
                 flags: dict[str, Any] | None = None):
    """Defaults ← preset ← YAML file ← `--set a.b=v` ← CLI flags; validated; ValueError on anything wrong."""
    import yaml

    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    cls = JOBS[kind]
    data = dataclasses.asdict(cls())
    for dotted, value in PRESETS[preset][kind].items():
        _set(data, dotted, value)
    if path:
        import fsspec

        with fsspec.open(path, "r") as fh:
            loaded = yaml.safe_load(fh) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top level")
        _merge(data, loaded)
    for text in overrides or []:
        if "=" not in text:
            raise ValueError(f"--set {text!r} must look like section.key=value")
        dotted, raw = text.split("=", 1)
        _set(data, dotted.strip(), yaml.safe_load(raw))
    for dotted, value in (flags or {}).items():
        if value is not None:
            _set(data, dotted, value)
    cfg = _build(cls, data)
    validate(kind, cfg)
    return cfg


def validate(kind: str, cfg) -> None:
    """Checks that need no data or model; they fail before anything is loaded."""
    run = cfg.run
    for name in ("max_steps", "batch_size", "workers", "checkpoint_every", "log_every"):
        if getattr(run, name) < 1:
            raise ValueError(f"run.{name} must be ≥ 1, got {getattr(run, name)}")
    if run.batch_size % run.workers:
        raise ValueError(f"run.batch_size {run.batch_size} must be a multiple of run.workers {run.workers}")
    if run.precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"run.precision must be auto|fp32|bf16, got {run.precision!r}")
    if not cfg.output:
        raise ValueError("no output: pass --output URL")
    if not cfg.data.url:
        raise ValueError("no training data: pass --data URL (corpus export folder or clean-crop shards)")
    if cfg.optim.lr <= 0 or not 0 <= cfg.optim.ema_decay < 1:
        raise ValueError("optim.lr must be > 0 and optim.ema_decay in [0, 1)")
    if kind == "autoencoder":
        validate_autoencoder_model(cfg.model)
    if kind in ("ldm", "severity") and not cfg.autoencoder:
        raise ValueError(f"train-{kind} needs --autoencoder URL")
    if kind == "severity":
        from pipeline.operators import OPERATORS
        from pipeline.severity import VARIANCE_LOSSES

        if cfg.operator not in OPERATORS:
            raise ValueError(f"--operator must be one of {sorted(OPERATORS)}, got {cfg.operator!r}")
        if cfg.noise_sigma < 0:
            raise ValueError(f"noise_sigma must be ≥ 0, got {cfg.noise_sigma}")
        if cfg.loss.variance_loss not in VARIANCE_LOSSES:
            raise ValueError(f"loss.variance_loss must be one of {VARIANCE_LOSSES}, got {cfg.loss.variance_loss!r}")
        if not cfg.loss.init_sigma2 > 0 or cfg.loss.head_channels < 1 or not cfg.loss.head_lr_scale > 0:
            raise ValueError("loss.init_sigma2 and loss.head_lr_scale must be > 0, loss.head_channels ≥ 1")


def validate_autoencoder_model(m) -> None:
    if m.kind not in ("s2d", "kl", "vq"):
        raise ValueError(f"model.kind must be s2d, kl or vq, got {m.kind!r}")
    if not m.block_out_channels or any(c < 1 or c % m.norm_num_groups for c in m.block_out_channels):
        raise ValueError(f"model.block_out_channels {m.block_out_channels}: multiples of {m.norm_num_groups} needed")
    if m.kind == "s2d" and (len(m.stage_layers) != len(m.block_out_channels) or min(m.stage_layers) < 0):
        raise ValueError(f"model.stage_layers {m.stage_layers}: one count ≥ 0 per block_out_channels entry")


def command_line(ctx: typer.Context | None = None) -> str:
    """The command as typed; under a test runner (argv is not ours) rebuilt from the typer context."""
    if ctx is None or ctx.info_name in sys.argv:
        return " ".join(shlex.quote(a) for a in sys.argv)
    parts = ctx.command_path.split()
    for name, value in ctx.params.items():
        for v in (value if isinstance(value, (list, tuple)) else [value]):
            if v is not None:
                parts += [f"--{name.rstrip('_').replace('_', '-')}", str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def preflight(kind: str, cfg) -> None:
    """Fail fast on an unreadable --autoencoder (before loading data or starting Ray)."""
    if kind in ("ldm", "severity"):
        from pipeline.training import load_frozen_autoencoder

        _, meta = load_frozen_autoencoder(cfg.autoencoder, "cpu")
        if kind == "ldm" and not meta.get("latent_scale"):
            raise ValueError(f"{cfg.autoencoder} records no latent_scale; train it with train-autoencoder")


def run_job(kind: str, cfg, command: str | None = None, progress: bool = True) -> dict:
    """Validate inputs, write the config beside the outputs, and train locally or with Ray Train."""
    import fsspec
    import yaml

    from pipeline.training_data import check_data

    command = command or command_line()
    check_data(cfg.data.url)
    preflight(kind, cfg)
    data = dataclasses.asdict(cfg)
    fs, root = fsspec.core.url_to_fs(cfg.output)
    fs.makedirs(root, exist_ok=True)
    with fsspec.open(cfg.output.rstrip("/") + "/train_config.yaml", "w") as fh:
        yaml.safe_dump(data, fh, sort_keys=False)
    if cfg.run.workers > 1:
        from workers.train_ray import run_ray_training

        return run_ray_training(kind, data, command, cfg.run.workers)
    from pipeline.training import run_training

    from jobs.training_progress import RichProgress

    return run_training(kind, data, command, progress=RichProgress(f"train-{kind}") if progress else None)


def _main(ctx: typer.Context, kind: str, preset: str | None, config: str | None, set_: list[str],
          flags: dict) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    try:
        import torch

        preset = preset or ("gpu" if torch.cuda.is_available() else "cpu")
        cfg = build_config(kind, preset, config, set_, flags)
        summary = run_job(kind, cfg, command_line(ctx))
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2)
    losses = ", ".join(f"{k} {v:.4g}" for k, v in sorted(summary.get("losses", {}).items()))
    console.print(f"train-{kind}: {summary['steps']} steps, {summary['wall_s']:.1f} s, {losses} → {cfg.output}")


_DATA = typer.Option(None, "--data", help="Corpus export folder or clean-crop WebDataset shards (local or fsspec URL).")
_OUTPUT = typer.Option(None, "--output", help="Model folder to write; OUTPUT/checkpoint/ makes reruns resume.")
_CONFIG = typer.Option(None, "--config", help="YAML config file.")
_SET = typer.Option([], "--set", help="Override a config value: section.key=value (repeatable).")
_PRESET = typer.Option(None, "--preset", help="cpu (tiny model) or gpu (the probe's model); default: gpu if CUDA.")
_STEPS = typer.Option(None, "--max-steps", help="Total optimizer steps (a resume continues up to this).")
_BATCH = typer.Option(None, "--batch-size", help="Global batch size.")
_SEED = typer.Option(None, "--seed", help="Seed: data order and every random draw are functions of (seed, step).")
_WORKERS = typer.Option(None, "--workers", help="1 = local; > 1 = Ray Train data parallel (CPU or GPU).")
_AE = typer.Option(None, "--autoencoder", help="Autoencoder model folder (from train-autoencoder).")


def _flags(data, output, max_steps, batch_size, seed, workers, **more) -> dict:
    return {"data.url": data, "output": output, "run.max_steps": max_steps, "run.batch_size": batch_size,
            "run.seed": seed, "run.workers": workers, **more}


def train_autoencoder(ctx: typer.Context, data: Optional[str] = _DATA, output: Optional[str] = _OUTPUT,
                      config: Optional[str] = _CONFIG, set_: list[str] = _SET, preset: Optional[str] = _PRESET,
                      max_steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
                      seed: Optional[int] = _SEED, workers: Optional[int] = _WORKERS) -> None:
    """Train the f=4 autoencoder (KL or VQ) on clean crops and store its latent scale."""
    _main(ctx, "autoencoder", preset, config, set_, _flags(data, output, max_steps, batch_size, seed, workers))


def train_ldm(ctx: typer.Context, autoencoder: Optional[str] = _AE, data: Optional[str] = _DATA,
              output: Optional[str] = _OUTPUT, config: Optional[str] = _CONFIG, set_: list[str] = _SET,
              preset: Optional[str] = _PRESET,
              max_steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
              seed: Optional[int] = _SEED, workers: Optional[int] = _WORKERS) -> None:
    """Train the ε-prediction UNet (EMA saved) on the autoencoder's scaled latents."""
    _main(ctx, "ldm", preset, config, set_,
          _flags(data, output, max_steps, batch_size, seed, workers, autoencoder=autoencoder))


def train_severity(ctx: typer.Context, autoencoder: Optional[str] = _AE,
                   operator: Optional[str] = typer.Option(None, "--operator",
                                                          help="gaussian_blur | inpainting | nonlinear_blur"),
                   data: Optional[str] = _DATA, output: Optional[str] = _OUTPUT,
                   config: Optional[str] = _CONFIG, set_: list[str] = _SET, preset: Optional[str] = _PRESET,
                   max_steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
                   seed: Optional[int] = _SEED, workers: Optional[int] = _WORKERS) -> None:
    """Train a severity encoder for one operator family, starting from the autoencoder's encoder."""
    _main(ctx, "severity", preset, config, set_,
          _flags(data, output, max_steps, batch_size, seed, workers, autoencoder=autoencoder, operator=operator))
