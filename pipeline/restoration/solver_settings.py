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
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

import yaml

TABLE = Path(__file__).resolve().parent / "solver_settings.yaml"
MODES = ("flash", "baseline", "equal_nfe")   # equal_nfe: from noise on a short schedule


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
    from pipeline.solvers import SOLVERS

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
    from pipeline.solvers import SOLVERS
    from pipeline.solvers.base import number

    params = entry.get("params", {})
    try:
        if not isinstance(params, dict):
            raise ValueError(f"params must be a mapping, got {type(params).__name__}")
        SOLVERS[solver].check_names(params)
        if "noise_correction" in entry:
            number("noise_correction", entry["noise_correction"])
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def table_hash(path: str | None = None) -> str:
    return hashlib.sha256(json.dumps(load_table(path), sort_keys=True).encode()).hexdigest()[:16]


def tuned(solver: str, family: str, mode: str, path: str | None = None) -> dict:
    """The tuned settings for (solver, family, mode): {'params': {...}, 'noise_correction': c}; {} when untuned."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    entry = load_table(path)["settings"].get(solver, {}).get(family, {}).get(mode, {})
    return {"params": dict(entry.get("params", {})),
            **({"noise_correction": entry["noise_correction"]} if "noise_correction" in entry else {})}


def resolve(solver: str, family: str, flash: bool, user_params: dict, user_c, table: str | None,
            default_c: float = 1.2) -> tuple[dict, float | None]:
    """(solver params, noise correction) for one family: user settings over the table (a path; None = no
    table) over built-ins."""
    entry = tuned(solver, family, "flash" if flash else "baseline", table) if table else {}
    params = {**entry.get("params", {}), **user_params}
    if user_c == "tuned":
        c = entry.get("noise_correction", default_c)
    else:
        c = user_c
    return params, c
