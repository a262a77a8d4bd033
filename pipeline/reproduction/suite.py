"""The paper-reproduction suite: which tasks, cells and budgets `flash-restore evaluate` runs.

Why a table of cells: every number in docs/reproduction.md comes from one cell, a restore
job with one config on one task's images. A cell is named TASK/SOLVER/MODE, its key hashes
everything that decides its output (config, models, images, n), so a finished cell is reused
and an interrupted evaluation continues where it stopped.

Modes: `flash` and `baseline` (the solver's full schedule from noise); `equal_nfe` (the
baseline from noise on a schedule of Flash's mean NFE, equal compute); `start-K` (every
sample starts at index K with the start-latent formula of Flash, the noise level K implies);
`decode` (D(ẑ), the autoencoder-only row) and `input` (the degraded measurement) under the
solver name `none`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from pipeline.execution.config import schedule_sets
from pipeline.operators import OPERATORS
from pipeline.solvers import SOLVERS, restoring_solvers

NOISE = 0.05
ROBUST_NOISES = (0.0, 0.025, 0.05, 0.075, 0.1)
FIXED_STARTS = (25, 50, 100, 200, 400, 700)   # on the 1000-step DDPM grid


@dataclass(frozen=True)
class Task:
    """One degradation protocol: an operator family, t ~ U[lo, hi], the measurement noise."""
    name: str
    family: str
    severity: tuple[float, float]
    params: tuple = ()          # operator overrides as ((name, value), ...), hashable
    noise: float = NOISE
    label: str = ""

    def overrides(self) -> dict:
        return dict(self.params)


TASKS = {t.name: t for t in (
    Task("blur_varying", "gaussian_blur", (0.0, 1.0), label="Gaussian blur, t ~ U[0,1]"),
    Task("blur_fixed", "gaussian_blur", (1.0, 1.0), label="Gaussian blur, t = 1"),
    Task("nonlinear_blur", "nonlinear_blur", (0.0, 1.0), label="nonlinear blur, t ~ U[0,1]"),
    Task("motion_blur", "motion_blur", (0.0, 1.0), label="camera-shake motion blur, t ~ U[0,1]"),
    Task("inpainting", "inpainting", (0.0, 1.0), (("frac_max", 0.8), ("frac_min", 0.7)),
         label="random inpainting, 70–80 % of pixels missing"),
    Task("jpeg_q10", "jpeg", (round(40 / 45, 6),) * 2, (("quality", 10),), noise=0.0,
         label="JPEG at quality 10 (libjpeg, 4:2:0), no added noise"),
    Task("sr_x4", "downsample", (1.0, 1.0), label="super-resolution ×4 (16-px bicubic copies of 64-px crops)"),
    Task("sr_x2", "downsample", (0.5, 0.5), label="super-resolution ×2 (32-px bicubic copies)"),
)}


def noise_task(sigma: float) -> Task:
    """blur_varying measured at another noise level (the encoders were trained at 0.05)."""
    base = TASKS["blur_varying"]
    if sigma == base.noise:
        return base
    return Task(f"blur_varying-noise{sigma:g}", base.family, base.severity, base.params, float(sigma),
                f"Gaussian blur, t ~ U[0,1], test noise σ = {sigma:g}")


def task_named(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    prefix = "blur_varying-noise"
    if name.startswith(prefix):
        try:
            return noise_task(float(name[len(prefix):]))
        except ValueError:
            pass
    raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)} and blur_varying-noise<σ>")


@dataclass(frozen=True)
class Budget:
    """Images per cell. Baselines (1000 steps from noise) get fewer, the report says how many.
    The default fits this 2-core CPU in about an hour and a half; a GPU takes `--n 64` or more."""
    n: int = 16
    n_baseline: int = 4
    n_fixed: int = 16
    fixed_starts: tuple = FIXED_STARTS
    noises: tuple = ROBUST_NOISES
    steps: int | None = None      # None: each solver's own schedule; --quick shortens it

    @classmethod
    def quick(cls) -> "Budget":
        return cls(n=2, n_baseline=1, n_fixed=2, fixed_starts=(2, 6), noises=(0.0, 0.05, 0.1), steps=10)


@dataclass(frozen=True)
class Cell:
    task: str
    solver: str
    mode: str

    @property
    def id(self) -> str:
        return f"{self.task}/{self.solver}/{self.mode}"

    @property
    def fixed_start(self) -> int | None:
        return int(self.mode[len("start-"):]) if self.mode.startswith("start-") else None

    def n(self, budget: Budget) -> int:
        if self.mode in ("baseline",):
            return budget.n_baseline
        return budget.n_fixed if self.fixed_start is not None else budget.n


def parse_cell(text: str) -> Cell:
    parts = text.strip().strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"--cell takes TASK/SOLVER/MODE, got {text!r}")
    task_named(parts[0])
    cell = Cell(*parts)
    if cell.solver == "none":
        if cell.mode not in ("input", "decode"):
            raise ValueError(f"cell {text!r}: solver 'none' has modes input|decode")
    elif cell.solver not in solver_names():
        raise ValueError(f"cell {text!r}: solver one of {tuple(solver_names())} or none")
    elif cell.mode not in ("flash", "baseline", "equal_nfe") and cell.fixed_start is None:
        raise ValueError(f"cell {text!r}: mode one of flash|baseline|equal_nfe|start-K")
    return cell


def solver_names() -> list[str]:
    """The suite's solvers: every registered solver that restores, in registry order."""
    return restoring_solvers()


