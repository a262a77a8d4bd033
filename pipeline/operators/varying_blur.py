"""Spatially varying Gaussian blur: the severity is given at the four corners and varies across the image.

Why: real photos are not blurred evenly (focus falls off, a lens is softer at one side), so a
restorer that handles photos at their own size must meet a blur whose severity changes over
the frame (issue 27). The family keeps `gaussian_blur`'s std(t) = std_min + (std_max − std_min)·t,
kernel truncation and reflect padding, so at equal corners it is that family's blur.

Severity map: `severity_corners` = [top-left, top-right, bottom-left, bottom-right], each in
[0,1], interpolated bilinearly between the corner pixels' centres; std(p) = std(t(p)). The
dict's `severity` is the mean of the corners (checked to 1e-6), so every tool that orders or
bins samples by severity keeps working; the start step a severity encoder picks follows the
image's overall damage. A dict without corners gets them from (severity, seed): a gradient of
corner-to-corner range `spread` in a direction drawn from the seed, centred on the severity
(the range shrinks near t = 0 and t = 1 so the corners stay in [0,1] and keep their mean).

Linear with an exact adjoint. Each sample blurs at a few std levels spanning its own corner
range, geometric with ratio ≤ LEVEL_RATIO, and each pixel mixes the two levels that bracket
its std, linearly in std:  y = Σ_k w_k ⊙ (G_k ⋆ x),  Aᵀy = Σ_k G_kᵀ(w_k ⊙ y), with G_k and
G_kᵀ the separable reflect-padded pair of `gaussian_blur` (the same padding adjoint). Against a
true per-pixel Gaussian (each output pixel its own kernel) the mixed kernel differs by at most
0.0070 in half-L1 over the full range std ∈ [0.3, 3] (worst near std 0.63, where the sampled
kernel's centre tap changes fastest) and by ≤ 0.0075 on the narrower ranges measured, so an
image in [0,1] moves by at most that (< 2/255) at any pixel; tests/operators/test_varying_blur.py
measures these figures, on kernels and on the operator's rows. Equal corners take one level:
`gaussian_blur` itself (to rounding, 1e-14). Cost: the full 0.3 → 3 range takes 18 levels (a narrow
range fewer). Their taps add up to about five times `gaussian_blur`'s 61, but a depthwise pass on
the CPU costs nearly the same whatever its taps: one forward measured 8× (301×203) and 13×
(1024×768) a `gaussian_blur` forward, on one thread in float32.

Image sizes: any. As for `gaussian_blur`, `kernel_size` (odd, default 61) must be below
2·min(H, W) (reflect padding); `check_fits` says so by key, and `example_params` picks kernels
that fit small images (a 3×3 image takes kernel 5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.operators.base import Operator, finite_number
from pipeline.operators.gaussian_blur import (GaussianBlur, blur_separable, blur_separable_adjoint, check_kernel_fits,
                                              gaussian_kernel_1d)

#: largest ratio between neighbouring std levels: a half-L1 kernel error ≤ 0.0075 (module docstring);
#: 1.2 would take 14 levels instead of 18 for the full range at an error of 0.0125
LEVEL_RATIO = 1.15
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
#: where each corner sits, (x, y) ∈ {−½, ½}², in CORNERS order
_CORNER_XY = ((-0.5, -0.5), (0.5, -0.5), (-0.5, 0.5), (0.5, 0.5))


def level_stds(std_lo: float, std_hi: float, ratio: float = LEVEL_RATIO) -> list[float]:
    """Geometric std levels from std_lo to std_hi (both included), neighbours at most `ratio` apart."""
    if std_hi <= std_lo * (1.0 + 1e-12):
        return [std_lo]
    n = math.ceil(math.log(std_hi / std_lo) / math.log(ratio) - 1e-9) + 1
    return [std_lo * (std_hi / std_lo) ** (i / (n - 1)) for i in range(n - 1)] + [std_hi]


def trimmed_taps(std: float, kernel_size: int) -> torch.Tensor:
    """`gaussian_kernel_1d(std, kernel_size)` without its zero tails (same blur, fewer taps)."""
    g = gaussian_kernel_1d(std, kernel_size)
    r, radius = kernel_size // 2, min(kernel_size // 2, int(6.0 * std + 0.5))
    return g[r - radius:r + radius + 1]


def gradient_corners(severity: float, spread: float, seed: int) -> list[float]:
    """Corners of mean `severity` along a seeded direction, max − min = min(spread, 2t, 2(1 − t))."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    theta = 2.0 * math.pi * float(torch.rand((), generator=gen, dtype=torch.float64))
    c, s = math.cos(theta), math.sin(theta)
    amp = min(spread, 2.0 * severity, 2.0 * (1.0 - severity))
    return [min(1.0, max(0.0, severity + amp * (c * x + s * y) / (abs(c) + abs(s)))) for x, y in _CORNER_XY]


def bilinear_map(corners: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, 1, H, W) values bilinear between per-sample corners (B, 4) at the corner pixels' centres."""
    def axis(n: int) -> torch.Tensor:
        if n == 1:
            return torch.full((1,), 0.5, dtype=torch.float64)
        return torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    v, u = axis(height).view(1, height, 1), axis(width).view(1, 1, width)
    tl, tr, bl, br = (corners[:, i].view(-1, 1, 1) for i in range(4))
    top, bottom = tl + (tr - tl) * u, bl + (br - bl) * u
    return (top + (bottom - top) * v).unsqueeze(1)


