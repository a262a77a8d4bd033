"""Versioned solver settings (ζ, noise correction c, …) per solver, operator family and mode.

Why: a solver's step size and Flash's noise correction decide its quality, and the right
values depend on the task. They are tuned on validation crops of the *training* photos
(never on dev photos) by `flash-restore tune`, for Flash and the full-schedule baseline
alike, and shipped in `solver_settings.yaml`. Jobs read the table when
`solver.settings: tuned` (the default), or another table of the same format when
`solver.settings` is its path (settings tuned for another prior: `flash-restore tune --models M
--table FILE`); what a user sets explicitly (`solver.params.*`, a number for
`flash.noise_correction`) wins. The table's content enters the config hash, so retuning
changes the hash of every job that used it.

A (solver, family, mode) the table lacks is refused, not run on the solver's built-in
defaults behind the user's back: the user sets the settings explicitly (`solver.params.*`,
and in Flash mode a number for `flash.noise_correction`) or opts in with
`solver.untuned: defaults`. `solver.settings: null` asks for the built-ins outright. Which
source each family used is reported (`sources`, in stats.json). An entry may also name its
sampler (`sampler: {name, steps, eta}`), used unless the job sets `solver.sampler` itself.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.operators import OPERATORS
from pipeline.sampling.schedules import SAMPLERS
from pipeline.solvers import SOLVERS
from pipeline.solvers.base import number

TABLE = Path(__file__).resolve().parent / "solver_settings.yaml"
MODES = ("flash", "baseline", "equal_nfe")   # equal_nfe: from noise on a short schedule
UNTUNED = ("error", "defaults")   # solver.untuned: what a job does for an entry the table lacks
DEFAULT_C = 1.2   # Flash's built-in noise correction


def table_for(setting: str | None) -> str | None:
    """The table a job's `solver.settings` names: None = built-in defaults only, 'tuned' = the shipped table."""
    if setting is None:
        return None
    return str(TABLE) if setting == "tuned" else setting


MAX_BYTES = 1 << 20   # the shipped table is ~6 KB; anything far larger is not a settings table


def load_table(path: str | None = None) -> dict:
    path = str(path or TABLE)
    st = os.stat(path)
    if st.st_size > MAX_BYTES:
        raise ValueError(f"{path}: {st.st_size} bytes, more than a settings table's {MAX_BYTES}")
    return _load(path, st.st_mtime_ns, st.st_size)  # a rewritten table is read again


@lru_cache(maxsize=8)
def _load(path: str, _mtime_ns: int, _size: int) -> dict:
    try:
        with open(path) as fh:
            table = yaml.safe_load(fh) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not YAML ({type(exc).__name__})") from None
    if not isinstance(table, dict) or not isinstance(table.get("settings"), dict) or "version" not in table:
        raise ValueError(f"{path}: expected 'version' and a 'settings' mapping")
    for where, solver, entry in _entries(table["settings"], path):
        _check_entry(where, solver, entry)
    return table


def _entries(settings: dict, path: str):
    """(name, solver, entry) for every solver / family / mode; a table of another shape is a ValueError."""
    for solver, families in settings.items():
        if solver not in SOLVERS or not isinstance(families, dict):
            raise ValueError(f"{path}: settings.{solver}: not a solver of {sorted(SOLVERS)} with a mapping of families")
        for family, modes in families.items():
            for mode, entry in (modes.items() if isinstance(modes, dict) else [(None, None)]):
                if mode not in MODES or not isinstance(entry, dict):
                    raise ValueError(f"{path}: settings.{solver}.{family}: expected a mapping of {MODES} to entries")
                yield f"{path}: settings.{solver}.{family}.{mode}", solver, entry


