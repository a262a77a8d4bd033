"""`bench any-size`: whole photos at their own size, side by side in one run.

On the dev photos (data/photos/dev_photos.txt, scaled so the short side is `short` px),
degraded in process with noise 0.05 by
  * `varying`: `varying_blur` with severity 0 at the left corners and 1 at the right ones;
  * `uniform`: `gaussian_blur` at t = 0.5,
each arm restores every photo through the jobs' own `Restorer` and reports mean PSNR, SSIM,
the gain over the input, the largest per-channel mean error (a colour cast) against the input's,
the seam score (`pipeline.quality.seams`, photos with short side ≥ 128), tile-steps per
megapixel against the tiles of a non-overlapping cut, and on `varying` the PSNR of the least
(left third) and most (right third) damaged regions. Arms: starts region | image | image-max
(default tiling), tiling shifted, 50 % overlap and the denoiser untiled on the whole latent (mode
image), the autoencoder and encoders
with the whole photo's GroupNorm statistics instead of blended windows, and the user's workaround:
independent 64-px crops, each restored on its own (as Flash on a crop) and stitched.
Then seconds per megapixel at two areas (4×), on a fixed start so only the area changes.
"""
from __future__ import annotations

import io
import time
from typing import Callable

import numpy as np
import torch
from PIL import Image

from pipeline.corpus.photos import read_photo_list, resolve_photo
from pipeline.execution.restorer import build_restorer, prepare_samples
from pipeline.io.samples import Sample
from pipeline.operators import OPERATORS, build_operator, measure
from pipeline.quality import metrics
from pipeline.quality.seams import seam_score
from pipeline.sampling.seeding import DEGRADATION, generators
from pipeline.sampling.tiles import cut_tiles, spread_axis

from .job_config import build_config

NOISE = 0.05
SEAM_MIN_SIDE = 128
DEGRADATIONS = {"varying": ("varying_blur", {"severity_corners": [0.0, 1.0, 0.0, 1.0]}),
                "uniform": ("gaussian_blur", {})}
ARMS = {   # name: (degradation, config overrides); None: stitched 64-px crops
    "region": ("varying", ["flash.starts=region"]),
    "image": ("varying", ["flash.starts=image"]),
    "image-max": ("varying", ["flash.starts=image-max"]),
    "shifted tiles": ("varying", ["flash.starts=image", "flash.tiling=shifted"]),
    "50 % overlap": ("varying", ["flash.starts=image", "flash.tile_overlap=8"]),
    "untiled denoiser": ("varying", ["flash.starts=image", "flash.tiling=whole"]),
    "whole-image statistics": ("varying", ["flash.starts=region", "flash.statistics=whole"]),
    "64-px crops stitched": ("varying", None),
    "uniform · region": ("uniform", ["flash.starts=region"]),
    "uniform · image": ("uniform", ["flash.starts=image"]),
}


def dev_photos(short: int, count: int) -> list[tuple[str, torch.Tensor]]:
    """(slug, clean (3,H,W) in [0,1]) of the first `count` dev photos, short side scaled to `short`."""
    out = []
    for i, entry in enumerate(read_photo_list("dev")[:count]):
        im = Image.open(resolve_photo(entry)).convert("RGB")
        s = short / min(im.size)
        im = im.resize((max(1, round(im.size[0] * s)), max(1, round(im.size[1] * s))), Image.LANCZOS)
        out.append((f"photo{i}", torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255))
    return out


def degraded(photos, degradation: str, seed: int = 0) -> list[Sample]:
    family, extra = DEGRADATIONS[degradation]
    samples = []
    for i, (key, x) in enumerate(photos):
        params = OPERATORS[family].params_for(0.5, NOISE, 1000 + i, **extra)
        y = measure(build_operator([params], [key]), x[None], generators(seed, [key], DEGRADATION))
        y = (y.clamp(0, 1) * 255).round() / 255
        samples.append(Sample(key, "bench", y[0], x, params, ""))
    return samples


def _png(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1).float() / 255