def applicable(solver: str, family: str) -> bool:
    """PSLD needs a linear operator (its gluing term uses Aᵀ)."""
    return not (getattr(SOLVERS[solver], "needs_linear", False) and not OPERATORS[family].linear)


def suite_cells(budget: Budget) -> list[Cell]:
    """Every cell of the paper suite, in the order they run (equal_nfe after its flash cell)."""
    cells: list[Cell] = []
    for task in TASKS.values():
        cells += [Cell(task.name, "none", "input"), Cell(task.name, "none", "decode")]
        for solver in solver_names():
            if applicable(solver, task.family):
                cells += [Cell(task.name, solver, m) for m in ("flash", "equal_nfe", "baseline")]
    cells += [Cell("blur_varying", "ldps", f"start-{k}") for k in budget.fixed_starts]
    for sigma in budget.noises:
        t = noise_task(sigma).name
        cells += [Cell(t, "none", "input"), Cell(t, "ldps", "flash"), Cell(t, "ldps", "baseline")]
    return list(dict.fromkeys(cells))


def cell_overrides(cell: Cell, task: Task, budget: Budget, flash_nfe: float | None = None) -> list[str]:
    """The restore-job config of a cell as dotted overrides (beside the models and the engine)."""
    solver = "ldps" if cell.solver == "none" else cell.solver
    sets = [f"solver.name={solver}"]
    if budget.steps:
        sets += schedule_sets(solver, budget.steps)
    if cell.mode == "baseline":
        sets.append("flash.enabled=false")
    elif cell.mode == "equal_nfe":
        if flash_nfe is None:
            raise ValueError(f"cell {cell.id} needs its flash cell's mean NFE first")
        sets = [s for s in sets if not s.startswith(("solver.sampler", "solver.steps"))]
        sets += ["flash.enabled=false", *schedule_sets(solver, max(1, round(flash_nfe)))]
    elif cell.mode == "decode":
        sets.append("flash.decode_only=true")
    elif cell.fixed_start is not None:
        sets.append(f"flash.start_step={cell.fixed_start}")
    return sets


def data_key(task: Task, crop_keys: list[str], seed: int, operator_params: dict) -> str:
    """What a task's images depend on: protocol, clean crops, seed, and the operator parameters they are
    degraded with (the family's severity encoder's, under the task's own; e.g. the blur kernel)."""
    blob = json.dumps({"task": asdict(task), "crops": crop_keys, "seed": seed, "operator": operator_params},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cell_key(config_hash: str, model_hashes: dict, data: str, n: int) -> str:
    blob = json.dumps({"config": config_hash, "models": model_hashes, "data": data, "n": n}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
