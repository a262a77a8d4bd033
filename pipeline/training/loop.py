"""The training loop shared by all three models, locally or data-parallel (pure PyTorch, no Ray).

Why it is built this way:
* Resumable and reproducible: batches and draws are functions of (seed, step)
  (`data.py`), the LR warm-up (a LambdaLR) and the EMA decay depend on the step only, and the
  checkpoint restores model, EMA and optimizer exactly (`state.py`). So N steps in one go equal N/2 steps
  plus a resume of N/2, bit for bit on the same machine and thread count.
* Data parallel without knowing the launcher: when `torch.distributed` is initialised
  (Ray Train, torchrun), the loss module is wrapped in DDP and each rank trains on its
  contiguous slice of every global batch; rank 0 writes checkpoints and outputs.
* bf16 autocast on CUDA (fp32 master weights and losses), fp32 on CPU.

`run_training(kind, cfg, ...)` takes the job's config as a plain dict (sections run, data,
optim, model, loss, plus autoencoder / operator for the dependent models), so the job layer
and the Ray worker call the same function.
"""
from __future__ import annotations

import copy
import json
import os
import platform
import time
from typing import Protocol

import fsspec
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR

from pipeline.execution.typed_config import flatten
from pipeline.models.latent import AUTOENCODER_CLASSES, Autoencoder
from pipeline.models.model_store import load_model
from pipeline.models.pipeline_folder import is_pipeline_folder, load_pipeline_autoencoder
from pipeline.training.config import WHOLE
from pipeline.training.data import BatchPlan, load_crops, rank_rows
from pipeline.training.state import EMA, load_checkpoint, save_checkpoint
from pipeline.training.estimator_task import EstimatorTask
from pipeline.training.tasks import AutoencoderTask, DenoiserTask, SeverityTask

KINDS = ("autoencoder", "ldm", "severity", "estimator")
CARD_NAME = "MODEL_CARD.md"
# Settings that may change between a run and its resume without changing the result.
RESUMABLE_KEYS = {"run.max_steps", "run.workers", "run.checkpoint_every", "run.log_every", "run.device",
                  "run.precision", "run.threads", "output", "data.url", "autoencoder"}


class Progress(Protocol):
    def start(self, first_step: int, max_steps: int) -> None: ...
    def update(self, step: int, logs: dict[str, float] | None) -> None: ...
    def close(self) -> None: ...


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("run.device asks for CUDA but no GPU is visible")
    return dev


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"run.precision must be auto|fp32|bf16, got {precision!r}")
    return device.type == "cuda" and precision in ("auto", "bf16")


def _check_resume(meta: dict, cfg: dict, url: str) -> None:
    old, new = flatten(meta.get("config", {}), WHOLE), flatten(cfg, WHOLE)
    diff = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_KEYS and old.get(k) != new.get(k))
    if diff:
        raise ValueError(f"checkpoint {url} was written with a different config ({', '.join(diff[:6])}); "
                         "use another --output or the same settings")


def param_groups(model: torch.nn.Module, lr_scales: dict[str, float]) -> list[dict]:
    """Trainable parameters grouped by learning-rate multiplier: `lr_scales` maps a submodule
    name prefix to its multiplier (a new head learns faster than the copied encoder)."""
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            scale = next((v for k, v in lr_scales.items() if name.startswith(k + ".")), 1.0)
            groups.setdefault(float(scale), []).append(p)
    return [{"params": ps, "lr_scale": scale} for scale, ps in sorted(groups.items())]


def warmup_schedule(opt: torch.optim.Optimizer, lr_scales: list[float], lr: float, warmup_steps: int,
                    start: int) -> LambdaLR:
    """Linear LR warm-up, lr · scale · min(1, (s + 1)/warmup_steps) at step s, set for step `start`.

    The rate is a function of the step only (resume-safe): the base rates come from the config,
    never from a checkpoint's param groups, and the scheduler starts at `start`.
    """
    for g, scale in zip(opt.param_groups, lr_scales):
        g["initial_lr"] = scale * lr
    warm = max(1, int(warmup_steps))
    return LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm), last_epoch=start - 1)


