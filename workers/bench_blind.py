"""`bench blind`: the same degraded images restored with their true parameters and blind.

Issue 28's check for Gaussian blur: dev crops (and whole dev photos) blurred at severities spread
over [0, 1] with noise 0.05, restored once with their json (true width and noise) and once as an
archive without one (`input.operator: {operator: gaussian_blur}`, `input.noise: estimate`): the
width comes from the trained estimator, the noise from the image. Reports the mean PSNR of both
and the paired difference (target: blind within 0.5 dB of true), Spearman ρ of the estimated
width against the true one (target ≥ 0.9), and what the estimate cost per image. With `--varying N`,
N whole dev photos under a `varying_blur` of random corners are compared the same way: blind, their
corners come from `estimate_corners`, and ρ and the error are taken over the corners.
"""
from __future__ import annotations

import dataclasses
import json
import time
from typing import Callable

import numpy as np

from pipeline.execution.config import load_config
from pipeline.execution.crop_restore import degraded_samples, restore_family
from pipeline.model_report.measurements import load_eval_crops, resolve_photos, spread
from pipeline.quality.statistics import paired_mean_ci, spearman

from .bench_any_size import dev_photos

FAMILY = "gaussian_blur"
NOISE = 0.05
PSNR_GAP = 0.5
SPEARMAN = 0.9


def severities(params: dict) -> list[float]:
    """What the estimator reads: a varying blur's four corners, else the severity."""
    return list(params.get("severity_corners") or [params["severity"]])


def compare(sets: list[str], samples: list, batch: int, family: str = FAMILY) -> dict:
    """True-parameter and blind rows of the same samples, and what the blind estimate got right."""
    if family != FAMILY:   # the shipped Gaussian-blur encoder serves a varying blur (docs/models.md)
        sets = sets + [f"models.severity.{family}=" + load_config(None, sets).models.severity[FAMILY]]
    true_rows, true_s = restore_family(sets, family, samples, batch)
    blind = [dataclasses.replace(s, params=None) for s in samples]
    blind_rows, blind_s = restore_family(sets + [f"input.operator={{operator: {family}}}", "input.noise=estimate"],
                                         family, blind, batch)
    truth = {s.key: s.params for s in samples}
    est = {r["key"]: json.loads(r["estimated"]) for r in blind_rows if r["status"] == "ok"}
    keys = [r["key"] for r in true_rows if r["status"] == "ok" and r["key"] in est]
    psnr_true = {r["key"]: r["psnr"] for r in true_rows}
    psnr_blind = {r["key"]: r["psnr"] for r in blind_rows}
    ci = paired_mean_ci([psnr_blind[k] for k in keys], [psnr_true[k] for k in keys]) if len(keys) > 1 else \
        {"mean": psnr_blind[keys[0]] - psnr_true[keys[0]], "lo": float("nan"), "hi": float("nan")}
    t_true = np.array([t for k in keys for t in severities(truth[k])])
    t_est = np.array([t for k in keys for t in severities(est[k])])
    noise = np.array([est[k]["noise_sigma"] for k in keys])
    return {"n": len(samples), "ok": len(keys), "psnr_true": float(np.mean([psnr_true[k] for k in keys])),
            "psnr_blind": float(np.mean([psnr_blind[k] for k in keys])),
            "psnr_input": float(np.mean([r["psnr_input"] for r in true_rows if r["key"] in est])),
            "diff": ci["mean"], "diff_ci": (ci["lo"], ci["hi"]),
            "spearman": spearman(t_est, t_true) if len(t_true) > 2 else float("nan"),
            "abs_t_error": float(np.abs(t_est - t_true).mean()),
            "std_px_error": float(np.abs(2.7 * (t_est - t_true)).mean()),
            "noise_median": float(np.median(noise)), "noise_p10_p90": tuple(np.percentile(noise, [10, 90]).tolist()),
            "nfe_true": float(np.mean([r["nfe"] for r in true_rows])),
            "nfe_blind": float(np.mean([r["nfe"] for r in blind_rows if r["status"] == "ok"])),
            "seconds_true": true_s, "seconds_blind": blind_s}


