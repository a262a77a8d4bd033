"""The figures of docs/reproduction.md (matplotlib, Agg): adaptivity, robustness, severity,
and the degraded | baseline | Flash | D(ẑ) | clean sample grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from pipeline.reproduction.cell_store import load_png


def _save(fig: Figure, path: Path) -> str:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)
    return path.name


def adaptivity_plot(data: dict, path: Path) -> str | None:
    """PSNR against mean NFE: the fixed-start curve and Flash, overall and per severity bin."""
    if not data:
        return None
    bins = data["bins"]
    fig = Figure(figsize=(4 * (1 + len(bins)), 3.6), layout="constrained")
    panels = [("all images", data["curve"], data["flash"])] + [(f"t ∈ {b}", c, f) for b, (c, f) in bins.items()]
    for i, (title, curve, flash) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        pts = sorted((n, p) for n, p, *_ in curve if n is not None and p is not None)
        if pts:
            ax.plot(*zip(*pts), "o-", label="fixed start K")
        if flash[0] is not None and flash[1] is not None:
            ax.plot([flash[0]], [flash[1]], "r*", markersize=14, label="Flash (adaptive)")
        ax.set(xscale="log", xlabel="mean NFE", ylabel="PSNR (dB)", title=title)
        ax.xaxis.set_minor_formatter(NullFormatter())  # log minor labels collide at this width
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend()
    return _save(fig, path)


def robustness_plot(series: dict, path: Path) -> str | None:
    if len(series.get("sigma", [])) < 2:
        return None
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(series["sigma"], series["flash"], "o-", label="Flash(Latent-DPS), all images")
    ax.plot(series["sigma"], series["flash_sub"], "o--", label="Flash, the baseline's images")
    ax.plot(series["sigma"], series["baseline"], "s-", label="Latent-DPS baseline")
    ax.axvline(0.05, color="grey", linestyle=":", label="training noise")
    ax.set(xlabel="test noise σ", ylabel="PSNR (dB)", title="PSNR as the test noise moves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(1, 2, 2)
    ax.plot(series["sigma"], series["start"], "o-")
    ax.set(xlabel="test noise σ", ylabel="mean start step t̂", title="How Flash's start moves")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def severity_plot(points: dict, path: Path) -> str | None:
    if not points:
        return None
    fig = Figure(figsize=(4.2 * len(points), 3.8), layout="constrained")
    for i, (name, (x, y)) in enumerate(points.items()):
        ax = fig.add_subplot(1, len(points), i + 1)
        ax.scatter(x, y, s=14, alpha=0.7)
        fixed = name == "fixed"
        ax.set(yscale="log", xlabel="MSE of D(ẑ) (t = 1)" if fixed else "true severity t", ylabel="σ̂²",
               title="blur_fixed: σ̂² vs error" if fixed else name)
        if fixed:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    return _save(fig, path)


def sample_grid(out: Path, task: dict, columns: list[tuple[str, str]], path: Path) -> str | None:
    """Rows easy / medium / hard (by severity) of the task's grid images; columns are
    (title, cell id) with the pseudo-ids 'degraded' and 'clean' for the task's own images."""
    keys = task.get("grid", [])
    if not keys:
        return None
    picked = [keys[0], keys[len(keys) // 2], keys[-1]] if len(keys) >= 3 else keys
    labels = ["easy", "medium", "hard"] if len(picked) == 3 else [f"#{i}" for i in range(len(picked))]
    fig = Figure(figsize=(1.9 * len(columns), 2.0 * len(picked) + 0.3), layout="constrained")
    for r, key in enumerate(picked):
        for c, (title, source) in enumerate(columns):
            if source in ("degraded", "clean"):
                img = load_png(out / "tasks" / task["task"] / "images" / f"{key}.{source}.png")
            else:
                img = load_png(out / "cells" / source / "images" / f"{key}.png")
            ax = fig.add_subplot(len(picked), len(columns), r * len(columns) + c + 1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_box_aspect(1)
            if img is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(np.asarray(img.permute(1, 2, 0)), interpolation="nearest")
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{labels[r]}\nt = {task['severities'][key]:.2f}", fontsize=9)
    return _save(fig, path)
