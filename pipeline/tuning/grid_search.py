"""Grid search of solver settings on validation crops of the training photos (never dev photos).

Why: an untuned solver is judged unfairly (Latent-DPS at ζ = 1 from noise lands below the
degraded input it started from), and an untuned baseline makes Flash look good for the
wrong reason. So Flash (its solver's grid × noise correction c) and the baseline (its
solver's grid, on the full schedule or on a short one for the equal-NFE comparison) are
tuned the same way, on the same crops, by mean PSNR, and the winners go into the
versioned table `pipeline/restoration/solver_settings.yaml` that jobs read.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from pipeline.corpus.crops import load_corpus_export
from pipeline.execution.config import schedule_sets
from pipeline.execution.crop_restore import NOISE, degraded_samples, mean_of, restore_family

VALIDATION_EVERY = 7   # every 7th training crop in export order (crops of all training photos)


def validation_crops(train_url: str, n: int, size: int = 64) -> torch.Tensor:
    """n clean crops in [0,1] from the training corpus, spread over its photos."""
    arr, _, _ = load_corpus_export(train_url)
    pool = np.arange(0, len(arr), VALIDATION_EVERY)
    pick = pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]
    x = torch.from_numpy(arr[pick]).permute(0, 3, 1, 2).float().div(255.0)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)
    return x


def score(base_sets: list[str], family: str, samples: list, flash: bool, settings: dict, batch: int) -> dict:
    """Mean PSNR / NFE / seconds of one setting on the samples (untuned built-ins underneath)."""
    sets = base_sets + ["solver.settings=null", f"flash.enabled={str(flash).lower()}"]
    sets += [f"solver.params.{k}={v}" for k, v in settings.items() if k != "noise_correction"]
    if "noise_correction" in settings:
        sets.append(f"flash.noise_correction={settings['noise_correction']}")
    rows, seconds = restore_family(sets, family, samples, batch)
    return {**settings, "psnr": mean_of(rows, "psnr"), "ssim": mean_of(rows, "ssim"), "nfe": mean_of(rows, "nfe"),
            "input_psnr": mean_of(rows, "psnr_input"), "seconds": seconds, "n": len(rows)}


def grid(spec: dict[str, list]) -> list[dict]:
    names = sorted(spec)
    return [dict(zip(names, vals)) for vals in itertools.product(*(spec[n] for n in names))]


def tune(base_sets: list[str], solver: str, family: str, x01: torch.Tensor, flash_grid: dict, baseline_grid: dict,
         baseline_crops: int, batch: int, seed: int = 0, params: dict | None = None, baseline_steps: int | None = None,
         progress=None, noise: float = NOISE) -> dict:
    """{'flash': {best, trials}, 'baseline' | 'equal_nfe': {best, trials}} by mean PSNR; t ~ linspace(0,1,n),
    measurement noise `noise` (the encoders' training level unless the archive is known to differ).

    `params` are the operator overrides the family's severity encoder was trained with. With
    `baseline_steps` the baseline runs from noise on a schedule that long (the solver's own
    sampler) and its winner is the 'equal_nfe' entry: ζ tuned for 1000 steps overshoots on 60."""
    samples = degraded_samples(family, x01, np.linspace(0.0, 1.0, len(x01)), params or {}, seed, f"tune-{family}",
                               noise)
    base_idx = np.linspace(0, len(samples) - 1, min(baseline_crops, len(samples))).round().astype(int)
    base_samples = [samples[i] for i in sorted(set(base_idx))]
    base_mode, base_extra = ("equal_nfe", schedule_sets(solver, baseline_steps)) if baseline_steps else ("baseline", [])
    out = {}
    for mode, spec, chosen, extra in (("flash", flash_grid, samples, []),
                                      (base_mode, baseline_grid, base_samples, base_extra)):
        if not chosen or not spec:
            continue
        trials = []
        for settings in grid(spec):
            trials.append(score(base_sets + [f"solver.name={solver}"] + extra, family, chosen, mode == "flash",
                                settings, batch))
            if progress:
                progress(mode, trials[-1])
        best = max(trials, key=lambda r: -np.inf if r["psnr"] is None else r["psnr"])
        out[mode] = {"best": best, "trials": trials, "crops": len(chosen),
                     **({"steps": baseline_steps} if mode == "equal_nfe" else {})}
    return out


def write_table(path: Path, solver: str, family: str, result: dict, note: str, noise: float = NOISE) -> dict:
    """Merge the winners into the settings table (version + 1) and return it. Each entry's score
    records the noise σ it was tuned at: `tuned_on` describes the latest run only."""
    table = yaml.safe_load(path.read_text()) if path.exists() else {}
    table = table or {}
    settings = table.get("settings") or {}
    entry = settings.setdefault(solver, {}).setdefault(family, {})
    for mode, res in result.items():
        best = res["best"]
        new = {"params": {k: best[k] for k in best if k not in ("noise_correction", "psnr", "ssim", "nfe",
                                                                  "input_psnr", "seconds", "n")},
               "score": {"psnr": round(best["psnr"], 3), "nfe": round(best["nfe"], 1), "crops": res["crops"],
                         "noise": noise}}
        if "noise_correction" in best:
            new["noise_correction"] = best["noise_correction"]
        if "steps" in res:
            new["steps"] = res["steps"]
        entry[mode] = new
    table = {"version": int(table.get("version", 0)) + 1, "tuned_on": note, "settings": settings}
    dump_table(path, table)
    return table


def dump_table(path: Path, table: dict) -> None:
    path.write_text("# Tuned solver settings, read by jobs whose solver.settings names this table (the shipped one:\n"
                    "# tuned, the default). Written by `flash-restore tune`; its --doc report has every trial.\n"
                    + yaml.safe_dump(table, sort_keys=True))
