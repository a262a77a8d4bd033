"""What a `Restorer` is built from: the models, the solver and the Flash start, as config sections.

They live here, not with the job config, because restoration sits below execution: the
job's config (`pipeline.execution.config.RestoreConfig`) is made of these sections plus the
job's own (input, metrics, execution), and the restorer needs only these.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.operators import OPERATORS
from pipeline.restoration.region_starts import REGION_MODES
from pipeline.restoration.solver_settings import load_table
from pipeline.sampling.tiles import TILINGS

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def default_severity_models() -> dict[str, str]:
    """Every registered family's shipped encoder, `models/severity-<family>`. A family without a shipped
    folder (added since the models were trained) is left out rather than failing every Flash job's
    preflight: its samples become error rows ("no severity encoder configured") until
    `models.severity.<family>` names an encoder, and baseline jobs restore it."""
    return {fam: str(MODELS_DIR / f"severity-{fam}") for fam in OPERATORS if (MODELS_DIR / f"severity-{fam}").is_dir()}


def default_estimator_models() -> dict[str, str]:
    """The shipped blind parameter estimators, `models/estimator-<family>` (docs/blind-parameters.md)."""
    return {fam: str(MODELS_DIR / f"estimator-{fam}") for fam in OPERATORS
            if (MODELS_DIR / f"estimator-{fam}").is_dir()}


@dataclass
class ModelsConfig:
    """Where the models live (any fsspec URL). `severity` maps operator family → encoder; `estimators`
    family → the blind parameter estimator a job without per-sample parameters reads (restore --operator)."""

    autoencoder: str = str(MODELS_DIR / "autoencoder")
    denoiser: str = str(MODELS_DIR / "ldm")
    severity: dict[str, str] = field(default_factory=default_severity_models)
    estimators: dict[str, str] = field(default_factory=default_estimator_models)
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
    sampler: str | None = None    # default: the solver's reference_sampler, ddpm (1000) or ddim (500, η=1; resample)
    steps: int | None = None
    eta: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    settings: str | None = "tuned"   # tuned = pipeline/restoration/solver_settings.yaml; a path = that table; null = built-ins
    untuned: str = "error"           # a (solver, family, mode) the table lacks: error | defaults (the built-ins)

    def validate(self) -> None:
        if self.untuned not in ("error", "defaults"):
            raise ValueError(f"solver.untuned must be error|defaults, got {self.untuned!r}")
        if self.settings not in (None, "tuned"):
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
    starts: str = "region"           # photos off the prior's size: region | image | image-max (docs/method.md §7)
    tiling: str = "overlap"          # the canvas denoiser's tiles: overlap (blended windows) | shifted (moving cut) | whole (untiled)
    tile_overlap: int = 2            # latent pixels shared by neighbouring tiles in overlap mode
    statistics: str = "window"       # photos' encoders and decoder: window (blended crops) | whole (whole image)

    def validate(self) -> None:
        if self.max_nfe is not None and self.max_nfe < 1:
            raise ValueError(f"flash.max_nfe must be ≥ 1, got {self.max_nfe}")
        if self.start_step is not None and (isinstance(self.start_step, bool) or self.start_step < 0):
            raise ValueError(f"flash.start_step must be an index ≥ 0 on the sampler's grid, got {self.start_step!r}")
        if (self.start_step is not None or self.decode_only) and not self.enabled:
            raise ValueError("flash.start_step and flash.decode_only need the severity encoder (flash.enabled=true)")
        if self.start_step is not None and self.decode_only:
            raise ValueError("flash.decode_only runs no reverse step; it takes no flash.start_step")
        if self.tiling not in TILINGS:
            raise ValueError(f"flash.tiling must be one of {'|'.join(TILINGS)}, got {self.tiling!r}")
        if isinstance(self.tile_overlap, bool) or not isinstance(self.tile_overlap, int) or self.tile_overlap < 0:
            raise ValueError(f"flash.tile_overlap must be a whole number of latent pixels ≥ 0, got {self.tile_overlap!r}")
        if self.statistics not in ("window", "whole"):
            raise ValueError(f"flash.statistics must be window|whole, got {self.statistics!r}")
        if self.starts not in REGION_MODES:
            raise ValueError(f"flash.starts must be one of {'|'.join(REGION_MODES)}, got {self.starts!r}")
        if self.init not in ("noise_correction", "encoder_mean", "ddim_inversion"):
            raise ValueError(f"flash.init must be noise_correction|encoder_mean|ddim_inversion, got {self.init!r}")
        c = self.noise_correction
        if c is not None and c != "tuned" and (isinstance(c, bool) or not isinstance(c, (int, float)) or c < 0):
            raise ValueError(f"flash.noise_correction must be a non-negative number, 'tuned' or null, got {c!r}")
