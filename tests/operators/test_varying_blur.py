"""varying_blur: corners and their checks, the exact adjoint, and how close the level mix is to a true
per-pixel Gaussian (the figure its module docstring quotes)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pipeline.operators import GaussianBlur, VaryingBlur, build_operator
from pipeline.operators.gaussian_blur import gaussian_kernel_1d
from pipeline.operators.varying_blur import LEVEL_RATIO, hat_weight, level_stds, trimmed_taps

#: the module docstring's bound: half-L1 distance between the mixed and the true kernel, any std
BOUND = 0.0075


def mixed_kernels(levels: list[float], stds: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size, size): the kernel the level mix gives at each std (what one output pixel reads)."""
    out = torch.zeros(len(stds), size, size, dtype=torch.float64)
    for k, s in enumerate(levels):
        g = F.pad(trimmed_taps(s, size), ((size - trimmed_taps(s, size).shape[0]) // 2,) * 2)
        out += hat_weight(stds, levels, k)[:, None, None] * (g[:, None] * g[None, :])
    return out


@pytest.mark.parametrize("lo,hi", [(0.3, 3.0), (0.3, 0.3 * LEVEL_RATIO ** 4), (0.5, 0.9), (1.2, 2.7)])
def test_level_mix_is_close_to_a_true_per_pixel_gaussian(lo, hi):
    levels = level_stds(lo, hi)
    ratios = [b / a for a, b in zip(levels, levels[1:])]
    assert levels[0] == lo and levels[-1] == hi and max(ratios) <= LEVEL_RATIO + 1e-12
    stds = torch.linspace(lo, hi, 1201, dtype=torch.float64)
    true = torch.stack([gaussian_kernel_1d(float(s), 61) for s in stds])
    err = 0.5 * (mixed_kernels(levels, stds, 61) - true[:, :, None] * true[:, None, :]).abs().sum((1, 2))
    assert err.max() <= BOUND, (lo, hi, err.max())
    if (lo, hi) == (0.3, 3.0):     # the full range: the figure the docstring gives (0.0070 near std 0.63)
        assert 0.0065 < err.max() < 0.0072 and 0.55 < float(stds[err.argmax()]) < 0.7


def test_operator_rows_match_the_per_pixel_gaussian_within_the_bound():
    """Row p of A is the kernel output pixel p reads; the true row is a uniform blur's at std(p)."""
    h, w, ks = 24, 24, 31
    params = VaryingBlur.params_for(0.5, 0.0, 0, kernel_size=ks, severity_corners=[0.0, 0.5, 0.5, 1.0])
    pixels = [(i, j) for i in range(h) for j in range(w) if (i * 7 + j * 3) % 5 == 0]
    e = torch.zeros(len(pixels), 1, h, w, dtype=torch.float64)
    for n, (i, j) in enumerate(pixels):
        e[n, 0, i, j] = 1.0
    rows = VaryingBlur([params] * len(pixels)).adjoint(e)
    t = VaryingBlur([params]).severity_map(h, w)[0, 0]
    true = GaussianBlur([GaussianBlur.params_for(float(t[i, j]), 0.0, 0, kernel_size=ks) for i, j in pixels]).adjoint(e)
    assert torch.allclose(rows.sum((1, 2, 3)), torch.ones(len(pixels), dtype=torch.float64))
    err = 0.5 * (rows - true).abs().sum((1, 2, 3))
    assert err.max() <= BOUND and err.max() > 1e-4   # close, yet a mix, not the true kernel


def test_equal_corners_are_gaussian_blur():
    x = torch.rand(3, 3, 40, 52, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = (0.0, 0.37, 1.0)
    vb = VaryingBlur([VaryingBlur.params_for(t, 0.0, 5, severity_corners=[t] * 4) for t in ts])
    gb = GaussianBlur([GaussianBlur.params_for(t, 0.0, 5) for t in ts])
    assert all(len(lv) == 1 for lv in vb.levels())
    torch.testing.assert_close(vb(x), gb(x), rtol=0, atol=1e-14)
    torch.testing.assert_close(vb.adjoint(x), gb.adjoint(x), rtol=0, atol=1e-14)


@pytest.mark.parametrize("size", [(3, 3), (9, 40), (33, 17)])
def test_adjoint_to_float64_precision(size):
    h, w = size
    ks = min(61, 2 * min(h, w) - 1)
    op = VaryingBlur([VaryingBlur.params_for(t, 0.0, s, kernel_size=ks, spread=1.0)
                      for t, s in ((0.5, 1), (0.2, 2), (0.9, 3))])
    gen = torch.Generator().manual_seed(0)
    x, y = (torch.randn(3, 3, h, w, generator=gen, dtype=torch.float64) for _ in range(2))
    lhs, rhs = (op(x) * y).sum((1, 2, 3)), (x * op.adjoint(y)).sum((1, 2, 3))
    assert torch.all((lhs - rhs).abs() <= 1e-13 * lhs.abs().clamp(min=1.0)), (lhs - rhs)


def test_corners_from_severity_and_seed():
    for t in (0.0, 0.1, 0.5, 0.75, 1.0):
        for seed in range(20):
            p = VaryingBlur.params_for(t, 0.05, seed)
            c = p["severity_corners"]
            assert len(c) == 4 and all(0.0 <= v <= 1.0 for v in c)
            assert abs(sum(c) / 4 - t) < 1e-12 and p["severity"] == t
            assert max(c) - min(c) == pytest.approx(min(0.5, 2 * t, 2 * (1 - t)), abs=1e-12)
    a, b = VaryingBlur.params_for(0.5, 0, 3), VaryingBlur.params_for(0.5, 0, 3)
    assert a == b and a["severity_corners"] != VaryingBlur.params_for(0.5, 0, 4)["severity_corners"]
    # the seeded direction: the severest corner is not always the same one
    worst = {max(range(4), key=VaryingBlur.params_for(0.5, 0, s)["severity_corners"].__getitem__) for s in range(40)}
    assert worst == {0, 1, 2, 3}
    # explicit corners are kept, and a dict round trip keeps them
    p = VaryingBlur.params_for(0.25, 0, 0, severity_corners=[0.0, 0.0, 0.2, 0.8])
    assert p["severity_corners"] == [0.0, 0.0, 0.2, 0.8]
    assert build_operator([p], ["k"]).to_dicts() == [p]


def test_severity_map_and_where_the_blur_is():
    op = VaryingBlur([VaryingBlur.params_for(0.5, 0, 0, kernel_size=31, severity_corners=[0.0, 1.0, 0.0, 1.0])])
    t = op.severity_map(20, 30)[0, 0]
    assert t[0, 0] == 0 and t[0, -1] == 1 and t[-1, 0] == 0 and t[-1, -1] == 1
    assert torch.allclose(t[:, 15], torch.full((20,), 15 / 29, dtype=torch.float64))
    assert VaryingBlur([VaryingBlur.params_for(0.5, 0, 0, kernel_size=1, severity_corners=[0.0, 1.0, 0.0, 1.0])
                        ]).severity_map(1, 1).item() == 0.5
    # a fine checkerboard survives on the sharp side and is averaged away on the blurred one
    yy, xx = torch.meshgrid(torch.arange(20), torch.arange(30), indexing="ij")
    x = ((yy + xx) % 2).double().expand(1, 3, 20, 30)
    y = op(x)
    contrast = (y - 0.5).abs().mean((0, 1, 2))
    assert contrast[0] > 0.45 and contrast[-3:].max() < 0.01
    assert torch.all(contrast[1:] <= contrast[:-1] + 1e-12)   # contrast falls as the std grows


BAD_CORNERS = [
    ([0.1, 0.2, 0.3], "severity_corners"),
    ([0.1, 0.2, 0.3, 0.4, 0.5], "severity_corners"),
    ("0.5", "severity_corners"),
    ([0.5, 0.5, 0.5, float("nan")], "severity_corners[3]"),
    ([0.5, 0.5, 1.5, -0.5], "severity_corners[2]"),
    ([0.5, 0.5, 0.5, "x"], "severity_corners[3]"),
    ([0.9, 0.9, 0.9, 0.9], "mean of severity_corners"),    # severity 0.5 is not their mean
]


@pytest.mark.parametrize("corners,field", BAD_CORNERS)
def test_bad_corners_name_the_key(corners, field):
    bad = {"operator": "varying_blur", "severity": 0.5, "seed": 0, "severity_corners": corners}
    with pytest.raises(ValueError, match="sample bad-key") as err:
        build_operator([VaryingBlur.params_for(0.1), bad], ["good-key", "bad-key"])
    assert field in str(err.value)


@pytest.mark.parametrize("bad,field", [({"spread": 1.5}, "spread"), ({"kernel_size": 8}, "kernel_size"),
                                       ({"std_max": 0.1}, "std_max")])
def test_bad_fields_name_the_key(bad, field):
    with pytest.raises(ValueError, match="bad-key") as err:
        VaryingBlur([{"operator": "varying_blur", "severity": 0.5, **bad}], ["bad-key"])
    assert field in str(err.value)


def test_check_fits_is_the_kernel_rule():
    op = VaryingBlur([VaryingBlur.params_for(0.5, 0, 0), VaryingBlur.params_for(0.5, 0, 1, kernel_size=5)],
                     ["big", "small"])
    op.check_fits(31, 4000)
    with pytest.raises(ValueError, match="big") as err:
        op.check_fits(30, 4000)
    assert "kernel_size" in str(err.value) and "small" not in str(err.value)
    op.subset([1]).check_fits(3, 3)
    with pytest.raises(ValueError, match="small"):
        op.subset([1]).check_fits(2, 9)