def restore(cfg, samples: list[Sample]) -> list[tuple[dict, torch.Tensor]]:
    """(row, restored (3,H,W)) per sample, one photo per solve, through the jobs' Restorer."""
    r = build_restorer(cfg)
    out = []
    for e in r.estimate(prepare_samples(cfg, samples)):
        row, png, _ = r.solve([e])[0]
        if row["status"] != "ok":
            raise RuntimeError(f"{row['key']}: {row['error']}")
        out.append((row, _png(png)))
    return out


def crop_corners(corners: list[float], h: int, w: int, top: int, left: int, side: int) -> list[float]:
    """A crop's own severity corners: the photo's bilinear field at the crop's corner pixels."""
    tl, tr, bl, br = corners

    def at(r, c):
        v, u = r / max(h - 1, 1), c / max(w - 1, 1)
        return (1 - v) * ((1 - u) * tl + u * tr) + v * ((1 - u) * bl + u * br)
    b, r = top + side - 1, left + side - 1
    return [at(top, left), at(top, r), at(b, left), at(b, r)]


def restore_stitched(cfg, samples: list[Sample], side: int) -> list[tuple[dict, torch.Tensor]]:
    """The workaround: every photo cut into side-px crops (last ones edge-aligned), each crop's
    measurement restored on its own as a native sample, pasted back in order."""
    out = []
    for s in samples:
        h, w = s.image01.shape[-2:]
        ys, xs = spread_axis(h, side, 0).origins, spread_axis(w, side, 0).origins
        crops = []
        for i, top in enumerate(ys):
            for j, left in enumerate(xs):
                params = dict(s.params)
                if "severity_corners" in params:
                    params["severity_corners"] = crop_corners(params["severity_corners"], h, w, top, left, side)
                    params["severity"] = float(np.mean(params["severity_corners"]))
                crops.append(Sample(f"{s.key}-{i:02d}-{j:02d}", "bench", s.image01[:, top:top + side, left:left + side],
                                    s.clean01[:, top:top + side, left:left + side], params, ""))
        canvas, steps = torch.zeros(3, h, w), 0
        for (row, x), c in zip(restore(cfg, crops), crops):
            _, i, j = c.key.rsplit("-", 2)
            top, left = ys[int(i)], xs[int(j)]
            canvas[:, top:top + side, left:left + side] = x
            steps += row["nfe"]
        out.append(({"key": s.key, "tile_steps": steps, "tiles": len(crops)}, canvas))
    return out


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(10 * torch.log10(1.0 / (x - ref).pow(2).mean().clamp_min(1e-12)))


