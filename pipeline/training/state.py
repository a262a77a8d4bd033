"""EMA weights and resumable checkpoints as safetensors + JSON (never pickle, never torch.load).

Why: a checkpoint must be safe to load from shared storage and must restore *exactly*
what an uninterrupted run would hold at that step: model, EMA and optimizer moments as
tensors; step counts, losses and wall time as JSON. No RNG state is stored because every
draw is a function of (seed, step) (`pipeline.training.data.step_generator`).

Layout of `<output>/checkpoint/`: `state-<step>.safetensors` and `state.json`, which names
the tensor file and is written last, so a crash mid-save leaves the previous checkpoint valid.
"""
from __future__ import annotations

import json
import time

import fsspec
import torch
from diffusers.training_utils import EMAModel
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

STATE_JSON = "state.json"


# The warm-up min(decay, (1 + s)/(10 + s)) after optimizer step s (0-based) as diffusers' warm-up
# 1 − (1 + k/inv_gamma)^−power with power 1, inv_gamma 9 and k = s + 1 (the same function of s);
# diffusers counts k = (its step count) − update_after_step − 1, so update_after_step = −1.
EMA_WARMUP = {"use_ema_warmup": True, "inv_gamma": 9.0, "power": 1.0, "update_after_step": -1}


class EMA:
    """diffusers' EMAModel over a model's parameters, with names for the safetensors checkpoint.

    The decay after step s is min(decay, (1 + s)/(10 + s)), so short runs are not dominated by
    the random initialisation; it is a function of the step only, so a resumed run averages as
    an uninterrupted one. decay = 0 disables it (the raw weights are used).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = float(decay)
        self.names = [name for name, _ in model.named_parameters()]
        buffers = [name for name, b in model.named_buffers() if b.is_floating_point()]
        if self.decay > 0 and buffers:  # EMAModel averages parameters only: refuse rather than skip them
            raise ValueError(f"EMA averages parameters only; this model has floating-point buffers {buffers[:3]}")
        self.average = EMAModel(model.parameters(), decay=self.decay, **EMA_WARMUP) if self.decay > 0 else None

    @property
    def shadow(self) -> dict[str, torch.Tensor]:
        """The averaged parameters by name (the tensors themselves: writing them sets the average)."""
        return dict(zip(self.names, self.average.shadow_params)) if self.average is not None else {}

    def decay_at(self, step: int) -> float:
        """The decay `update(model, step)` applies."""
        return self.average.get_decay(step + 1) if self.average is not None else 0.0

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in the weights after optimizer step `step` (0-based)."""
        if self.average is None:
            return
        self.average.optimization_step = step  # EMAModel.step counts it to step + 1 before taking the decay
        self.average.step(model.parameters())

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> nn.Module:
        """Write the averaged weights into `model` (no-op when disabled)."""
        if self.average is not None:
            self.average.copy_to(model.parameters())
        return model


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into named tensors + a JSON-able remainder."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{name}"] = value
            else:
                scalars[f"{idx}.{name}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for key, value in meta.get("scalars", {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_checkpoint(url: str, step: int, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer,
                    info: dict) -> None:
    """Write the state after `step` optimizer steps; `info` is extra JSON (losses, wall time, config)."""
    fs, root = fsspec.core.url_to_fs(url)
    root = root.rstrip("/")
    fs.makedirs(root, exist_ok=True)
    tensors = {f"model.{k}": _cpu(v) for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": _cpu(v) for k, v in ema.shadow.items()} if ema.decay > 0 else {})
    opt_tensors, opt_meta = optimizer_tensors(opt)
    tensors.update({k: _cpu(v) for k, v in opt_tensors.items()})
    name = f"state-{int(step):08d}.safetensors"
    with fs.open(f"{root}/{name}", "wb") as f:
        f.write(st_save(tensors))
    previous = load_checkpoint_meta(url)
    meta = {"step": int(step), "tensors": name, "optimizer": opt_meta, "saved_at": time.time(), **info}
    with fs.open(f"{root}/{STATE_JSON}.tmp", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    fs.mv(f"{root}/{STATE_JSON}.tmp", f"{root}/{STATE_JSON}")
    if previous and previous.get("tensors") not in (None, name):
        fs.rm(f"{root}/{previous['tensors']}")


def load_checkpoint_meta(url: str) -> dict | None:
    fs, root = fsspec.core.url_to_fs(url)
    path = f"{root.rstrip('/')}/{STATE_JSON}"
    if not fs.exists(path):
        return None
    with fs.open(path, "r") as f:
        return json.load(f)


def load_checkpoint(url: str, model: nn.Module, ema: EMA, opt: torch.optim.Optimizer) -> dict | None:
    """Restore model, EMA and optimizer from `url` in place; returns the JSON meta, or None if absent."""
    meta = load_checkpoint_meta(url)
    if meta is None:
        return None
    fs, root = fsspec.core.url_to_fs(url)
    with fs.open(f"{root.rstrip('/')}/{meta['tensors']}", "rb") as f:
        tensors = st_load(f.read())
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    model.load_state_dict(model_state, strict=True)
    if ema.decay > 0:
        shadow = ema.shadow
        missing = set(shadow) - {k[len("ema."):] for k in tensors if k.startswith("ema.")}
        if missing:
            raise ValueError(f"checkpoint {url} has no EMA weights for {sorted(missing)[:3]}")
        for k, v in shadow.items():
            v.copy_(tensors[f"ema.{k}"])
    restore_optimizer(opt, {k: v for k, v in tensors.items() if k.startswith("optimizer.")}, meta["optimizer"])
    return meta
