"""Solver registry: one line per solver, plus each solver's reference sampler (method §5).

LDPS, GML-DPS, PSLD and Unconditional run ancestral DDPM over all T steps; ReSample runs
DDIM-500 with η = 1 (the only released configs that set a DDIM sampler).
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


def default_sampler_name(name: str) -> str:
    """The family of a solver's reference sampler, as `solver.sampler` names it: ddim for ReSample, else ddpm."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return "ddim" if name == "resample" else "ddpm"


def default_sampler(name: str, schedule: NoiseSchedule) -> Sampler:
    """The reference's sampler for a solver: DDIM-500 (η=1) for ReSample, else DDPM over all T."""
    if default_sampler_name(name) == "ddim":
        return DDIMSampler(schedule, min(500, schedule.num_timesteps), eta=1.0)
    return DDPMSampler(schedule)


def make_solver(name: str, model: LatentDiffusion, sampler: Sampler | None = None, **hyperparameters) -> Solver:
    """Build a registered solver; ValueError for unknown names or hyperparameters."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; choose one of {sorted(SOLVERS)}")
    return SOLVERS[name](model, sampler if sampler is not None else default_sampler(name, model.schedule),
                         **hyperparameters)


__all__ = ["ACCOUNT_KEYS", "SOLVERS", "GMLDPS", "LatentDPS", "PSLD", "ReSample", "Solver", "SolveResult",
           "Unconditional", "default_sampler", "default_sampler_name", "make_solver"]