def check_corners(value, severity: float, key: str) -> list[float]:
    """Four finite numbers in [0,1] whose mean is the dict's severity; ValueError naming the key otherwise."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ValueError(f"sample {key}: severity_corners must be a list of 4 numbers {list(CORNERS)}, "
                         f"got {value!r}")
    corners = [finite_number(v, f"severity_corners[{i}] ({CORNERS[i]})", key, 0.0, 1.0) for i, v in enumerate(value)]
    mean = sum(corners) / 4.0
    if abs(mean - severity) > 1e-6:
        raise ValueError(f"sample {key}: severity={severity} is not the mean of severity_corners {corners} "
                         f"({mean:.6g}); give severity as that mean")
    return corners


class VaryingBlur(Operator):
    """Per-sample Gaussian blur whose severity is bilinear between four corners; linear, exact adjoint."""

    name = "varying_blur"
    label = "varying Gaussian blur"
    settings_of = "gaussian_blur"   # the same blur, varying over the frame: its tuned solver settings apply
    linear = True
    defaults = {"kernel_size": 61, "std_min": 0.3, "std_max": 3.0, "spread": 0.5, "severity_corners": None}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """A small kernel, the largest that fits with the full spread, and the default (or the next that fits)."""
        widest = 2 * min(height, width) - 1          # reflect padding needs kernel_size < 2·min(H, W)
        default = {} if cls.defaults["kernel_size"] <= widest else {"kernel_size": max(1, widest - 2)}
        return [{"kernel_size": min(7, widest)}, {"kernel_size": min(cls.defaults["kernel_size"], widest),
                                                  "spread": 1.0}, {**default, "spread": 0.2}]

    def validate(self, params: dict, key: str) -> dict:
        params = GaussianBlur.validate(self, params, key)   # the kernel and std(t) fields are Gaussian blur's
        params["spread"] = finite_number(params["spread"], "spread", key, 0.0, 1.0)
        if params["severity_corners"] is None:
            params["severity_corners"] = gradient_corners(params["severity"], params["spread"], params["seed"])
        params["severity_corners"] = check_corners(params["severity_corners"], params["severity"], key)
        return params

    @staticmethod
    def std(params: dict, t: float) -> float:
        return params["std_min"] + (params["std_max"] - params["std_min"]) * t

    @property
    def corners(self) -> torch.Tensor:
        """(B, 4) float64 corner severities, in CORNERS order."""
        return torch.tensor([p["severity_corners"] for p in self.params], dtype=torch.float64)

    def severity_map(self, height: int, width: int) -> torch.Tensor:
        """(B, 1, H, W) float64 severity t(p) of every pixel."""
        return bilinear_map(self.corners, height, width)

    def std_map(self, height: int, width: int) -> torch.Tensor:
        """(B, 1, H, W) float64 Gaussian std of every pixel."""
        lo = torch.tensor([p["std_min"] for p in self.params], dtype=torch.float64).view(-1, 1, 1, 1)
        hi = torch.tensor([p["std_max"] for p in self.params], dtype=torch.float64).view(-1, 1, 1, 1)
        return lo + (hi - lo) * self.severity_map(height, width)

    def levels(self) -> list[list[float]]:
        """Each sample's std levels, spanning the std of its least and most severe corner."""
        return [level_stds(self.std(p, min(p["severity_corners"])), self.std(p, max(p["severity_corners"])))
                for p in self.params]

    def check_fits(self, height: int, width: int) -> None:
        """The kernel rule alone (no dry run: a forward on a large photo costs several blurs)."""
        for p, key in zip(self.params, self.keys):
            check_kernel_fits(p["kernel_size"], height, width, key, "kernel_size")

    def plan(self, height: int, width: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per level slot k: (taps (B, K_k), weights (B, 1, H, W)), float64. A sample with fewer levels
        than the batch's most has a delta with zero weight in the slots it lacks."""
        self.check_fits(height, width)
        levels = self.levels()
        stds = self.std_map(height, width)
        slots = max(len(lv) for lv in levels)
        plan = []
        for k in range(slots):
            taps, weights = [], []
            for b, (p, lv) in enumerate(zip(self.params, levels)):
                if k >= len(lv):
                    taps.append(torch.ones(1, dtype=torch.float64))
                    weights.append(torch.zeros_like(stds[b]))
                    continue
                taps.append(trimmed_taps(lv[k], p["kernel_size"]))
                weights.append(hat_weight(stds[b], lv, k))
            size = max(g.shape[-1] for g in taps)
            plan.append((torch.stack([F.pad(g, ((size - g.shape[-1]) // 2,) * 2) for g in taps]),
                         torch.stack(weights)))
        return plan

    def _plan_on(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cache = self.__dict__.setdefault("_plan_cache", {})
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in cache:
            cache[key] = [(g.to(device=x.device, dtype=x.dtype), w.to(device=x.device, dtype=x.dtype))
                          for g, w in self.plan(x.shape[-2], x.shape[-1])]
        return cache[key]

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        out = None
        for taps, w in self._plan_on(x01):
            term = w * blur_separable(x01, taps)
            out = term if out is None else out + term
        return out

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        self.check_input(y01)
        out = None
        for taps, w in self._plan_on(y01):
            term = blur_separable_adjoint(w * y01, taps)
            out = term if out is None else out + term
        return out


def hat_weight(stds: torch.Tensor, levels: list[float], k: int) -> torch.Tensor:
    """Weight of level k at each pixel: 1 at its std, falling linearly to 0 at the neighbouring levels'.

    The weights of all levels sum to 1 at every pixel (a partition of unity), and a pixel whose std
    lies between levels k and k+1 uses only those two."""
    w = torch.ones_like(stds)
    c = levels[k]
    if k > 0:
        a = levels[k - 1]
        w = torch.where(stds < c, ((stds - a) / (c - a)).clamp(0.0, 1.0), w)
    if k + 1 < len(levels):
        b = levels[k + 1]
        w = torch.where(stds > c, ((b - stds) / (b - c)).clamp(0.0, 1.0), w)
    return w
