"""Pure helpers for `report-models`: PNG figures and model-card sections (the statistics they
quote live in `pipeline.quality.statistics`).

Why here and not in the command: they need no model, so they are unit-tested on exact
inputs. The scatter plot is matplotlib (imported only when a plot is drawn); contact sheets
are plain PIL image tiling.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from pipeline.io import doc_sections

SECTION = "## Measured figures"


# ------------------------------------------------------------------ figures

def to_uint8(images01: torch.Tensor) -> np.ndarray:
    """(B,3,H,W) in [0,1] → (B,H,W,3) uint8."""
    x = images01.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def contact_sheet(images01: torch.Tensor, cols: int = 8, pad: int = 2, scale: int = 1) -> Image.Image:
    """A grid of images (row-major) on a white background; `scale` enlarges each tile."""
    arr = to_uint8(images01)
    n, h, w = arr.shape[0], arr.shape[1] * scale, arr.shape[2] * scale
    rows = max(1, math.ceil(n / cols))
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + pad) + pad), "white")
    for i in range(n):
        tile = Image.fromarray(arr[i])
        if scale != 1:
            tile = tile.resize((w, h), Image.Resampling.NEAREST)
        sheet.paste(tile, (pad + (i % cols) * (w + pad), pad + (i // cols) * (h + pad)))
    return sheet


def scatter_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, xlabel: str,
                 ylabel: str, size: tuple[int, int] = (720, 560), identity: bool = True) -> Image.Image:
    """A matplotlib scatter plot of named (x, y) series on shared axes from 0, with y = x dashed."""
    # lazy: matplotlib loads only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib loads only when a plot is drawn
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    finite = [(float(x), float(y)) for xs, ys in series.values() for x, y in zip(xs, ys)
              if math.isfinite(float(x)) and math.isfinite(float(y))]
    vmax = max([v for pair in finite for v in pair], default=1.0) * 1.05 or 1.0
    for name, (xs, ys) in series.items():
        ax.scatter(xs, ys, s=10, alpha=0.6, label=name)
    if identity:
        ax.plot([0, vmax], [0, vmax], "--", color="grey", linewidth=1, label="y = x")
    ax.set(xlim=(0, vmax), ylim=(0, vmax), title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


# ------------------------------------------------------------------ markdown

def replace_section(text: str, body: str, heading: str = SECTION) -> str:
    """`text` with the `heading` section (a model card's measured figures) set to `body`."""
    return doc_sections.replace_section(text, body, heading)


def fmt(value, digits: int = 4) -> str:
    """A figure for a table: numbers to `digits` significant digits, missing as 'missing: why'."""
    if isinstance(value, dict) and "missing" in value:
        return f"missing: {value['missing']}"
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def md_table(rows: list[tuple[str, object, str]]) -> str:
    """A three-column markdown table: figure | value | how it was measured."""
    out = ["| figure | value | how |", "|---|---|---|"]
    out += [f"| {name} | {fmt(v)} | {how} |" for name, v, how in rows]
    return "\n".join(out)


# ------------------------------------------------------------------ report documents

HOW = {
    "autoencoder.psnr_db": "mean PSNR of D0(E0(x)) vs x, dev crops",
    "ordering_accuracy": "10 severities linspace(0,1,10), one operator seed per crop, noise 0.05; matching pairs of 45, mean over crops",
    "spearman": "ρ(σ̂², t) pooled over crops × severities",
    "calibration_pearson": "Pearson(σ̂², unbiased var(ẑ − z0)) per image",
}


def figure_rows(fig: dict) -> list[tuple[str, object, str]]:
    """Flatten the figures dict into table rows (name, value, how)."""
    rows = []
    ae = fig.get("autoencoder")
    if ae is not None:
        rows.append(("autoencoder PSNR (dB)", ae.get("psnr_db", ae), f"{HOW['autoencoder.psnr_db']} "
                     f"({ae.get('crops')} crops, {ae.get('size')} px)" if "crops" in ae else ""))
    for fam, s in (fig.get("severity") or {}).items():
        if "missing" in s:
            rows.append((f"severity {fam}", s, ""))
            continue
        n = f"({s['crops']} crops)"
        how = HOW["ordering_accuracy"].replace("noise 0.05", f"noise {s.get('noise_sigma', 0.05):g}")
        rows += [(f"severity {fam}: ordering accuracy", s["ordering_accuracy"], f"{how} {n}"),
                 (f"severity {fam}: Spearman", s["spearman"], HOW["spearman"]),
                 (f"severity {fam}: Pearson", s["pearson"], "ρ(σ̂², t) pooled"),
                 (f"severity {fam}: calibration Pearson", s["calibration_pearson"], HOW["calibration_pearson"]),
                 (f"severity {fam}: σ̂² mean (min–max)",
                  f"{s['sigma2_mean']:.4g} ({s['sigma2_min']:.4g}–{s['sigma2_max']:.4g})", "over the sweep"),
                 (f"severity {fam}: realised var mean", s["realised_var_mean"], "var(ẑ − z0) per image, mean"),
                 *([(f"severity {fam}: realised error's own ordering / Spearman",
                     f"{s['realised_ordering_accuracy']:.4g} / {s['realised_spearman']:.4g}",
                     "var(ẑ − z0) in place of σ̂²: what a perfect error predictor scores")]
                   if "realised_spearman" in s else []),
                 (f"severity {fam}: start step mean (min–max)",
                  f"{s['start_step_mean']:.1f} ({s['start_step_min']}–{s['start_step_max']})", "DDPM grid, §3.2")]
    for fam, e in (fig.get("estimator") or {}).items():
        if "missing" in e:
            rows.append((f"estimator {fam}", e, ""))
            continue
        how = f"one severity per crop, evenly over [0,1], noise {e['noise_sigma']}, 8-bit ({e['crops']} crops)"
        rows += [(f"estimator {fam}: Spearman ρ(t̂, t)", e["spearman"], how),
                 (f"estimator {fam}: mean abs(t̂ − t) / mean own std", f"{e['mean_abs_error']:.4g} / {e['mean_std']:.4g}",
                  "t on [0,1]"),
                 (f"estimator {fam}: true t within t̂ ± 2 std", e["within_2std"], "fraction of crops"),
                 (f"estimator {fam}: cost", f"{e['ms_per_crop']:.2f} ms per 64-px crop, {e['parameters']} parameters",
                  "batch of 64 on this machine")]
    ldm = fig.get("ldm")
    if ldm is not None:
        if "missing" in ldm:
            rows.append(("LDM", ldm, ""))
        else:
            rows += [(f"LDM FID ({ldm['fid_samples']} samples)", ldm["fid"],
                      f"vs {ldm['fid_real']} dev crops; sampler {ldm['sampler']}")]
            if "kid" in ldm:
                rows += [(f"LDM KID ({ldm['fid_samples']} samples)", f"{ldm['kid']:.4f} ± {ldm['kid_std']:.4f}",
                          "same Inception features; mean ± std over 100 subsets"),
                         (f"real-photo floor: FID / KID of {ldm['floor_n']} training crops",
                          f"{ldm['floor_fid']:.1f} / {ldm['floor_kid']:.4f}",
                          "other photos than dev, scored like the samples: what real images get at this n")]
            rows.append(("LDM sample sheet", f"![samples]({ldm['sheet']})", "64 unconditional samples"))
    for label, st in (fig.get("step") or {}).items():
        rows.append((f"Latent-DPS step, batch {st.get('batch', '?')} ({label}) (s)", st.get("seconds", st),
                     f"median of {st.get('repeats')} after a warm-up" if "seconds" in st else ""))
    e2e = fig.get("e2e")
    if e2e is not None:
        if "missing" in e2e:
            rows.append(("end-to-end", e2e, ""))
        else:
            rows += [(f"Flash(Latent-DPS) mean NFE ({e2e['crops']} crops)", e2e["flash_mean_nfe"],
                      f"Gaussian blur {e2e['severities']}"),
                     ("Flash(Latent-DPS) PSNR (dB)", e2e["flash_psnr_db"], f"ζ = {e2e['step_size']}"),
                     ("degraded input PSNR (dB)", e2e["input_psnr_db"], "same crops"),
                     *([("Flash − input PSNR (dB), 95 % CI",
                         f"{g['mean']:+.2f} [{g['lo']:+.2f}, {g['hi']:+.2f}]", f"bootstrap over {g['n']} crops")]
                       if (g := e2e.get("flash_gain_db")) else []),
                     ("colour shift Flash / input", f"{e2e.get('flash_colour_shift', float('nan')):.4f} / "
                      f"{e2e.get('input_colour_shift', float('nan')):.4f}", "max over RGB of |mean error|, [0,1]"),
                     (f"baseline Latent-DPS NFE ({e2e['baseline_crops']} crops)", e2e["baseline_mean_nfe"],
                      "full DDPM schedule from noise"),
                     ("baseline Latent-DPS PSNR (dB)", e2e["baseline_psnr_db"], "baseline crops only"),
                     ("Flash PSNR on the baseline crops (dB)", e2e["flash_psnr_on_baseline_crops_db"],
                      "same crops as the baseline"),
                     ("wall time Flash / baseline (s)", f"{e2e['flash_seconds']:.1f} / {e2e['baseline_seconds']:.1f}",
                      "in-process Restorer")]
    return rows


DOC_SECTIONS = ("## Models", "## Figures", "## Severity calibration")


def write_docs(report: dict, doc: Path) -> None:
    """docs/models.md: how it was made, the models, one table of all figures, the calibration plot. Sections
    of the existing file other than these (written by hand or by another measurement) are kept after them."""
    kept = doc_sections.sections_except(doc.read_text(), DOC_SECTIONS) if doc.exists() else []
    fig = report["figures"]
    lines = ["# Trained models: measured figures", "",
             f"Written by `report-models` on {report['date']} on {report['machine']} (device `{report['device']}`).",
             "Why the models are built as they are, and the experiments behind them: "
             "[model-design.md](model-design.md).", "", "Commands (the last one wrote this file; `--only` runs redo single sections):", "", "```",
             *report.get("commands", [report["command"]]), "```", "", "## Models", "",
             "| model | path | fingerprint | training steps |", "|---|---|---|---|"]
    for name, m in report["models"].items():
        lines.append(f"| {name} | `{m.get('path')}` | {m.get('fingerprint', m.get('missing', ''))} | "
                     f"{m.get('training_steps', '')} |")
    lines += ["", "## Figures", "", md_table(figure_rows(fig)), ""]
    if (doc.parent / "severity_calibration.png").exists() and fig.get("severity"):
        lines += ["## Severity calibration", "", "σ̂² against the realised latent error variance (unbiased "
                  "variance of ẑ − z0 per image); dashed: y = x.", "", "![calibration](severity_calibration.png)", ""]
    doc.write_text("\n".join(lines + kept))


def update_cards(models: Path, report: dict, families: Sequence[str], figures_dir: Path) -> list[str]:
    """Replace the '## Measured figures' section of each model's card with its own figures; the sample
    sheet is linked where this report wrote it (`figures_dir`), not where the shipped report keeps its own."""
    fig = report["figures"]
    sev = fig.get("severity") or {}
    own = {"autoencoder": {"autoencoder": fig.get("autoencoder")},
           "ldm": {k: fig.get(k) for k in ("ldm", "step", "e2e")}}
    own.update({f"severity-{f}": {"severity": {f: sev[f]} if f in sev else None} for f in families})
    own.update({f"estimator-{f}": {"estimator": {f: e}} for f, e in (fig.get("estimator") or {}).items()})
    written = []
    for name, sub in own.items():
        card = models / name / "MODEL_CARD.md"
        sub = {k: v for k, v in sub.items() if v is not None}
        if not card.parent.is_dir() or not sub:
            continue
        text = card.read_text() if card.exists() else f"# flash-restore {name} model\n"
        sheet = os.path.relpath(Path(figures_dir).resolve() / "ldm_samples.png", card.parent.resolve())
        body = (f"Measured by `report-models` on {report['date']} ({report['machine']}):\n\n"
                + md_table(figure_rows(sub)).replace("](ldm_samples.png)", f"]({sheet})"))
        card.write_text(replace_section(text, body))
        written.append(str(card))
    return written
