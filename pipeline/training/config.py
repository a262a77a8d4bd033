"""Typed configs of the training jobs (autoencoder, LDM, severity encoder, parameter estimator); each section validates itself.

Loaded by `pipeline.execution.typed_config.load`, the same loader as the restore config: defaults
(the tiny CPU models) ← a preset ← YAML ← `--set` ← flags. Options that only one model
kind reads say so (`model.stage_layers`: s2d; `layers_per_block`, `num_vq_embeddings`,
`loss.vq`: kl/vq).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from pipeline.execution.typed_config import load


def check_job(job) -> None:
    """What every training job needs: an output, data, and (LDM, severity) its autoencoder."""
    if not job.output:
        raise ValueError("no output: pass --output URL")
    if not job.data.url:
        raise ValueError("no training data: pass --data URL (corpus export folder or clean-crop shards)")
    if hasattr(job, "autoencoder") and not job.autoencoder:
        raise ValueError(f"train-{JOB_NAMES[type(job)]} needs --autoencoder URL")


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

    def validate(self) -> None:
        for name in ("max_steps", "batch_size", "workers", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.batch_size % self.workers:
            raise ValueError(f"run.batch_size {self.batch_size} must be a multiple of run.workers {self.workers}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"run.precision must be auto|fp32|bf16, got {self.precision!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"run.threads must be ≥ 1, got {self.threads}")


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

    def validate(self) -> None:
        if self.lr <= 0 or not 0 <= self.ema_decay < 1 or self.warmup_steps < 0:
            raise ValueError("optim.lr must be > 0, optim.ema_decay in [0, 1) and optim.warmup_steps ≥ 0")


@dataclass
class AutoencoderModelConfig:
    kind: str = "s2d"             # s2d (SpaceToDepthAutoencoder) | kl (AutoencoderKL) | vq (VQModel)
    block_out_channels: list[int] = field(default_factory=lambda: [64, 128])  # s2d: f = 2^levels; kl/vq: 2^(levels-1)
    layers_per_block: int = 1     # kl/vq: ResNet layers per block
    stage_layers: list[int] = field(default_factory=lambda: [1, 2])  # s2d: ResBlocks per stage
    latent_channels: int = 8
    norm_num_groups: int = 16
    num_vq_embeddings: int = 1024

    def validate(self) -> None:
        if self.kind not in ("s2d", "kl", "vq"):
            raise ValueError(f"model.kind must be s2d, kl or vq, got {self.kind!r}")
        if not self.block_out_channels or any(c < 1 or c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"model.block_out_channels {self.block_out_channels}: multiples of "
                             f"{self.norm_num_groups} needed")
        if self.kind == "s2d" and (len(self.stage_layers) != len(self.block_out_channels) or
                                   min(self.stage_layers) < 0):
            raise ValueError(f"model.stage_layers {self.stage_layers}: one count ≥ 0 per block_out_channels entry")


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

    def validate(self) -> None:
        check_job(self)


@dataclass
class UNetConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 128])
    layers_per_block: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [4])   # latent sizes with attention
    norm_num_groups: int = 16
    attention_head_dim: int = 8
    num_timesteps: int = 1000
    prediction_type: str = "v_prediction"   # or epsilon; v keeps ẑ0 bounded at high noise (model-design.md)

    def validate(self) -> None:
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"model.prediction_type must be epsilon or v_prediction, got {self.prediction_type!r}")


@dataclass
class LDMJob:
    output: Optional[str] = None
    autoencoder: Optional[str] = None
    run: RunConfig = field(default_factory=lambda: RunConfig(batch_size=32))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(ema_decay=0.999))
    model: UNetConfig = field(default_factory=UNetConfig)

    def validate(self) -> None:
        check_job(self)


@dataclass
class SeverityLossConfig:
    lambda_sigma: float = 1.0
    lambda_img: float = 0.0
    variance_loss: str = "log"      # log | mse (the reference's) | nll (see pipeline.models.severity.severity_loss)
    couple_variance: bool = False   # True = the reference's non-detached variance target
    head_channels: int = 64         # width of the variance head
    head_bands: int = 0             # Laplacian-pyramid levels of y the head also reads (0 = none)
    init_sigma2: float = 0.03       # σ̂² at initialisation (near the realised latent error level)
    head_lr_scale: float = 10.0     # the new variance head's learning rate, × optim.lr
    pair_weight: float = 8.0        # within-crop paired-difference term (batches of same-crop pairs); 0 = off
    freeze_mean: bool = False       # train the variance head only (the mean head stays as initialised)
    reset_head: bool = False        # with `init`: keep its mean head, start the variance head afresh

    def validate(self) -> None:
        # lazy: the CLI reads these configs at start; the models (diffusers, torch) load when one is checked
        from pipeline.models.severity import VARIANCE_LOSSES

        if self.variance_loss not in VARIANCE_LOSSES:
            raise ValueError(f"loss.variance_loss must be one of {VARIANCE_LOSSES}, got {self.variance_loss!r}")
        if not self.init_sigma2 > 0 or self.head_channels < 1 or not self.head_lr_scale > 0:
            raise ValueError("loss.init_sigma2 and loss.head_lr_scale must be > 0, loss.head_channels ≥ 1")
        if not 0 <= self.head_bands <= 8:
            raise ValueError(f"loss.head_bands must be in 0..8, got {self.head_bands}")
        if not 0 <= self.pair_weight < 1e6:
            raise ValueError(f"loss.pair_weight must be in [0, 1e6), got {self.pair_weight}")


@dataclass
class SeverityJob:
    output: Optional[str] = None
    autoencoder: Optional[str] = None
    operator: str = "gaussian_blur"
    noise_sigma: float = 0.05       # in [0,1] units
    noise_sigma_max: Optional[float] = None  # set: each row's σ ~ U[noise_sigma, noise_sigma_max] (unknown noise)
    operator_params: dict[str, Any] = field(default_factory=dict)   # params_for overrides
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4))
    loss: SeverityLossConfig = field(default_factory=SeverityLossConfig)
    init: Optional[str] = None      # a severity encoder folder to start from instead of the autoencoder's E0

    def validate(self) -> None:
        # lazy: the CLI reads these configs at start; the registry (torch) loads when one is checked
        from pipeline.operators import OPERATORS

        check_job(self)
        if self.loss.pair_weight and (self.run.batch_size // self.run.workers) % 2:
            raise ValueError(f"loss.pair_weight > 0 trains on same-crop pairs: each worker's rows "
                             f"(run.batch_size / run.workers = {self.run.batch_size // self.run.workers}) must be even")
        if self.operator not in OPERATORS:
            raise ValueError(f"--operator must be one of {sorted(OPERATORS)}, got {self.operator!r}")
        if not 0 <= self.noise_sigma <= 1:
            raise ValueError(f"noise_sigma must be in [0, 1], got {self.noise_sigma}")
        if self.noise_sigma_max is not None and not self.noise_sigma <= self.noise_sigma_max <= 1:
            raise ValueError(f"noise_sigma_max must be in [noise_sigma, 1] = [{self.noise_sigma}, 1], "
                             f"got {self.noise_sigma_max}")


@dataclass
class EstimatorModelConfig:
    channels: int = 32
    hidden: int = 64

    def validate(self) -> None:
        if self.channels < 1 or self.hidden < 1:
            raise ValueError("model.channels and model.hidden must be ≥ 1")


@dataclass
class EstimatorJob:
    """The blind parameter estimator of one family (pipeline/models/parameter_estimator.py); no autoencoder."""

    output: Optional[str] = None
    operator: str = "gaussian_blur"
    noise_sigma: float = 0.0        # each row's σ ~ U[noise_sigma, noise_sigma_max]: an archive's noise is unknown
    noise_sigma_max: float = 0.1
    operator_params: dict[str, Any] = field(default_factory=dict)
    run: RunConfig = field(default_factory=lambda: RunConfig(batch_size=32))
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, ema_decay=0.99, warmup_steps=100))
    model: EstimatorModelConfig = field(default_factory=EstimatorModelConfig)

    def validate(self) -> None:
        # lazy: the CLI reads these configs at start; the registry (torch) loads when one is checked
        from pipeline.operators import OPERATORS

        check_job(self)
        if self.operator not in OPERATORS:
            raise ValueError(f"--operator must be one of {sorted(OPERATORS)}, got {self.operator!r}")
        if not 0 <= self.noise_sigma <= self.noise_sigma_max <= 1:
            raise ValueError(f"need 0 ≤ noise_sigma ≤ noise_sigma_max ≤ 1, got {self.noise_sigma}, "
                             f"{self.noise_sigma_max}")


WHOLE = ("operator_params",)  # free-form mappings: merged and compared as one value
JOBS = {"autoencoder": AutoencoderJob, "ldm": LDMJob, "severity": SeverityJob, "estimator": EstimatorJob}
JOB_NAMES = {cls: name for name, cls in JOBS.items()}


# GPU presets: the feasibility probe's models (H100), large batches, bf16 autocast.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"autoencoder": {}, "ldm": {}, "severity": {}, "estimator": {}},
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
        "estimator": {"run.batch_size": 256, "run.max_steps": 10000, "run.checkpoint_every": 500},
    },
}


def build_config(kind: str, preset: str = "cpu", path: str | None = None, overrides: list[str] | None = None,
                 flags: dict[str, Any] | None = None):
    """Defaults ← preset ← YAML file ← `--set a.b=v` ← CLI flags; validated; ValueError on anything wrong."""
    if preset not in PRESETS:
        raise ValueError(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    return load(JOBS[kind], path, overrides or (), layers=[PRESETS[preset][kind]], flags=flags,
                whole=WHOLE)
