"""Operator contract tests: exact adjoints, per-sample batching, seeding, dict round trips, errors."""
from __future__ import annotations

import math

import pytest
import torch

from pipeline.operators import (OPERATORS, GaussianBlur, Inpainting, MotionBlur, NoiseLevel, NonlinearBlur,
                                build_operator, measure, to_model_domain, to_unit_domain)
from pipeline.sampling.seeding import generators

LINEAR = [name for name, cls in OPERATORS.items() if cls.linear]
SIZES = [(16, 16), (23, 31), (64, 64)]


def mixed_params(name: str, height: int, width: int) -> list[dict]:
    """Three samples of one family with different severities, seeds and family fields (`example_params`)."""
    cls = OPERATORS[name]
    extra = cls.example_params(height, width)
    return [cls.params_for(t, 0.05, seed, **extra[i % len(extra)])
            for i, (t, seed) in enumerate(zip((0.0, 0.6, 1.0), (3, 11, 7)))]


def smooth_image(batch: int, height: int = 32, width: int = 32, dtype=torch.float64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height, dtype=dtype), torch.linspace(0, 1, width, dtype=dtype),
                            indexing="ij")
    chans = [0.5 + 0.4 * torch.sin(6 * xx + 2 * c) * torch.cos(5 * yy - c) for c in range(3)]
    img = torch.stack(chans)
    img = torch.where((xx - 0.5) ** 2 + (yy - 0.4) ** 2 < 0.05, 0.95 * torch.ones_like(img), img)
    return img.expand(batch, -1, -1, -1).clone()


# --- the contract, one function per property: run on every registered family (and by tests/test_registries.py
# on a family registered at test time) --------------------------------------------------------------------------

def check_registration(name: str) -> None:
    """The registry key is the family's name; its label is its own."""
    cls = OPERATORS[name]
    assert cls.name == name and isinstance(cls.label, str) and cls.label, (name, cls.label)
    assert [c.label for c in OPERATORS.values()].count(cls.label) == 1, cls.label


def check_examples_fit(name: str) -> None:
    """`example_params` fit their image size at every severity and seed (check_fits is the family's own rule)."""
    cls = OPERATORS[name]
    for h, w in SIZES + [(8, 8), (16, 20)]:
        params = [cls.params_for(t, 0.05, seed, **e) for e in cls.example_params(h, w) for seed in range(12)
                  for t in (0.0, 0.5, 1.0)]
        cls(params).check_fits(h, w)