def run(sets: list[str], crops: int, photos: int, short: int, batch: int, seed: int = 0,
        log: Callable[[str], None] = print, varying: int = 0) -> dict:
    out = {}
    x = load_eval_crops(resolve_photos("dev"), 64)
    x = x[spread(len(x), crops)]
    ts = np.linspace(0.0, 1.0, len(x))
    ts = ts[np.random.default_rng(seed).permutation(len(ts))]   # severities not tied to the photo order
    log(f"bench blind: {len(x)} dev crops, true parameters then blind")
    out["crops"] = compare(sets, degraded_samples(FAMILY, x, ts, {}, seed, "blind-crop", NOISE), batch)
    if photos:
        samples = []
        for i, (slug, img) in enumerate(dev_photos(short, photos)):
            t = (i + 0.5) / photos
            samples += [dataclasses.replace(s, key=f"{slug}") for s in
                        degraded_samples(FAMILY, img[None], [t], {}, seed, f"blind-photo{i}", NOISE)]
        log(f"bench blind: {len(samples)} whole dev photos (short side {short} px)")
        out["photos"] = compare(sets, samples, 1)
    if varying:
        rng, samples = np.random.default_rng(seed), []
        for i, (slug, img) in enumerate(dev_photos(short, varying)):
            corners = [round(float(c), 6) for c in rng.uniform(0.0, 1.0, 4)]
            samples += [dataclasses.replace(s, key=f"{slug}") for s in
                        degraded_samples("varying_blur", img[None], [sum(corners) / 4], {"severity_corners": corners},
                                         seed, f"blind-varying{i}", NOISE)]
        log(f"bench blind: {len(samples)} whole dev photos with a varying blur (random corners)")
        out["varying"] = compare(sets, samples, 1, "varying_blur")
    return out


def table_rows(r: dict) -> list[tuple[str, str, str, str]]:
    """(figure, crops, photos, varying-blur photos, target) rows."""
    def both(fn):
        return [fn(r[k]) if k in r else "–" for k in ("crops", "photos", "varying")]
    rows = [("images (ok)", *both(lambda v: f"{v['n']} ({v['ok']})"), ""),
            ("PSNR input / true parameters / blind (dB)",
             *both(lambda v: f"{v['psnr_input']:.2f} / {v['psnr_true']:.2f} / {v['psnr_blind']:.2f}"), ""),
            ("blind − true, paired (95 % CI)", *both(lambda v: f"{v['diff']:+.2f} ({v['diff_ci'][0]:+.2f}, "
                                                              f"{v['diff_ci'][1]:+.2f})"),
             f"≥ −{PSNR_GAP} dB"),
            ("Spearman ρ(estimated t, true t)",
             *both(lambda v: f"{v['spearman']:.3f}" if np.isfinite(v["spearman"]) else f"– ({v['ok']} images)"),
             f"≥ {SPEARMAN}"),
            ("mean abs(t̂ − t) (blur std error, px)", *both(lambda v: f"{v['abs_t_error']:.3f} ({v['std_px_error']:.2f})"),
             ""),
            ("estimated noise σ: median (10th–90th pct.)",
             *both(lambda v: f"{v['noise_median']:.3f} ({v['noise_p10_p90'][0]:.3f}–{v['noise_p10_p90'][1]:.3f})"),
             f"true {NOISE}"),
            ("mean NFE true / blind", *both(lambda v: f"{v['nfe_true']:.1f} / {v['nfe_blind']:.1f}"), ""),
            ("wall s true / blind", *both(lambda v: f"{v['seconds_true']:.1f} / {v['seconds_blind']:.1f}"), "")]
    return rows


def section(r: dict, command: str) -> list[str]:
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: dev images blurred (Gaussian, "
             f"severities spread over [0, 1], noise {NOISE}, 8-bit), restored with their json and again with none "
             "(`--operator gaussian_blur --noise estimate`: width from `models/estimator-gaussian_blur`, noise "
             "from the image). The varying-blur column: whole dev photos under `varying_blur` with random corners (the "
             "Gaussian-blur encoder), blind corners from `estimate_corners`; its ρ and error are over the corners. "
             "Solver `ldps`, tuned settings, one process, one after the other.", "",
             "| figure | dev crops | whole dev photos | varying blur, whole dev photos | target |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(r)]
    return lines + ["", f"Command: `{command}`."]