def score(results, samples: list[Sample], seconds: float) -> dict:
    """The arm's means over photos."""
    acc: dict[str, list] = {k: [] for k in ("psnr", "psnr_in", "ssim", "cast", "cast_in", "seam", "left", "right",
                                            "steps_mp", "cut_mp", "tiles")}
    for (row, x), s in zip(results, samples):
        clean, y = s.clean01, s.image01
        h, w = clean.shape[-2:]
        mp = h * w / 1e6
        acc["psnr"].append(_psnr(x, clean))
        acc["psnr_in"].append(_psnr(y, clean))
        acc["ssim"].append(float(metrics.ssim(x[None], clean[None])[0]))
        acc["cast"].append(float((x - clean).mean(dim=(1, 2)).abs().max()))
        acc["cast_in"].append(float((y - clean).mean(dim=(1, 2)).abs().max()))
        if min(h, w) >= SEAM_MIN_SIDE:
            acc["seam"].append(seam_score(x.permute(1, 2, 0).numpy(), clean.permute(1, 2, 0).numpy()))
        third = w // 3
        acc["left"].append(_psnr(x[..., :third], clean[..., :third]))
        acc["right"].append(_psnr(x[..., w - third:], clean[..., w - third:]))
        acc["steps_mp"].append(row["tile_steps"] / mp)
        acc["cut_mp"].append(cut_tiles(-(-h // 4), -(-w // 4), 16) / mp)
        acc["tiles"].append(row["tiles"])
    out = {k: (float(np.mean(v)) if v else None) for k, v in acc.items()}
    out["seconds"] = seconds
    out["megapixels"] = sum(s.clean01.shape[-1] * s.clean01.shape[-2] for s in samples) / 1e6
    return out


def speed(photos, short: int, start_step: int, sets: list[str]) -> list[dict]:
    """Seconds per megapixel at the short side `short` and 2·`short` (4× the area), fixed start."""
    cfg = build_config(None, None, False, 1, None, None, "local", None,
                       [f"flash.start_step={start_step}", *sets])
    out = []
    for side in (short, 2 * short):
        key, x = photos[0]
        scaled = dev_photos(side, 1)
        samples = degraded(scaled, "uniform")
        restore(cfg, samples)   # warm-up: model loading and first calls
        t0 = time.perf_counter()
        restore(cfg, samples)
        dt = time.perf_counter() - t0
        h, w = scaled[0][1].shape[-2:]
        out.append({"size": f"{h}×{w}", "megapixels": h * w / 1e6, "seconds": dt, "s_per_mp": dt / (h * w / 1e6)})
    return out


def run_arms(short: int, count: int, arms: list[str], sets: list[str], speed_start: int,
            log: Callable[[str], None] = print) -> dict:
    photos = dev_photos(short, count)
    samples = {d: degraded(photos, d) for d in DEGRADATIONS}
    results = {}
    for name in arms:
        degradation, overrides = ARMS[name]
        t0 = time.perf_counter()
        if overrides is None:
            cfg = build_config(None, None, False, 16, None, None, "local", None, sets)
            res = restore_stitched(cfg, samples[degradation], 16 * 4)
        else:
            cfg = build_config(None, None, False, 1, None, None, "local", None, [*overrides, *sets])
            res = restore(cfg, samples[degradation])
        results[name] = score(res, samples[degradation], time.perf_counter() - t0)
        log(f"{name}: {results[name]}")
    sizes = [f"{x.shape[-2]}×{x.shape[-1]}" for _, x in photos]
    return {"arms": results, "sizes": sizes, "speed": speed(photos, short, speed_start, sets) if speed_start >= 0
            else []}


def _f(v, fmt="{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


def table_rows(result: dict) -> list[list[str]]:
    rows = []
    for name, a in result["arms"].items():
        rows.append([name, _f(a["psnr"]), _f(a["psnr"] - a["psnr_in"], "{:+.2f}"), _f(a["ssim"], "{:.3f}"),
                     f"{a['cast']:.4f} / {a['cast_in']:.4f}", _f(a["seam"]), _f(a["left"]), _f(a["right"]),
                     f"{a['steps_mp']:.0f}", f"{a['steps_mp'] / a['cut_mp']:.1f}", f"{a['seconds']:.0f}"])
    return rows


COLUMNS = ("arm", "PSNR", "Δ input", "SSIM", "colour cast / input's", "seam", "PSNR left ⅓", "PSNR right ⅓",
           "tile-steps/MP", "tile-steps/MP ÷ cut tiles/MP", "s")


def section(result: dict, command: str) -> list[str]:
    lines = [f"Measured with `{command}` on this machine's CPU, every arm in one run, the shipped models, the "
             f"dev photos at {', '.join(result['sizes'])} (short side scaled), noise 0.05. `varying`: "
             "`varying_blur` from severity 0 (left) to 1 (right); `uniform`: `gaussian_blur` t = 0.5. Colour cast: "
             "the largest per-channel mean error. Seam: `pipeline.quality.seams` (photos with short side ≥ "
             f"{SEAM_MIN_SIDE}). The last ratio divides tile-steps by the tiles of a non-overlapping cut of the "
             "latent (what one step of a cut costs): the loop length and the tiling's overhead together.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(result)]
    if result["speed"]:
        a, b = result["speed"]
        lines += ["", "Time against area (first dev photo, fixed start, `uniform`):", "",
                  "| size | MP | s | s/MP |", "|---|---|---|---|"]
        lines += [f"| {s['size']} | {s['megapixels']:.3f} | {s['seconds']:.1f} | {s['s_per_mp']:.0f} |"
                  for s in result["speed"]]
        lines += ["", f"{b['megapixels'] / a['megapixels']:.2f}× the area took {b['seconds'] / a['seconds']:.2f}× "
                  "the time."]
    return lines
