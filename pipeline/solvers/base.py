"""The solver contract: a staggered reverse loop with a per-solver correction hook.

A batch holds samples with different start indices (method §3.4, docs/architecture.md).
The loop runs from the largest start index down to 0; at grid step k the active rows are
those with start_index ≥ k, so each sample joins at its own start and all finish at 0.
Only active rows are computed, every random draw comes from the sample's own generator,
and losses are summed per sample (GroupNorm models: rows never mix), so a batched solve
equals solving each sample alone. The graph is cut after every step (method §5).
"""
from __future__ import annotations

from contextlib import contextmanager

import math
from dataclasses import dataclass
from typing import ClassVar, Sequence

import torch

from pipeline.models.latent import LatentDiffusion
from pipeline.sampling.schedules import Sampler

ACCOUNT_KEYS = ("denoiser_calls", "decoder_forward", "decoder_backward", "encoder_forward", "inner_steps")


@dataclass
class SolveResult:
    """Per-sample outputs of one solve: latent, decoded image in [−1,1], NFE and cost counts."""

    z0: torch.Tensor
    x: torch.Tensor
    nfe: torch.Tensor
    account: dict[str, torch.Tensor]


def number(name: str, value, lo: float | None = 0.0, hi: float | None = None, integer: bool = False):
    """A finite number within [lo, hi] (an int if `integer`); anything else is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise ValueError(f"hyperparameter {name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ValueError(f"hyperparameter {name}={value!r} outside [{lo}, {hi}]")
    return int(value) if integer else float(value)


def row_norm(v: torch.Tensor) -> torch.Tensor:
    """Per-sample Euclidean norm ‖v_i‖₂ of a batch."""
    return v.flatten(1).norm(dim=1)


@contextmanager
def canvas_norms(solver: "Solver", scale: float):
    """While open, the solver's unsquared guidance norms carry a canvas's area scale (`Solver.norm`)."""
    solver.norm_scale = float(scale)
    try:
        yield solver
    finally:
        del solver.norm_scale


class Solver:
    """Base solver: unconditional sampler steps plus `correct`, run as a staggered batch.

    Subclasses set `name`, `label` (the name reports print), `defaults` (the reference's
    hyperparameters), `differentiable` (whether `correct` needs the graph from z_t through the
    denoiser), `reference_sampler` and `restores` where they differ, and override `check_config`
    and `correct`. Every list of solvers (suite, estimate, calibrate, report) derives from these.
    """

    name: ClassVar[str] = "solver"
    label: ClassVar[str] = ""
    defaults: ClassVar[dict] = {}
    differentiable: ClassVar[bool] = False
    needs_linear: ClassVar[bool] = False
    #: the sampler family of the solver's reference config: "ddpm" (all T steps) or "ddim" (DDIM-500, η = 1)
    reference_sampler: ClassVar[str] = "ddpm"
    #: False for a solver that applies no data consistency (unconditional sampling): a reference point,
    #: left out of the restoration lists (evaluation suite, estimate, calibrate)
    restores: ClassVar[bool] = True
    #: the canvas's √(area / the prior's tile area), set while a whole photo is solved (`canvas_norms`)
    norm_scale: float = 1.0

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        """A guidance term's per-sample unsquared norm, scaled to a crop's per-pixel strength.

        Why: on a canvas of n crops' area ‖v‖ grows as √n, so its gradient per pixel falls as
        1/√n and step sizes tuned on crops would guide a photo √n times too weakly; times
        √n it guides every pixel as it guides a crop. At the prior's own size it is ‖v‖."""
        n = row_norm(v)
        return n if self.norm_scale == 1.0 else n * self.norm_scale

    @classmethod
    def check_names(cls, names) -> None:
        """ValueError naming any hyperparameter this solver does not have (before any model is built)."""
        unknown = sorted(set(names) - set(cls.defaults))
        if unknown:
            raise ValueError(f"{cls.name}: unknown hyperparameters {unknown}; known: {sorted(cls.defaults)}")

    def __init__(self, model: LatentDiffusion, sampler: Sampler, **hyperparameters):
        self.check_names(hyperparameters)
        self.model = model
        self.sampler = sampler
        self.config = self.check_config({**self.defaults, **hyperparameters})

    def check_config(self, config: dict) -> dict:
        """Validate hyperparameters (ValueError naming the field); return the cleaned dict."""
        return config

    # --- the hook ---------------------------------------------------------------------
    def correct(self, z_t: torch.Tensor, z_prev: torch.Tensor, z0_hat: torch.Tensor, y: torch.Tensor,
                operator, k: int, gens: list[torch.Generator], count: dict[str, torch.Tensor]) -> torch.Tensor:
        """The data-consistency correction of one step for the active rows; returns z_{t−1}.

        `count` holds (n_active,) long counters to increment in place.
        """
        return z_prev

    # --- the loop ---------------------------------------------------------------------
    def check_inputs(self, y, operator, z_start, start_index, gens) -> None:
        keys = list(getattr(operator, "keys", [f"#{i}" for i in range(len(operator))]))
        sizes = {"y": y.shape[0] if y.dim() == 4 else None, "operator": len(operator),
                 "z_start": z_start.shape[0] if z_start.dim() == 4 else None,
                 "start_index": start_index.shape[0] if start_index.dim() == 1 else None, "gens": len(gens)}
        if None in sizes.values() or len(set(sizes.values())) != 1:
            raise ValueError(f"{self.name}: batch sizes disagree {sizes} (y (B,3,H,W), z_start (B,C,h,w), "
                             f"start_index (B,)) for keys {keys}")
        if tuple(z_start.shape[1:]) != tuple(self.model.latent_shape):
            raise ValueError(f"{self.name}: z_start has shape {tuple(z_start.shape[1:])}, the model's latent is "
                             f"{tuple(self.model.latent_shape)} for keys {keys}")
        for name, t in (("y", y), ("z_start", z_start)):
            bad = ~torch.isfinite(t.flatten(1)).all(dim=1)
            if bad.any():
                raise ValueError(f"{self.name}: {name} is not finite for keys {[keys[i] for i in bad.nonzero().flatten().tolist()]}")
        if start_index.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16, torch.bool):
            raise ValueError(f"{self.name}: start_index must be integer, got {start_index.dtype} for keys {keys}")
        bad = (start_index < 0) | (start_index >= self.sampler.num_steps)
        if bad.any():
            raise ValueError(f"{self.name}: start_index outside 0..{self.sampler.num_steps - 1} for keys "
                             f"{[keys[i] for i in bad.nonzero().flatten().tolist()]}")
        if self.needs_linear and not getattr(operator, "linear", False):
            raise ValueError(f"{self.name} needs a linear operator with an adjoint; {getattr(operator, 'name', operator)!r} "
                             f"is not linear (keys {keys})")

    def solve(self, y: torch.Tensor, operator, z_start: torch.Tensor, start_index: torch.Tensor,
              gens: Sequence[torch.Generator]) -> SolveResult:
        """Run every sample from its own start index down to grid index 0 (one batched loop)."""
        start_index = torch.as_tensor(start_index).reshape(-1).cpu()
        gens = list(gens)
        self.check_inputs(y, operator, z_start, start_index, gens)
        B = z_start.shape[0]
        start_index = start_index.to(torch.long)
        z = z_start.detach().clone()
        account = {k: torch.zeros(B, dtype=torch.long) for k in ACCOUNT_KEYS}
        active, op = None, None
        for k in range(int(start_index.max()) if B else -1, -1, -1):
            rows = (start_index >= k).nonzero().flatten()
            if active is None or rows.numel() != active.numel():  # rows only ever join
                active = rows
                op = operator if rows.numel() == B else operator.subset(rows)
                y_act, gens_act, dev_rows = y[rows], [gens[i] for i in rows.tolist()], rows.to(z.device)
            count = {key: torch.zeros(rows.numel(), dtype=torch.long) for key in ACCOUNT_KEYS}
            z_new = self.reverse_step(z[dev_rows], k, y_act, op, gens_act, count)
            z[dev_rows] = z_new.detach()
            for key in ACCOUNT_KEYS:
                account[key][rows] += count[key]
        with torch.no_grad():
            x = self.model.autoencoder.decode(z)
        account["decoder_forward"] += 1
        return SolveResult(z0=z, x=x, nfe=account["denoiser_calls"].clone(), account=account)

    def reverse_step(self, z: torch.Tensor, k: int, y, op, gens, count) -> torch.Tensor:
        """ε at the per-sample timesteps, the sampler's unconditional step, then `correct`."""
        index = torch.full((z.shape[0],), k, dtype=torch.long)
        grad = torch.enable_grad() if self.differentiable else torch.no_grad()
        with grad:
            z_t = z.detach().requires_grad_(self.differentiable)
            eps = self.model.eps(z_t, self.sampler.timesteps(index))
            count["denoiser_calls"] += 1
            z_prev, z0_hat = self.sampler.step(z_t, eps, index, gens)
            return self.correct(z_t, z_prev, z0_hat, y, op, k, gens, count).detach()
