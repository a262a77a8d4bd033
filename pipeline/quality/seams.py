"""Seam score: does a restoration's error jump on a periodic grid of lines, as stitched tiles would leave it?

Why: a photo restored tile by tile can come out with every tile right on its own and visible borders
between them; PSNR hardly sees a few lines, the eye does. The score looks only at the error
e = mean over RGB of (restored − clean), so content edges that the restoration keeps cancel out.

Definition (the one the project's seam bar is stated in; tests/quality/test_seams.py pins its values on
random arrays, so numbers compare across versions):
  * jump profile: for every column boundary j (between columns j and j+1), the mean over rows of
    |e[:, j+1] − e[:, j]|; rows likewise on the transposed error;
  * a candidate grid: a period P in PERIODS and a phase f; its lines are the boundaries j ≡ f (mod P)
    with two boundaries on each side inside the image. Tiles of a latent prior start on its 4-px latent
    grid, so only phases on that grid are tried (j + 1 divisible by GRID);
  * on each line, the ratio of its jump to the mean jump of the four boundaries beside it (j ± 1, j ± 2);
    the grid's value is the median over its lines (one content edge on a line does not make a seam), and a
    grid needs MIN_LINES lines;
  * the score is the largest grid value over periods, phases and both axes, and at least 1.
About 1 for an error without periodic discontinuities; well above 1 for independently restored tiles.
"""
from __future__ import annotations

import numpy as np

PERIODS = (32, 48, 64, 96, 128)
GRID = 4          # the latent grid (f = 4): a tile border is a boundary j with (j + 1) % GRID == 0
MIN_LINES = 3     # a grid with fewer lines in the image is not tried


def jump_profile(e: np.ndarray) -> np.ndarray:
    """(W − 1,) mean |jump| across each column boundary of a 2-D error map (H, W)."""
    return np.abs(np.diff(e, axis=1)).mean(axis=0)


def axis_score(e: np.ndarray) -> float:
    """The largest median line-to-neighbours jump ratio over the grids of one axis (column boundaries); 0 if none fits."""
    prof = jump_profile(e)
    n = len(prof)
    best = 0.0
    for period in PERIODS:
        for phase in range(GRID - 1, period, GRID):
            lines = np.arange(phase, n, period)
            lines = lines[(lines >= 2) & (lines < n - 2)]
            if len(lines) < MIN_LINES:
                continue
            beside = np.stack([prof[lines + d] for d in (-2, -1, 1, 2)]).mean(axis=0)
            best = max(best, float(np.median(prof[lines] / np.maximum(beside, 1e-12))))
    return best


def error_map(restored, clean) -> np.ndarray:
    """(H, W) float64 mean-over-channels error. Tensors are channel-first ((C,H,W) or (1,C,H,W)), as the
    pipeline holds images; numpy arrays are channel-last (H,W,C), as image files load; (H,W) is one channel."""
    def as_hwc(a) -> np.ndarray:
        if hasattr(a, "detach"):                     # a torch tensor, without importing torch here
            arr = a.detach().cpu().double().numpy()
            if arr.ndim == 4:
                if arr.shape[0] != 1:
                    raise ValueError(f"seam score: one image at a time, got a batch of {arr.shape[0]}")
                arr = arr[0]
            return arr.transpose(1, 2, 0) if arr.ndim == 3 else arr[..., None]
        arr = np.asarray(a, dtype=np.float64)
        return arr if arr.ndim == 3 else arr[..., None]

    r, c = as_hwc(restored), as_hwc(clean)
    if r.shape != c.shape or r.ndim != 3:
        raise ValueError(f"seam score: restored {r.shape} and clean {c.shape} must be images of one size")
    return (r - c).mean(axis=2)


def seam_score(restored, clean) -> float:
    """The seam score (module docstring) of a restored image against its clean reference, both in [0,1]."""
    e = error_map(restored, clean)
    return max(axis_score(e), axis_score(e.T), 1.0)
