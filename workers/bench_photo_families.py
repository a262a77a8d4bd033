"""`bench photo-families`: JPEG and super-resolution on whole dev photos at their own size.

Issue 28 asks both to work at any size: each dev photo (short side `short`) is degraded as an
archive holds it (libjpeg's file at quality 10; the bicubic small copy for ×2 and ×4), read back
as a job reads it and restored with Flash through the whole-photo path (tiles, blended windows,
whole-photo guidance). The input row is the decoded JPEG, or bicubic upsampling of the copy.
`big` adds the issue's example: a 300×200 copy restored to 1200×800.
"""
from __future__ import annotations

import time
from typing import Callable

import torch.nn.functional as F

from pipeline.execution.crop_restore import degraded_samples, mean_of, restore_family

from .bench_any_size import dev_photos

CASES = {"jpeg q10": ("jpeg", 40 / 45, {"quality": 10}, 0.0),
         "super-resolution ×4": ("downsample", 1.0, {}, 0.05),
         "super-resolution ×2": ("downsample", 0.5, {}, 0.05)}


def run(sets: list[str], photos: int, short: int, big: bool, seed: int = 0,
        log: Callable[[str], None] = print) -> dict:
    clean = dev_photos(short, photos)
    out = {}
    for name, (family, t, params, noise) in CASES.items():
        samples = [s for i, (slug, x) in enumerate(clean)
                   for s in degraded_samples(family, x[None], [t], params, seed, f"{slug}", noise)]
        log(f"bench photo-families: {name} on {len(samples)} photos")
        rows, seconds = restore_family(sets, family, samples, 1)
        out[name] = {"n": len(rows), "ok": sum(r["status"] == "ok" for r in rows), "psnr": mean_of(rows, "psnr"),
                     "psnr_input": mean_of(rows, "psnr_input"), "blocking": mean_of(rows, "blocking"),
                     "blocking_input": mean_of(rows, "blocking_input"), "nfe": mean_of(rows, "nfe"),
                     "sizes": sorted({(r["height"], r["width"]) for r in rows if r["status"] == "ok"}),
                     "small": sorted({tuple(s.image01.shape[-2:]) for s in samples}), "seconds": seconds}
    if big:
        slug, x = dev_photos(800, 1)[0]
        x = F.interpolate(x[None], size=(800, 1200), mode="bilinear", antialias=True, align_corners=False)[0]
        samples = degraded_samples("downsample", x.clamp(0, 1)[None], [1.0], {}, seed, f"{slug}-big", 0.05)
        log("bench photo-families: one 300×200 copy to 1200×800")
        rows, seconds = restore_family(sets, "downsample", samples, 1)
        out["300×200 → 1200×800 (×4)"] = {"n": 1, "ok": sum(r["status"] == "ok" for r in rows),
                                          "psnr": mean_of(rows, "psnr"), "psnr_input": mean_of(rows, "psnr_input"),
                                          "blocking": None, "blocking_input": None, "nfe": mean_of(rows, "nfe"),
                                          "sizes": [(r["height"], r["width"]) for r in rows],
                                          "small": [tuple(s.image01.shape[-2:]) for s in samples], "seconds": seconds}
    return out


def table_rows(r: dict) -> list[tuple[str, ...]]:
    def f(v, fmt="{:.2f}"):
        return "–" if v is None else fmt.format(v)
    rows = []
    for name, v in r.items():
        gain = None if v["psnr"] is None or v["psnr_input"] is None else v["psnr"] - v["psnr_input"]
        rows.append((name, f"{v['ok']}/{v['n']}", f"{v['small'][0][1]}×{v['small'][0][0]} → "
                                                    f"{v['sizes'][0][1]}×{v['sizes'][0][0]}" if v["sizes"] else "–",
                     f(v["psnr_input"]), f(v["psnr"]), f(gain, "{:+.2f}"),
                     f"{f(v['blocking_input'], '{:.3f}')} → {f(v['blocking'], '{:.3f}')}", f(v["nfe"], "{:.0f}"),
                     f(v["seconds"], "{:.0f}")))
    return rows


COLUMNS = ("case", "ok", "input → restored size (first)", "PSNR input (dB)", "PSNR Flash (dB)", "gain (dB)",
           "blocking r input → Flash", "mean NFE", "wall s")


def section(r: dict, command: str) -> list[str]:
    lines = [f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: whole dev photos degraded as an "
             "archive holds them (libjpeg's .jpg at quality 10; the bicubic small copy plus noise 0.05), read "
             "back as a job reads them and restored by Flash (`ldps`, tuned) through the whole-photo path. "
             "Input: the decoded JPEG, or bicubic upsampling of the copy. Targets (issue 28): +1 dB, and for JPEG "
             "r − 1 at most half the input's.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(r)]
    return lines + ["", f"Command: `{command}`."]