def _check_entry(where: str, solver: str, entry: dict) -> None:
    """Known hyperparameter names and a numeric c; the solver checks the values when it is built."""
    params = entry.get("params", {})
    try:
        if not isinstance(params, dict):
            raise ValueError(f"params must be a mapping, got {type(params).__name__}")
        SOLVERS[solver].check_names(params)
        if "noise_correction" in entry:
            number("noise_correction", entry["noise_correction"])
        if "sampler" in entry:
            check_sampler(entry["sampler"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def check_sampler(spec) -> None:
    """An entry's own sampler: {name: ddpm|ddim, steps: N, eta: η} (steps and eta optional)."""
    if not isinstance(spec, dict) or spec.get("name") not in SAMPLERS or set(spec) - {"name", "steps", "eta"}:
        raise ValueError(f"sampler must be {{name: one of {sorted(SAMPLERS)}, steps, eta}}, got {spec!r}")
    steps = spec.get("steps", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"sampler steps must be an integer ≥ 1, got {steps!r}")
    eta = spec.get("eta", 0.0)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0 <= eta < float("inf"):
        raise ValueError(f"sampler eta must be a number ≥ 0, got {eta!r}")


def sampler_of(solver: str, family: str, flash: bool, table: str | None) -> dict | None:
    """The sampler the table's entry names for (solver, family, mode), None where it names none (the
    solver's own). A PSNR-led family (super-resolution, JPEG) restores best from ẑ along a deterministic
    DDIM path (docs/tuning.md), a blur along DDPM's."""
    if table is None:
        return None
    found = entry(solver, family, "flash" if flash else "baseline", table) or {}
    return dict(found["sampler"]) if "sampler" in found else None


def table_hash(path: str | None = None) -> str:
    return hashlib.sha256(json.dumps(load_table(path), sort_keys=True).encode()).hexdigest()[:16]


def entry_family(solver: str, family: str, mode: str, path: str | None = None) -> str:
    """The family whose entry (solver, family, mode) reads: its own where the table has one, else the family
    it borrows settings from (`Operator.settings_of`), else its own (absent)."""
    own = load_table(path)["settings"].get(solver, {}).get(family, {}).get(mode) is not None
    relative = OPERATORS[family].settings_of if family in OPERATORS else None
    return family if own or relative is None else relative


def entry(solver: str, family: str, mode: str, path: str | None = None) -> dict | None:
    """The table's entry for (solver, family, mode) as written, else the entry of the family it
    borrows settings from (`entry_family`), None when the table lacks both."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    read = entry_family(solver, family, mode, path)
    return load_table(path)["settings"].get(solver, {}).get(read, {}).get(mode)


def tuned(solver: str, family: str, mode: str, path: str | None = None) -> dict:
    """The tuned settings for (solver, family, mode): {'params': {...}, 'noise_correction': c}; {} when untuned."""
    found = entry(solver, family, mode, path) or {}
    return {"params": dict(found.get("params", {})),
            **({"noise_correction": found["noise_correction"]} if "noise_correction" in found else {})}


def source(solver: str, family: str, flash: bool, user_params: dict, user_c, table: str | None,
           untuned: str = "error") -> str:
    """Where (solver, family, mode)'s settings come from: 'tuned' (the table's entry, user settings over
    it), 'explicit' (no entry; the config sets solver.params and, for Flash, c), 'defaults' (the
    built-ins: solver.settings=null, or solver.untuned=defaults). An entry the table lacks with
    nothing set raises ValueError naming it."""
    mode = "flash" if flash else "baseline"
    if table is None or not restorable(solver, family):  # a family the solver cannot restore fails per sample
        return "defaults"
    if entry(solver, family, mode, table) is not None:
        return "tuned"
    hyper = SOLVERS[solver].defaults if solver in SOLVERS else {}
    if (user_params or not hyper) and not (flash and user_c == "tuned"):
        return "explicit"
    if untuned == "defaults":
        return "defaults"
    needs = ([f"solver.params (any of {', '.join(sorted(hyper))})"] * (not user_params and bool(hyper))
             + ["flash.noise_correction"] * (flash and user_c == "tuned"))
    raise ValueError(f"the solver settings table {table} has no entry {solver}/{family}/{mode}: set "
                     f"{' and '.join(needs)} explicitly, tune it (flash-restore tune), or set solver.untuned=defaults "
                     f"to run on the built-ins ({hyper or 'no hyperparameters'}"
                     f"{f', noise correction {DEFAULT_C}' if flash else ''})")


def resolve(solver: str, family: str, flash: bool, user_params: dict, user_c, table: str | None,
            default_c: float = DEFAULT_C, untuned: str = "defaults") -> tuple[dict, float | None]:
    """(solver params, noise correction) for one family: user settings over the table (a path; None = no
    table) over built-ins. An entry the table lacks follows `untuned` (`source`): a job passes its
    `solver.untuned` (default error); reports asking what a cell resolves to keep the built-ins."""
    source(solver, family, flash, user_params, user_c, table, untuned)
    found = tuned(solver, family, "flash" if flash else "baseline", table) if table else {}
    params = {**found.get("params", {}), **user_params}
    if user_c == "tuned":
        c = found.get("noise_correction", default_c)
    else:
        c = user_c
    return params, c


def restorable(solver: str, family: str) -> bool:
    """Whether `solver` can restore `family` at all (PSLD's gluing needs a linear operator's Aᵀ)."""
    return family in OPERATORS and solver in SOLVERS and not (
        SOLVERS[solver].needs_linear and not OPERATORS[family].linear)


def sources(solver: str, families, flash: bool, user_params: dict, user_c, setting: str | None,
            untuned: str = "error") -> dict[str, dict]:
    """Per family a job can restore: the table entry it reads, where its settings come from and what they
    resolve to (what stats.json records). Raises on the first entry the table lacks (`source`)."""
    table, mode = table_for(setting), "flash" if flash else "baseline"
    out = {}
    for family in sorted(f for f in families if restorable(solver, f)):
        params, c = resolve(solver, family, flash, user_params, user_c, table, untuned=untuned)
        read = family if table is None else entry_family(solver, family, mode, table)
        out[family] = {"entry": f"{solver}/{read}/{mode}", "table": table,
                       "source": source(solver, family, flash, user_params, user_c, table, untuned),
                       "params": params, "noise_correction": c if flash else None,
                       "sampler": sampler_of(solver, family, flash, table)}
    return out