def fit(task, plan: BatchPlan, cfg: dict, ckpt_url: str, device: torch.device,
        progress: Progress | None = None) -> dict:
    """Train `task.module` to cfg.run.max_steps, resuming from `ckpt_url`; returns a summary dict."""
    run, opt_cfg = cfg["run"], cfg["optim"]
    rank, world = dist_info()
    rows = rank_rows(plan.batch, rank, world)
    model = task.model.to(device).train()
    task.module.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(param_groups(model, getattr(task, "lr_scales", {})), lr=opt_cfg["lr"],
                            betas=(opt_cfg["beta1"], opt_cfg["beta2"]), weight_decay=opt_cfg["weight_decay"])
    lr_scales = [g["lr_scale"] for g in opt.param_groups]  # kept aside: a checkpoint's groups replace them
    ema = EMA(model, opt_cfg["ema_decay"])
    meta = load_checkpoint(ckpt_url, model, ema, opt)
    if meta is not None:
        _check_resume(meta, cfg, ckpt_url)
    start = int(meta["step"]) if meta else 0
    schedule = warmup_schedule(opt, lr_scales, opt_cfg["lr"], opt_cfg["warmup_steps"], start)
    wall_before = float(meta.get("wall_s", 0.0)) if meta else 0.0
    last = dict(meta.get("last_losses", {})) if meta else {}
    module = task.module
    if world > 1:
        module = DDP(module, device_ids=[device.index] if device.type == "cuda" else None)
    bf16 = use_bf16(run["precision"], device)
    max_steps, log_every = int(run["max_steps"]), max(1, int(run["log_every"]))
    if progress and rank == 0:
        progress.start(start, max_steps)
    t0, window, count = time.time(), {}, 0

    def state_info() -> dict:
        return {"config": cfg, "wall_s": wall_before + time.time() - t0, "last_losses": last, "world": world}

    for step in range(start, max_steps):
        batch = task.inputs(step, plan.indices(step), plan.flips(step), rows, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = module(**batch)
        out["loss"].backward()
        if opt_cfg["grad_clip"]:
            torch.nn.utils.clip_grad_norm_(params, float(opt_cfg["grad_clip"]))
        opt.step()
        schedule.step()
        opt.zero_grad(set_to_none=True)
        ema.update(model, step)
        for k, v in out.items():
            window[k] = window.get(k, 0.0) + v.detach().float()
        count += 1
        done = step + 1
        logs = None
        if done % log_every == 0 or done == max_steps:
            vals = torch.stack([window[k] for k in sorted(window)]) / count
            if world > 1:
                dist.all_reduce(vals)
                vals /= world
            last = logs = {k: float(v) for k, v in zip(sorted(window), vals.cpu())}
            window, count = {}, 0
        if progress and rank == 0:
            progress.update(done, logs)
        if done % max(1, int(run["checkpoint_every"])) == 0 or done == max_steps:
            if rank == 0:
                save_checkpoint(ckpt_url, done, model, ema, opt, state_info())
            if world > 1:
                dist.barrier()
    if progress and rank == 0:
        progress.close()
    final = copy.deepcopy(model).eval()
    ema.copy_to(final)
    for p in final.parameters():
        p.requires_grad_(False)
    return {"model": final, "start_step": start, "steps": max(max_steps, start), "losses": last,
            "wall_s": state_info()["wall_s"], "world": world}


def load_frozen_autoencoder(url: str, device: torch.device):
    """The autoencoder a denoiser or severity encoder builds on, frozen, with its latent scale.

    A diffusers pipeline folder gives its vqvae/ (or vae/) at the pipeline's latent scale, so an
    encoder can be trained for a downloaded LDM as it ships.
    """
    if not url:
        raise ValueError("this job needs --autoencoder URL (a model folder written by train-autoencoder)")
    try:
        if is_pipeline_folder(url):
            ae, _, meta = load_pipeline_autoencoder(url)
            model, meta = ae.model, {**meta, "latent_scale": ae.scale, "pipeline": url}
        else:
            model, meta = load_model(url, return_meta=True)
    except ValueError as exc:
        raise ValueError(f"--autoencoder {url}: {exc}") from None
    except OSError as exc:
        raise ValueError(f"--autoencoder {url} cannot be read ({type(exc).__name__}: {exc})") from None

    if type(model).__name__ not in AUTOENCODER_CLASSES:
        raise ValueError(f"{url} holds a {type(model).__name__}, not an autoencoder")
    model = model.to(device).float()
    for p in model.parameters():
        p.requires_grad_(False)
    return Autoencoder(model, float(meta.get("latent_scale") or 1.0)), meta


def build_task(kind: str, cfg: dict, images: torch.Tensor, device: torch.device):
    seed = int(cfg["run"]["seed"])
    if kind == "autoencoder":
        return AutoencoderTask(images, cfg["model"], cfg["loss"], seed)
    if kind == "estimator":
        return EstimatorTask(images, cfg["operator"], cfg["noise_sigma"], cfg["noise_sigma_max"],
                             cfg["operator_params"], cfg["model"], seed)
    ae, meta = load_frozen_autoencoder(cfg["autoencoder"], device)
    if kind == "ldm":
        if not meta.get("latent_scale"):
            raise ValueError(f"{cfg['autoencoder']} records no latent_scale; train it with train-autoencoder")
        return DenoiserTask(images, ae, cfg["model"], seed, device, bool(cfg["data"]["hflip"]))
    if kind == "severity":
        return SeverityTask(images, ae, cfg["operator"], cfg["noise_sigma"], cfg["operator_params"],
                            cfg["loss"], seed, cfg.get("init"), cfg.get("noise_sigma_max"))
    raise ValueError(f"unknown training kind {kind!r}; choose one of {KINDS}")


def machine_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        cpu = names[0] if names else platform.processor()
    except OSError:
        cpu = platform.processor() or platform.machine()
    return f"{cpu} ({os.cpu_count()} logical CPUs)"


def model_card(kind: str, cfg: dict, summary: dict, data: dict, machine: str, command: str,
               fingerprint) -> str:
    run = cfg["run"]
    losses = ", ".join(f"{k} {v:.5g}" for k, v in sorted(summary["losses"].items())) or "n/a"
    lines = [
        f"# flash-restore {kind} model", "",
        f"- data: `{cfg['data']['url']}` ({data['items']} crops of {data['size']}×{data['size']} px)",
        f"- steps: {summary['steps']} (this run started at step {summary['start_step']})",
        f"- batch: {run['batch_size']} global over {summary['world']} worker(s)",
        f"- wall time: {summary['wall_s']:.1f} s (all runs of this checkpoint)",
        f"- machine: {machine}",
        f"- precision: {'bf16 autocast' if summary.get('bf16') else 'fp32'}",
        f"- seed: {run['seed']}",
        f"- final losses (mean of the last logging window): {losses}",
        f"- fingerprint: {json.dumps(fingerprint)}",
    ]
    if cfg.get("autoencoder"):
        lines.append(f"- autoencoder: `{cfg['autoencoder']}`")
    if kind in ("severity", "estimator"):
        noise = cfg["noise_sigma"] if cfg.get("noise_sigma_max") is None else \
            f"~ U[{cfg['noise_sigma']}, {cfg['noise_sigma_max']}]"
        lines.append(f"- operator: {cfg['operator']} (noise σ {noise} in [0,1], "
                     f"params {json.dumps(cfg['operator_params'], sort_keys=True)})")
    if summary.get("latent_scale") is not None:
        lines.append(f"- latent scale (1/std of training latents): {summary['latent_scale']:.6g}")
    lines += ["", "Command:", "", "```", command, "```", "", "Config:", "", "```json",
              json.dumps(cfg, indent=1, sort_keys=True), "```", ""]
    return "\n".join(lines)


def run_training(kind: str, cfg: dict, command: str = "", device: torch.device | str | None = None,
                 progress: Progress | None = None) -> dict:
    """Load data and models, train, and (rank 0) save the model and MODEL_CARD.md under cfg['output']."""
    if kind not in KINDS:
        raise ValueError(f"unknown training kind {kind!r}; choose one of {KINDS}")
    run = cfg["run"]
    device = torch.device(device) if device is not None else resolve_device(run["device"])
    if run.get("threads") and device.type == "cpu":
        torch.set_num_threads(int(run["threads"]))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    images, _ = load_crops(cfg["data"]["url"], cfg["data"]["max_items"])
    task = build_task(kind, cfg, images, device)
    plan = BatchPlan(len(images), run["batch_size"], run["seed"], cfg["data"]["hflip"])
    out_url = cfg["output"].rstrip("/")
    summary = fit(task, plan, cfg, f"{out_url}/checkpoint", device, progress)
    summary["bf16"] = use_bf16(run["precision"], device)
    if dist_info()[0] == 0:
        final = summary.pop("model")
        if kind == "autoencoder":
            summary["latent_scale"] = task.compute_latent_scale(final, device, int(cfg["loss"]["latent_scale_samples"]))
        fp = task.save(final, out_url, {"training_steps": summary["steps"]})
        card = model_card(kind, cfg, summary, {"items": len(images), "size": images.shape[-1]},
                          machine_name(device), command, fp)
        with fsspec.open(f"{out_url}/{CARD_NAME}", "w") as f:
            f.write(card)
        summary["fingerprint"] = fp
    summary.pop("model", None)
    if dist_info()[1] > 1:
        dist.barrier()
    return summary
