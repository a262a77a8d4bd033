"""Whole photos at a glance: degraded | restored | reference | where the steps went.

Why: a photo off the prior's size is restored tile by tile with each region's own start step
(pipeline/restoration/whole_photo.py), so besides the pictures a user wants to see which
regions took many steps and which few. The restored image's json in the output holds its
`start_map` (region tiles in pixels and each one's start); a pixel ran from the largest start
of the tiles covering it, which is what the fourth panel shows.
"""
from __future__ import annotations

import json
import tarfile

import numpy as np
from PIL import Image

from pipeline.inspection.output_report import input_images, restored_image
from pipeline.io.outputs import OutputStore

MAX_PHOTOS = 4
MAX_LOOKED_AT = 64   # image jsons opened while looking for photos (each is a small read)


def image_meta(store: OutputStore, row: dict) -> dict:
    """The restored image's json from the output's images tar."""
    with store.fs.open(store.path(f"images/{row['part']}.tar"), "rb") as fh, tarfile.open(fileobj=fh) as tar:
        member = tar.extractfile(f"{row['key']}.json")
        return json.loads(member.read()) if member is not None else {}


def pick_photos(store: OutputStore, rows: list[dict], count: int = MAX_PHOTOS) -> list[tuple[dict, dict]]:
    """(row, start map) of up to `count` ok photos restored on a canvas, largest first."""
    ok = sorted((r for r in rows if r["status"] == "ok" and r.get("height")),
                key=lambda r: (-r["height"] * r["width"], r["key"]))
    out = []
    for row in ok[:MAX_LOOKED_AT]:
        meta = image_meta(store, row)
        if "start_map" in meta:
            out.append((row, meta["start_map"]))
        if len(out) == count:
            break
    return out


def start_pixels(start_map: dict, height: int, width: int) -> np.ndarray:
    """(height, width) start step per pixel: the largest start of the tiles covering it."""
    side = start_map["tile_px"]
    canvas = np.full((max(start_map["y_px"]) + side, max(start_map["x_px"]) + side), -1, dtype=np.int64)
    for i, y in enumerate(start_map["y_px"]):
        for j, x in enumerate(start_map["x_px"]):
            window = canvas[y:y + side, x:x + side]
            np.maximum(window, start_map["starts"][i][j], out=window)
    return canvas[:height, :width]


def photo_figure(store: OutputStore, picked: list[tuple[dict, dict]], panel_inches: float = 3.2) -> Image.Image:
    """One row per photo, each panel scaled to fit `panel_inches` (aspect kept)."""
    # lazy: matplotlib loads only when a picture is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * panel_inches + 0.8, len(picked) * (panel_inches + 0.5)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(picked), 4, squeeze=False)
    for r, (row, start_map) in enumerate(picked):
        degraded, clean = input_images(row)
        restored = restored_image(store, row)
        psnr = (lambda key: f"\nPSNR {row[key]:.1f} dB" if row.get(key) is not None else "")
        panels = ((degraded, "degraded" + psnr("psnr_input")), (restored, "restored" + psnr("psnr")),
                  (clean, "reference"))
        for ax, (image, title) in zip(axes[r], panels):
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=9)
            if image is None:
                ax.text(0.5, 0.5, "none", ha="center", va="center", color="0.4", transform=ax.transAxes)
            else:
                ax.imshow(np.asarray(image))
        ax = axes[r, 3]
        starts = start_pixels(start_map, row["height"], row["width"])
        shown = ax.imshow(starts, cmap="viridis", vmin=0, vmax=max(1, int(starts.max())))
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"start step per region\n{row['tiles']} tiles · {row['tile_steps']} tile-steps", fontsize=9)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        axes[r, 0].set_ylabel(f"{row['key']}\n{row['height']}×{row['width']}", fontsize=9, fontweight="bold")
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
