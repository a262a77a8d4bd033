"""Motion blur from camera shake: a random shake path per sample, linear, with an exact adjoint.

Why: camera shake is the blur real photo archives carry most, and DPS's motion-blur task (a
random 61-px kernel of intensity 0.5) is the one inverse-problem users know (issue 28). Unlike
`nonlinear_blur` (a camera model in linear light with saturation), this family is the plain
convolution y = k ⋆ x, so DPS-style solvers and PSLD's transpose apply.

Kernel: the path of a hand-held camera during the exposure, drawn from the sample's `seed`
(our own model, in the spirit of Boracchi & Foi 2012): a point moves at constant speed for
`STEPS` steps; each step its heading turns by a Gaussian amount, a weak pull keeps it near
where it started, and now and then it jerks (the heading jumps by a uniform angle: a tremor);
all three scale with `intensity`. Intensity 0 is a straight line; 0.5 (the
default, DPS's) gives curved paths with a few jerks; 1 is erratic. The path is centred, scaled
so its largest span is size(t) = min_size + (max_size − min_size)·t px, and splatted bilinearly
(equal time per point, `nonlinear_blur.rasterize_path`). One seed keeps its path across t, so
damage grows with severity; t = 0 (min_size 0) is the identity.

Defaults: max_size 31 px. DPS draws its kernels on a 61-px grid for 256-px images; a path
spanning the whole grid would erase a 64-px crop, so the default span is half the grid (set
`max_size: 61` for the full grid). Padding is reflect, as for the other blurs, so the kernel
(at most 2·⌈size⌉ + 3 px wide) must be below 2·min(H, W); `check_fits` says so by key.
"""
from __future__ import annotations

import math

import torch

from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.operators.gaussian_blur import blur_reflect, blur_reflect_adjoint
from pipeline.operators.nonlinear_blur import check_extent, extent, fitted_kernels, rasterize_path

#: time steps of the exposure; enough that neighbouring splats overlap at the largest span
STEPS = 512
#: per unit intensity: the std of the heading's turn per step (rad), the chance of a jerk per step, and the
#: pull back towards the start per step as a fraction of the offset (a hand steadies itself)
TURN, JERK, PULL = 0.12, 0.01, 0.004


def shake_path(seed: int, intensity: float) -> torch.Tensor:
    """(STEPS, 2) positions (x, y) of a unit-speed shake path drawn from `seed` (module docstring)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    heading = 2.0 * math.pi * float(torch.rand((), generator=gen, dtype=torch.float64))
    turns = torch.randn(STEPS, generator=gen, dtype=torch.float64).tolist()
    jerk_draw = torch.rand(STEPS, generator=gen, dtype=torch.float64).tolist()
    jerk_angle = (math.pi * (2.0 * torch.rand(STEPS, generator=gen, dtype=torch.float64) - 1.0)).tolist()
    x = y = 0.0
    out = []
    for turn, jerk, angle in zip(turns, jerk_draw, jerk_angle):
        heading += TURN * intensity * turn + (angle if jerk < JERK * intensity else 0.0)
        dx, dy = math.cos(heading) - PULL * intensity * x, math.sin(heading) - PULL * intensity * y
        norm = math.hypot(dx, dy) or 1.0
        x, y = x + dx / norm, y + dy / norm
        out.append((x, y))
    return torch.tensor(out, dtype=torch.float64)


class MotionBlur(Operator):
    """Per-sample camera-shake blur; linear, with the exact adjoint of the reflect-padded convolution."""

    name = "motion_blur"
    label = "motion blur"
    linear = True
    settings_of = "gaussian_blur"   # another blur: its tuned settings serve a solver and mode not tuned here
    defaults = {"intensity": 0.5, "min_size": 0.0, "max_size": 31.0}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """The defaults where they fit, a straight and an erratic path; the span is capped on small images
        (a path of span s gives a kernel at most 2·⌈s⌉ + 3 wide, below 2·min(H, W) when s ≤ min(H, W) − 2)."""
        cap = float(max(0, min(height, width) - 2))
        fit = {} if cls.defaults["max_size"] <= cap else {"max_size": cap}
        return [fit, {"intensity": 0.0, **fit}, {"intensity": 1.0, "max_size": min(9.0, cap)}]

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        params["intensity"] = finite_number(params["intensity"], "intensity", key, 0.0, 1.0)
        return check_extent(params, key)

    size = staticmethod(extent)

    def kernels(self, height: int, width: int) -> torch.Tensor:
        """(B, K, K) float64 kernels, flipped for correlation, zero-padded (centred) to one size."""
        return fitted_kernels(self, height, width,
                              lambda p: rasterize_path(shake_path(p["seed"], p["intensity"]), extent(p)))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        return blur_reflect(x01, self.for_size(x01, self.kernels))

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        self.check_input(y01)
        return blur_reflect_adjoint(y01, self.for_size(y01, self.kernels))
