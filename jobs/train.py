"""`flash-restore train-autoencoder | train-ldm | train-severity | train-estimator`: the commands and their presets.

Each job is a dataclass config (`pipeline.training.config`), loaded by the project's one
config loader (`pipeline.execution.typed_config`). Its values come from, in order: the dataclass defaults (the
tiny CPU model), a preset (`cpu`, or `gpu` = the feasibility-probe models with large batches
and bf16), a YAML file (`--config`), `--set a.b=value` overrides, then the dedicated flags
(`--data`, `--max-steps`, …). Everything is validated before any data or model is loaded.
Rerunning a command with the same --output continues from OUTPUT/checkpoint/.
"""
from __future__ import annotations

import shlex
import sys
from typing import Optional

import typer

from pipeline.training.config import build_config


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


def _main(ctx: typer.Context, kind: str, preset: str | None, config: str | None, set_: list[str],
          flags: dict) -> None:
    from rich.console import Console

    from jobs.training_progress import RichProgress
    from workers.training_job import run_job   # lazy, as every command's compute: `--help` stays fast

    console = Console(stderr=True)
    try:
        import torch

        preset = preset or ("gpu" if torch.cuda.is_available() else "cpu")
        cfg = build_config(kind, preset, config, set_, flags)
        summary = run_job(kind, cfg, command_line(ctx), RichProgress(f"train-{kind}"))
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


def train_estimator(ctx: typer.Context,
                    operator: Optional[str] = typer.Option(None, "--operator", help="the family whose severity it "
                                                                                    "learns (gaussian_blur)"),
                    data: Optional[str] = _DATA, output: Optional[str] = _OUTPUT,
                    config: Optional[str] = _CONFIG, set_: list[str] = _SET, preset: Optional[str] = _PRESET,
                    max_steps: Optional[int] = _STEPS, batch_size: Optional[int] = _BATCH,
                    seed: Optional[int] = _SEED, workers: Optional[int] = _WORKERS) -> None:
    """Train the blind parameter estimator of one family: its severity from the degraded image alone."""
    _main(ctx, "estimator", preset, config, set_,
          _flags(data, output, max_steps, batch_size, seed, workers, operator=operator))
