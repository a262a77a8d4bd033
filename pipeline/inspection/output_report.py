"""Looking at a job's results: counts, histograms, compute spent, and the pictures.

Pure functions over an output folder (`OutputStore`): `summarise` gives the numbers the
`inspect` command prints, `pick_examples` the best, median and worst restorations by
measurement residual (the signal every sample has, with or without a reference), and
`preview` draws a degraded | restored | reference grid of them. Degraded and clean images come
from the input shard each row names; restored ones from the output's image parts.
"""
from __future__ import annotations

import io
import tarfile
from collections import Counter

import fsspec
import numpy as np
import pyarrow.parquet as pq
from PIL import Image
from scipy.stats import spearmanr

from pipeline.io.outputs import OutputStore
from pipeline.io.shards import iter_samples


def histogram(values: list[float], bins: int = 10) -> list[tuple[float, float, int]]:
    if not values:
        return []
    counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins)
    return [(float(edges[i]), float(edges[i + 1]), int(c)) for i, c in enumerate(counts)]


def summarise(rows: list[dict]) -> dict:
    """Counts by status and error kind, NFE and residual spreads, compute spent, and how the
    no-reference signals relate to PSNR where references exist."""
    ok = [r for r in rows if r["status"] == "ok"]
    out = {"samples": len(rows), "status": dict(Counter(r["status"] for r in rows)),
           "error_kinds": dict(Counter(r["error_kind"] for r in rows if r["status"] != "ok")),
           "nfe_total": int(sum(r["nfe"] or 0 for r in ok)),
           "solve_seconds": float(sum(r["seconds_solve"] or 0.0 for r in ok)),
           "severity_seconds": float(sum(r["seconds_severity"] or 0.0 for r in ok)),
           "nfe_histogram": histogram([r["nfe"] for r in ok if r["nfe"] is not None]),
           "residual_z_histogram": histogram([r["residual_z"] for r in ok if r.get("residual_z") is not None])}
    paired = [(r["residual_z"], r["psnr"], r["psnr_input"]) for r in ok
              if r.get("residual_z") is not None and r.get("psnr") is not None]
    if len(paired) >= 3:
        rz, psnr, psnr_in = map(np.asarray, zip(*paired))
        out["spearman_residual_z_vs_psnr"] = float(spearmanr(rz, psnr).statistic)
        out["spearman_residual_z_vs_psnr_gain"] = float(spearmanr(rz, psnr - psnr_in).statistic)
    else:
        out["spearman_residual_z_vs_psnr"] = "missing: fewer than 3 ok rows with a reference"
    return out