def check_adjoint(name: str, size: tuple[int, int]) -> None:
    """A linear family's adjoint: ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ per sample, and Aᵀ is autograd's transpose of A."""
    h, w = size
    op = OPERATORS[name](mixed_params(name, h, w), ["a", "b", "c"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, h, w, generator=gen, dtype=torch.float64)
    y = torch.randn(3, 3, h, w, generator=gen, dtype=torch.float64)
    lhs = (op.forward(x) * y).sum(dim=(1, 2, 3))
    rhs = (x * op.adjoint(y)).sum(dim=(1, 2, 3))
    assert torch.all((lhs - rhs).abs() <= 1e-5 * lhs.abs().clamp(min=1e-3)), (lhs, rhs)
    xg = x.clone().requires_grad_(True)
    (vjp,) = torch.autograd.grad(op(xg), xg, y)
    torch.testing.assert_close(op.adjoint(y), vjp, rtol=1e-9, atol=1e-12)


def check_batching(name: str) -> None:
    """Dict round trip, subsets and one-by-one runs give the batch's own rows; float32 follows float64."""
    params = mixed_params(name, 23, 31)
    keys = ["k0", "k1", "k2"]
    op = build_operator(params, keys)
    assert isinstance(op, OPERATORS[name])
    x = smooth_image(3, 23, 31)
    out = op(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    again = build_operator(op.to_dicts(), keys)
    assert op.to_dicts() == again.to_dicts()
    torch.testing.assert_close(again(x), out, rtol=0, atol=0)
    sub = op.subset([2, 0])
    assert sub.keys == ["k2", "k0"]
    torch.testing.assert_close(sub(x[[2, 0]]), out[[2, 0]], rtol=1e-12, atol=1e-12)
    for i in range(3):
        single = OPERATORS[name]([params[i]], [keys[i]])
        torch.testing.assert_close(single(x[i:i + 1]), out[i:i + 1], rtol=1e-12, atol=1e-12)
    # float32 input gives the float64 result up to rounding
    torch.testing.assert_close(op(x.float()), out.float(), rtol=1e-4, atol=1e-4)


COMMON_BAD = [
    ({"severity": 1.5}, "severity"),
    ({"severity": float("nan")}, "severity"),
    ({"severity": "0.5"}, "severity"),
    ({"noise_sigma": -0.1}, "noise_sigma"),
    ({"seed": 1.5}, "seed"),
    ({"no_such_field": 5}, "no_such_field"),   # a typo must not fall back to a default
]


def check_bad_params(name: str, bad: dict, field: str) -> None:
    """A bad dict in a batch is a ValueError naming its sample key and the field."""
    params = {"operator": name, "severity": 0.5, "noise_sigma": 0.0, "seed": 0, **bad}
    with pytest.raises(ValueError, match="sample bad-key") as err:
        build_operator([OPERATORS[name].params_for(0.1), params], ["good-key", "bad-key"])
    assert field in str(err.value)


def check_bad_batches(name: str) -> None:
    """Wrong batch sizes, non-finite rows and another family's dict name the keys."""
    h, w = 16, 16
    op = OPERATORS[name](mixed_params(name, h, w)[:2], ["s0", "s1"])
    with pytest.raises(ValueError, match="s1"):
        op(torch.rand(3, 3, h, w))
    x = torch.rand(2, 3, h, w)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"\['s1'\]"):
        op(x)
    other = next(n for n in OPERATORS if n != name)
    with pytest.raises(ValueError, match="x1"):
        OPERATORS[name]([{"operator": other, "severity": 0.1}], ["x1"])


@pytest.mark.parametrize("name", list(OPERATORS))
def test_registration_and_examples(name):
    check_registration(name)
    check_examples_fit(name)


@pytest.mark.parametrize("name", LINEAR)
@pytest.mark.parametrize("size", SIZES)
def test_adjoint_dot_product(name, size):
    check_adjoint(name, size)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_dict_roundtrip_subset_and_per_sample(name):
    check_batching(name)


@pytest.mark.parametrize("name", list(OPERATORS))
@pytest.mark.parametrize("bad,field", COMMON_BAD)
def test_bad_common_fields_name_the_key(name, bad, field):
    check_bad_params(name, bad, field)


@pytest.mark.parametrize("name", list(OPERATORS))
def test_bad_batches_name_the_keys(name):
    check_bad_batches(name)


def test_blur_adjoint_matches_autograd_transpose():
    op = GaussianBlur(mixed_params("gaussian_blur", 16, 20))
    x = torch.randn(3, 3, 16, 20, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 3, 16, 20, dtype=torch.float64)
    (vjp,) = torch.autograd.grad(op(x), x, y)
    torch.testing.assert_close(op.adjoint(y), vjp, rtol=1e-10, atol=1e-12)


def test_separable_blur_equals_2d_blur_and_adjoint():
    from pipeline.operators.gaussian_blur import (blur_reflect, blur_reflect_adjoint, blur_separable,
                                                  blur_separable_adjoint)
    op = GaussianBlur(mixed_params("gaussian_blur", 16, 20))
    x = torch.randn(3, 3, 16, 20, dtype=torch.float64)
    taps, kernels = op.taps(16, 20), op.kernels(16, 20)
    torch.testing.assert_close(blur_separable(x, taps), blur_reflect(x, kernels))
    torch.testing.assert_close(blur_separable_adjoint(x, taps), blur_reflect_adjoint(x, kernels))
    # the 2-D pair (used with non-separable kernels) is an exact adjoint pair too
    k = torch.rand(3, 7, 7, dtype=torch.float64)
    y = torch.randn_like(x)
    lhs, rhs = (blur_reflect(x, k) * y).sum(), (x * blur_reflect_adjoint(y, k)).sum()
    assert abs(lhs - rhs) <= 1e-10 * abs(lhs)


def test_gaussian_kernel_and_std_schedule():
    op = GaussianBlur([GaussianBlur.params_for(t, 0.0, 0) for t in (0.0, 0.5, 1.0)])
    assert op.stds.tolist() == pytest.approx([0.3, 1.65, 3.0])
    k = op.kernels(64, 64)
    assert k.shape == (3, 61, 61)
    assert torch.allclose(k.sum((1, 2)), torch.ones(3, dtype=torch.float64))
    # a constant image stays constant (normalized kernel, reflect padding)
    x = torch.full((3, 3, 20, 20), 0.3)
    torch.testing.assert_close(GaussianBlur([GaussianBlur.params_for(1.0, 0, 0, kernel_size=31)] * 3)(x), x)


@pytest.mark.parametrize("name", ["inpainting", "nonlinear_blur"])
def test_seed_determinism(name):
    cls = OPERATORS[name]
    x = smooth_image(1)
    a = cls([cls.params_for(0.8, 0, 5)])(x)
    b = cls([cls.params_for(0.8, 0, 5)])(x)
    c = cls([cls.params_for(0.8, 0, 6)])(x)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_inpainting_masks():
    h, w = 64, 64
    ts = (0.0, 0.25, 0.5, 1.0)
    op = Inpainting([Inpainting.params_for(t, 0, 9) for t in ts])
    keep = op.masks(h, w)
    assert keep.shape == (4, 1, h, w)
    for t, m in zip(ts, keep):
        assert abs((1 - m.double().mean().item()) - 0.8 * t) < 0.03
    # nested across severity for one seed
    assert torch.all(keep[1:] <= keep[:-1])
    # masked pixels are 0 in [0,1], −1 in [−1,1]; all channels share the mask
    x = torch.rand(4, 3, h, w) + 0.1
    out = op(x)
    assert torch.all((out == 0) == ~keep.expand(-1, 3, -1, -1))
    assert torch.all(op.forward_pm(2 * x - 1)[~keep.expand(-1, 3, -1, -1)] == -1)
    # per-sample masks differ by seed; shared_mask ignores the seed
    two = Inpainting([Inpainting.params_for(0.5, 0, s) for s in (1, 2)]).masks(h, w)
    assert not torch.equal(two[0], two[1])
    shared = Inpainting([Inpainting.params_for(0.5, 0, s, shared_mask=True) for s in (1, 2, 3)]).masks(h, w)
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[1], shared[2])
    assert torch.equal(shared[0], Inpainting([Inpainting.params_for(0.5, 0, 0)]).masks(h, w)[0])


