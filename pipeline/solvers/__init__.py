"""Solver registry: one line per solver; every list of solvers derives from it (method §5).

Adding a solver = one file with a `base.Solver` subclass (its `name`, `label`, and
`reference_sampler` / `restores` where they differ from the base) + one line in `SOLVERS`.
Each solver's class names its reference sampler: LDPS, GML-DPS, PSLD and Unconditional run
ancestral DDPM over all T steps; ReSample runs DDIM-500 with η = 1 (the only released configs
that set a DDIM sampler).
"""
from __future__ import annotations

from pipeline.models.latent import LatentDiffusion
from pipeline.sampling.schedules import DDIMSampler, DDPMSampler, NoiseSchedule, Sampler
from pipeline.solvers.base import ACCOUNT_KEYS, Solver, SolveResult
from pipeline.solvers.gml_dps import GMLDPS
from pipeline.solvers.ldps import LatentDPS
from pipeline.solvers.psld import PSLD
from pipeline.solvers.resample import ReSample
from pipeline.solvers.unconditional import Unconditional

SOLVERS: dict[str, type[Solver]] = {
    "ldps": LatentDPS,
    "gml_dps": GMLDPS,
    "psld": PSLD,
    "resample": ReSample,
    "unconditional": Unconditional,
}


def restoring_solvers() -> list[str]:
    """The registered solvers that restore (`Solver.restores`), in registry order: what the evaluation
    suite, `estimate` and `bench calibrate` cover (unconditional sampling is only a reference point)."""
    return [name for name, cls in SOLVERS.items() if cls.restores]


def default_sampler_name(name: str) -> str:
    """The family of a solver's reference sampler, as `solver.sampler` names it (`Solver.reference_sampler`)."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name].reference_sampler


def default_sampler(name: str, schedule: NoiseSchedule) -> Sampler:
    """The reference's sampler for a solver: DDIM-500 (η=1) where it names ddim (ReSample), DDPM over all T for ddpm."""
    family = default_sampler_name(name)
    if family == "ddim":
        return DDIMSampler(schedule, min(500, schedule.num_timesteps), eta=1.0)
    if family == "ddpm":
        return DDPMSampler(schedule)
    raise ValueError(f"solver {name!r}: reference_sampler must be 'ddpm' or 'ddim', got {family!r}")


def make_solver(name: str, model: LatentDiffusion, sampler: Sampler | None = None, **hyperparameters) -> Solver:
    """Build a registered solver; ValueError for unknown names or hyperparameters."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](model, sampler if sampler is not None else default_sampler(name, model.schedule),
                         **hyperparameters)


__all__ = ["ACCOUNT_KEYS", "SOLVERS", "GMLDPS", "LatentDPS", "PSLD", "ReSample", "Solver", "SolveResult",
           "Unconditional", "default_sampler", "default_sampler_name", "make_solver", "restoring_solvers"]
