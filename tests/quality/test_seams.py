"""The seam score: stitched tiles score well above 1, seamless errors about 1, and the numbers are the
reference tool's that the seam bar was first measured with (kept outside the repository; it was run
once on these arrays and its values are written here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.quality.seams import seam_score


def cases():
    """(name, clean, restored) (H, W, 3) arrays in [0,1], drawn from fixed seeds."""
    rng = np.random.default_rng(0)
    clean = rng.random((128, 160, 3))
    yield "noise", clean, np.clip(clean + 0.02 * rng.standard_normal(clean.shape), 0, 1)
    rng = np.random.default_rng(1)
    clean = rng.random((192, 256, 3))
    off = rng.normal(0, 0.03, (3, 4, 3)).repeat(64, 0).repeat(64, 1)
    yield "tiles64", clean, np.clip(clean + off + 0.01 * rng.standard_normal(clean.shape), 0, 1)
    rng = np.random.default_rng(2)
    clean = rng.random((100, 300, 3))
    off = rng.normal(0, 0.02, (1, 7, 1)).repeat(48, 1)[:, :300]
    yield "cols48", clean, np.clip(clean + off + 0.01 * rng.standard_normal(clean.shape), 0, 1)
    rng = np.random.default_rng(3)
    yield "random", rng.random((70, 90, 3)), rng.random((70, 90, 3))


#: `seam_score(restored, clean)` of the shared tool on cases(), printed with repr
SHARED_TOOL = {"noise": 1.125126607944421, "tiles64": 2.538472867842907, "cols48": 3.1558614273357057,
               "random": 1.099600332864097}


@pytest.mark.parametrize("name,clean,restored", list(cases()), ids=[c[0] for c in cases()])
def test_matches_the_shared_tool(name, clean, restored):
    assert seam_score(restored, clean) == pytest.approx(SHARED_TOOL[name], rel=1e-12)
    # a tensor is channel-first, as the pipeline holds images; the score is the same
    as_tensor = [torch.from_numpy(a).permute(2, 0, 1) for a in (restored, clean)]
    assert seam_score(*as_tensor) == pytest.approx(SHARED_TOOL[name], rel=1e-12)
    assert seam_score(as_tensor[0][None], as_tensor[1][None]) == pytest.approx(SHARED_TOOL[name], rel=1e-12)


def smooth_noise(rng, h: int, w: int, cells: int = 8) -> np.ndarray:
    """A slowly varying (H, W) field: coarse noise upsampled bilinearly (no discontinuities)."""
    coarse = torch.from_numpy(rng.standard_normal((1, 1, h // cells + 2, w // cells + 2)))
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=True)
    return fine[0, 0].numpy()


def test_stitched_tiles_score_well_above_one_and_smooth_errors_about_one():
    rng = np.random.default_rng(5)
    h, w = 256, 320
    clean = rng.random((h, w, 3)) * 0.6 + 0.2
    smooth = 0.02 * smooth_noise(rng, h, w)[..., None]
    seamless = seam_score(clean + smooth, clean)
    assert 1.0 <= seamless < 1.2
    # each 64-px tile restored on its own: its own smooth error plus a tile-wide offset
    tiles = np.zeros((h, w))
    for i in range(0, h, 64):
        for j in range(0, w, 64):
            tiles[i:i + 64, j:j + 64] = 0.01 * rng.standard_normal() + 0.02 * smooth_noise(rng, 64, 64, 4)
    stitched = seam_score(clean + tiles[..., None], clean)
    assert stitched > 3.0, stitched
    # seams along one axis only are found on that axis (here rows: the transposed image scores the same)
    assert seam_score((clean + tiles[..., None]).transpose(1, 0, 2), clean.transpose(1, 0, 2)) == \
        pytest.approx(stitched, rel=1e-12)


def test_a_jump_off_the_latent_grid_or_too_few_lines_is_not_a_seam():
    h, w = 96, 200
    clean = np.full((h, w, 3), 0.5)
    steps = np.zeros((h, w, 3))
    for j in range(66, w, 64):       # boundaries 65, 129, 193: (j + 1) % 4 != 0, off the latent grid
        steps[:, j:] += 0.05
    noise = 0.01 * np.random.default_rng(6).standard_normal((h, w, 3))
    assert seam_score(clean + steps + noise, clean) < 1.3
    # a 64×64 image has too few lines for any period: the floor, 1
    assert seam_score(np.random.default_rng(7).random((64, 64, 3)), np.zeros((64, 64, 3))) == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="one size"):
        seam_score(np.zeros((10, 12, 3)), np.zeros((12, 10, 3)))
    with pytest.raises(ValueError, match="one image"):
        seam_score(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 8))