def test_nonlinear_blur_gradients_and_monotone_damage():
    ts = (0.0, 0.2, 0.4, 0.7, 1.0)
    x = smooth_image(len(ts), dtype=torch.float32)
    for kind in ("motion", "defocus"):
        op = NonlinearBlur([NonlinearBlur.params_for(t, 0, 4, kernel_type=kind) for t in ts])
        xg = x.clone().requires_grad_()
        out = op(xg)
        damage = ((out - x) ** 2).mean(dim=(1, 2, 3))
        assert damage[0] < 1e-4  # near identity at t = 0 (response-curve round trip only)
        assert torch.all(damage[1:] > damage[:-1]), (kind, damage)
        out.square().sum().backward()
        assert torch.isfinite(xg.grad).all() and xg.grad.abs().sum() > 0
    # differentiable also outside [0,1] and at exactly 0 (solvers feed unclipped images)
    z = torch.tensor([-0.2, 0.0, 0.5, 1.0, 1.3]).view(1, 1, 1, 5).expand(1, 3, 4, 5).clone().requires_grad_()
    NonlinearBlur([NonlinearBlur.params_for(0.5, 0, 1, max_size=3.0)])(z).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_motion_blur_is_the_identity_at_zero_a_line_without_shake_and_grows_with_t():
    ts = (0.0, 0.2, 0.4, 0.7, 1.0)
    x = smooth_image(len(ts), 48, 48)
    for intensity in (0.0, 0.5, 1.0):
        op = MotionBlur([MotionBlur.params_for(t, 0, 4, intensity=intensity) for t in ts])
        out = op(x)
        damage = ((out - x) ** 2).mean(dim=(1, 2, 3))
        assert damage[0] == 0 and torch.all(damage[1:] > damage[:-1]), (intensity, damage)
    kernel = MotionBlur([MotionBlur.params_for(1.0, 0, 9, intensity=0.0)]).kernels(64, 64)[0]
    assert abs(float(kernel.sum()) - 1) < 1e-12 and (kernel >= 0).all()
    ys, xs = torch.nonzero(kernel > 1e-9, as_tuple=True)          # no shake: the support is a straight segment
    pts = torch.stack([xs, ys], 1).double()
    spread = torch.linalg.svdvals(pts - pts.mean(0))
    assert spread[1] < 0.1 * spread[0] and 0.8 * 31 <= float(torch.cdist(pts, pts).max()) <= 31 + 3


