"""Every registered family acts on images of any size: odd, non-square, tiny, a 16×4000 strip, a 301×203 photo.

Why: real photos are restored at their own size (issue 27), so masks and kernels are drawn for the image's
own height and width, and `example_params(h, w)` must fit it. Batches are small and the large sizes check the
adjoint on one sample, so this runs in seconds on two CPU cores."""
from __future__ import annotations

import pytest
import torch

from pipeline.operators import OPERATORS, Inpainting
from tests.operators.test_operators import check_adjoint

SIZES = [(1, 7), (2, 9), (3, 3), (8, 8), (7, 13), (33, 17), (16, 4000), (301, 203)]
LARGE = 5000   # pixels: above this the adjoint is checked on one sample


def batch_for(name: str, h: int, w: int) -> list[dict]:
    """One sample per example of the family at this size, severities and seeds varied."""
    cls = OPERATORS[name]
    return [cls.params_for(t, 0.05, seed, **e)
            for e, t, seed in zip(cls.example_params(h, w), (1.0, 0.6, 0.0, 0.3), (7, 11, 3, 5))]


@pytest.mark.parametrize("size", SIZES, ids=[f"{h}x{w}" for h, w in SIZES])
@pytest.mark.parametrize("name", list(OPERATORS))
def test_every_family_acts_on_any_size(name, size):
    h, w = size
    cls = OPERATORS[name]
    params = batch_for(name, h, w)
    keys = [f"k{i}" for i in range(len(params))]
    op = cls(params, keys)
    for t in (0.0, 1.0):   # the examples fit at every severity (and these seeds)
        cls([cls.params_for(t, 0.05, s, **e) for e in cls.example_params(h, w) for s in (0, 1)]).check_fits(h, w)
    x = torch.rand(len(op), 3, h, w, generator=torch.Generator().manual_seed(0))
    y = op(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    if name == "inpainting":
        assert Inpainting(params).masks(h, w).shape == (len(op), 1, h, w)
    if not cls.linear:
        return
    if h * w <= LARGE:
        check_adjoint(name, size)    # the contract's own check: dot product and autograd's transpose
    rows = [0] if h * w > LARGE else list(range(len(op)))
    sub = op.subset(rows)
    gen = torch.Generator().manual_seed(1)
    xd, yd = (torch.randn(len(rows), 3, h, w, generator=gen, dtype=torch.float64) for _ in range(2))
    back = sub.adjoint(yd)
    assert back.shape == xd.shape
    lhs, rhs = (sub(xd) * yd).sum((1, 2, 3)), (xd * back).sum((1, 2, 3))
    assert torch.all((lhs - rhs).abs() <= 1e-12 * lhs.abs().clamp(min=1.0)), (lhs, rhs)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_one_by_one_equals_the_batch_on_an_odd_size(name):
    """A sample's row does not depend on its partners when the batch mixes examples (kernel sizes, options)."""
    h, w = 13, 21
    params = batch_for(name, h, w)
    op = OPERATORS[name](params)
    x = torch.rand(len(op), 3, h, w, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    out = op(x)
    for i, p in enumerate(params):
        torch.testing.assert_close(OPERATORS[name]([p])(x[i:i + 1]), out[i:i + 1], rtol=1e-12, atol=1e-12)