def pick_examples(rows: list[dict]) -> dict[str, dict]:
    """Best (lowest residual_z), median and worst ok rows."""
    ok = sorted((r for r in rows if r["status"] == "ok" and r.get("residual_z") is not None),
                key=lambda r: r["residual_z"])
    if not ok:
        return {}
    return {"best": ok[0], "median": ok[len(ok) // 2], "worst": ok[-1]}


def restored_image(store: OutputStore, row: dict) -> Image.Image:
    with store.fs.open(store.path(f"images/{row['part']}.tar"), "rb") as fh, tarfile.open(fileobj=fh) as tar:
        return Image.open(io.BytesIO(tar.extractfile(f"{row['key']}.png").read())).convert("RGB")


def input_images(row: dict) -> tuple[Image.Image | None, Image.Image | None]:
    for s in iter_samples(row["shard"], allow_convert=True, select=lambda key: key == row["key"]):
        if hasattr(s, "image01"):  # only this key is decoded
            to_pil = lambda t: Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype("uint8"))  # noqa: E731
            return to_pil(s.image01), (to_pil(s.clean01) if s.clean01 is not None else None)
    return None, None


def save_png(image: Image.Image, store: OutputStore, rel: str) -> str:
    with store.fs.open(store.path(rel), "wb") as fh:
        image.save(fh, format="PNG")
    return store.public_url(rel)


_PANELS = ("degraded", "restored", "reference")


def _panel_titles(row: dict) -> tuple[str, str, str]:
    """Titles for degraded | restored | reference: the numbers that say how good this one is."""
    degraded, restored = "degraded", f"restored\nNFE {row['nfe']} · residual_z {row['residual_z']:.2f}"
    if row.get("psnr") is not None:
        degraded += f"\nPSNR {row['psnr_input']:.1f} dB"
        restored += f"\nPSNR {row['psnr']:.1f} dB"
    return degraded, restored, "reference"


def preview(store: OutputStore, examples: dict[str, dict], scale: int = 3) -> Image.Image:
    """One row per example: degraded | restored | reference, titled with NFE, residual_z and PSNR.

    Drawn with matplotlib (Agg, no pyplot state) so the labels are real, readable text; the
    tiles keep their pixels (nearest-neighbour) and are shown at least `scale` times their size.
    A missing image (no reference in the shard, say) leaves a labelled blank panel, so every
    row keeps the same columns.
    """
    # lazy: matplotlib loads only when a plot is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = []
    for label, row in examples.items():
        degraded, clean = input_images(row)
        rows.append((label, row, degraded, restored_image(store, row), clean))
    ncols = 3 if any(clean is not None for *_, clean in rows) else 2
    dpi = 100
    w, h = rows[0][3].size
    panel = min(4.0, max(2.2, max(w, h) * scale / dpi))  # inches: room for three lines of title, photos fit
    fig = Figure(figsize=(ncols * panel, len(rows) * (panel + 0.6)), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, row, degraded, restored, clean) in enumerate(rows):
        tiles = (degraded, restored, clean)[:ncols]
        for ax, tile, name, title in zip(axes[r], tiles, _PANELS, _panel_titles(row)):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            if tile is None:
                ax.set_box_aspect(restored.size[1] / restored.size[0])  # same shape as its neighbours
                ax.text(0.5, 0.5, f"no {name}", ha="center", va="center",
                        fontsize=9, color="0.4", transform=ax.transAxes)
            else:
                ax.imshow(np.asarray(tile), interpolation="nearest")
        axes[r, 0].set_ylabel(f"{label}\n{row['key']}", fontsize=10, fontweight="bold")
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")


def plots(rows: list[dict], store: OutputStore, rel: str = "plots.png") -> None:
    """NFE and residual_z histograms, and residual_z against PSNR where references exist."""
    # lazy: matplotlib loads only when a plot is drawn
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib loads only when a plot is drawn
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r["status"] == "ok"]
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.4))
    ax[0].hist([r["nfe"] for r in ok], bins=20, color="tab:blue")
    ax[0].set(title="NFE per sample", xlabel="NFE", ylabel="samples")
    rz = [r["residual_z"] for r in ok if r.get("residual_z") is not None]
    ax[1].hist(rz, bins=20, color="tab:orange")
    ax[1].set(title="measurement residual / noise level", xlabel="residual_z")
    pairs = [(r["residual_z"], r["psnr"]) for r in ok if r.get("psnr") is not None and r.get("residual_z") is not None]
    if pairs:
        ax[2].scatter(*zip(*pairs), s=10)
        ax[2].set(title="residual_z vs PSNR", xlabel="residual_z", ylabel="PSNR (dB)")
    else:
        ax[2].text(0.5, 0.5, "no references: PSNR missing", ha="center", va="center")
        ax[2].set_axis_off()
    fig.tight_layout()
    with store.fs.open(store.path(rel), "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def quality_by_family(output: str) -> list[dict]:
    """Mean restored vs input PSNR and colour shift per operator family, from the output's metrics."""
    fs, root = fsspec.core.url_to_fs(output.rstrip("/"))
    files = sorted(fs.glob(f"{root}/metrics/part-*.parquet"))
    if not files:
        return []
    rows = [r for f in files for r in pq.read_table(f, filesystem=fs).to_pylist()
            if r["status"] == "ok" and r.get("psnr") is not None]
    out = []
    for fam in sorted({r["operator"] for r in rows}):
        sub = [r for r in rows if r["operator"] == fam]
        mean = lambda k: sum(r[k] for r in sub) / len(sub)  # noqa: E731
        out.append({"operator": fam, "n": len(sub), "psnr": mean("psnr"), "psnr_input": mean("psnr_input"),
                    "colour_shift": mean("colour_shift"), "colour_shift_input": mean("colour_shift_input"),
                    "nfe": mean("nfe")})
    return out