def test_noise_schedule_and_measure():
    assert NoiseLevel(0.05, 0.05)(0.7) == 0.05
    assert NoiseLevel(0.0, 0.0)(0.3) == 0.0
    lvl = NoiseLevel(0.01, 0.1)
    assert lvl(0.0) == pytest.approx(0.01) and lvl(1.0) == pytest.approx(0.1)
    assert lvl(0.5) == pytest.approx(math.sqrt(0.001))
    with pytest.raises(ValueError, match="sigma_min"):
        NoiseLevel(0.0, 0.1)
    keys = ["a", "b"]
    op = GaussianBlur([GaussianBlur.params_for(0.5, s, 0, kernel_size=9) for s in (0.0, 0.05)], keys)
    x = smooth_image(2)
    y1 = measure(op, x, generators(1, keys, "degradation"))
    y2 = measure(op, x, generators(1, keys, "degradation"))
    assert torch.equal(y1, y2)
    torch.testing.assert_close(y1[0], op(x)[0])  # σ = 0: exact
    resid = (y1[1] - op(x)[1]).std().item()
    assert 0.04 < resid < 0.06
    # a sample's noise does not depend on its batch partners
    alone = measure(op.subset([1]), x[1:], generators(1, ["b"], "degradation"))
    torch.testing.assert_close(alone, y1[1:])
    torch.testing.assert_close(to_unit_domain(to_model_domain(y1)), y1)
    with pytest.raises(ValueError, match="generators"):
        measure(op, x, generators(1, ["a"], "degradation"))


BAD_DICTS = [   # each family's own fields (the common ones: COMMON_BAD, for every family)
    ("gaussian_blur", {"kernel_size": 60}, "kernel_size"),
    ("gaussian_blur", {"kernel_size": 7.0}, "kernel_size"),
    ("gaussian_blur", {"std_min": 0.0}, "std_min"),
    ("gaussian_blur", {"std_max": 0.1}, "std_max"),
    ("gaussian_blur", {"kernel_sizes": 5}, "kernel_sizes"),
    ("inpainting", {"frac_max": 1.2}, "frac_max"),
    ("inpainting", {"shared_mask": "yes"}, "shared_mask"),
    ("nonlinear_blur", {"kernel_type": "zoom"}, "kernel_type"),
    ("nonlinear_blur", {"exposure": float("inf")}, "exposure"),
    ("nonlinear_blur", {"max_size": -1.0}, "max_size"),
]


@pytest.mark.parametrize("name,bad,field", BAD_DICTS)
def test_bad_dicts_name_the_key(name, bad, field):
    check_bad_params(name, bad, field)


def test_bad_inputs_and_batches_name_the_keys():
    op = GaussianBlur([GaussianBlur.params_for(0.5, 0, 0)] * 2, ["s0", "s1"])
    with pytest.raises(ValueError, match="kernel_size") as err:
        op(torch.rand(2, 3, 20, 20))  # kernel 61 ≥ 2·20
    assert "s0" in str(err.value)
    small = GaussianBlur([GaussianBlur.params_for(0.5, 0, 0, kernel_size=5)] * 2, ["s0", "s1"])
    with pytest.raises(ValueError, match="s1"):
        small(torch.rand(3, 3, 16, 16))
    with pytest.raises(ValueError, match="s1"):
        small(torch.rand(3, 16, 16))
    x = torch.rand(2, 3, 16, 16)
    x[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"\['s1'\]"):
        small(x)
    x[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match=r"\['s1'\]"):
        Inpainting([Inpainting.params_for(0.5)] * 2, ["s0", "s1"])(x)
    with pytest.raises(ValueError, match="max_size"):
        NonlinearBlur([NonlinearBlur.params_for(1.0, max_size=40.0)], ["big"])(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="u1"):
        build_operator([GaussianBlur.params_for(0.1), Inpainting.params_for(0.1)], ["u0", "u1"])
    with pytest.raises(ValueError, match="m1"):
        build_operator([GaussianBlur.params_for(0.1), {"severity": 0.1}], ["m0", "m1"])
    with pytest.raises(ValueError, match="x1"):
        GaussianBlur([{"operator": "inpainting", "severity": 0.1}], ["x1"])
