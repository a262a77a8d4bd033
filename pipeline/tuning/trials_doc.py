"""docs/tuning.md: every trial of a tune run, one section per solver / family / mode.

Why a section per mode: `tune --skip-flash` or a rerun of one mode rewrites its own
section and keeps what the other modes (and the other solvers and families) measured.
"""
from __future__ import annotations

from pathlib import Path

from pipeline.io.doc_sections import write_section

INTRO = ("# Solver tuning\n\nSettings tuned by `flash-restore tune` on validation crops of the training photos "
         "(never on dev photos), Flash and the baseline alike; the winners are in "
         "`pipeline/restoration/solver_settings.yaml`, which jobs read by default (`solver.settings: tuned`) and "
         "which enters the config hash.\n")


def columns(names: list[str]) -> list[str]:
    return ["mode", *names, "PSNR (dB)", "input PSNR", "mean NFE", "seconds", "crops", "chosen"]


def trial_rows(result: dict, names: list[str]) -> dict[str, list[list[str]]]:
    """Per mode, one row of cells per trial (the grid values `names`, scores, the chosen one)."""
    return {mode: [[mode, *(str(r.get(k, "")) for k in names), f"{r['psnr']:.2f}", f"{r['input_psnr']:.2f}",
                    f"{r['nfe']:.1f}", f"{r['seconds']:.0f}", str(r["n"]), "yes" if r is res["best"] else ""]
                   for r in res["trials"]]
            for mode, res in result.items()}


def write_trials(path: str | Path, solver: str, family: str, result: dict, names: list[str], note: str,
                 command: str) -> None:
    """Rewrite the sections of `result`'s modes, each a table of every trial."""
    cols, rows = columns(names), trial_rows(result, names)
    for mode, res in result.items():
        lines = [f"Command: `{command}`", "", note, "", "| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in rows[mode]]
        label = f"equal_nfe ({res['steps']} steps from noise)" if "steps" in res else mode
        write_section(path, f"## {solver} / {family} / {label}", "\n".join(lines) + "\n", INTRO)
