"""Nonlinear blur: a differentiable camera model with per-sample motion or defocus kernels.

This stands in for the reference's nonlinear blur, the GOPRO-trained bkse `KernelWizard`
network (method §4), whose weights cannot be obtained here (docs/method.md §4). Like
real camera blur, it blurs in linear light and is nonlinear in the image:

    A(x) = response(exposure · (k ⋆ decode(x)))

* `decode`: the sRGB transfer curve (≈ gamma 2.2, with a linear toe so it is finite-slope at 0);
* `k`: the sample's kernel, drawn from its `seed` (`kernel_type` motion: a random smooth
  camera trajectory rasterized with bilinear splats; defocus: an anti-aliased disk), with
  extent size(t) = min_size + (max_size − min_size)·t pixels; one seed keeps its shape
  across t, so damage grows with severity;
* `response`: smooth sensor saturation 1 − softplus_β(1 − v) (≈ v below 1, → 1 above; a
  differentiable clip), then the sRGB encoding curve.

At t = 0 (with min_size 0) the kernel is a delta and A is the identity up to the
saturation round trip (< 1 % below white with the default sharpness). A is differentiable
everywhere, also outside [0,1] (the curves are linear near and below 0).

Adding an operator (e.g. a network such as KernelWizard): write one file here with a
subclass of `base.Operator` (set `name`, `label`, `linear`, `defaults`; implement `validate`
with `check_common` + `fill_defaults`, and `forward(x01)` on (B,3,H,W) in [0,1]; for a
linear family also the exact `adjoint`; override `example_params` when the defaults do not
fit small images), then add one line to `OPERATORS` in `__init__.py`.
A network operator loads its weights in `forward` lazily (e.g. from a path field in the
dict) and draws any per-sample latent code from a generator seeded with the dict's `seed`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.operators.gaussian_blur import blur_reflect, check_kernel_fits, stack_kernels

KERNEL_TYPES = ("motion", "defocus")


def srgb_decode(x: torch.Tensor) -> torch.Tensor:
    """sRGB → linear light; clamps inside each branch so neither branch's gradient is NaN."""
    lin = x / 12.92
    powr = ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4
    return torch.where(x <= 0.04045, lin, powr)


def srgb_encode(v: torch.Tensor) -> torch.Tensor:
    """Linear light → sRGB (the inverse of `srgb_decode`)."""
    lin = v * 12.92
    powr = 1.055 * v.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055
    return torch.where(v <= 0.0031308, lin, powr)


def soft_saturate(v: torch.Tensor, sharpness: torch.Tensor | float) -> torch.Tensor:
    """Smooth sensor clipping at 1: 1 − softplus_β(1 − v), with softplus_β(z) = softplus(β·z)/β."""
    return 1.0 - F.softplus(sharpness * (1.0 - v)) / sharpness


def motion_kernel(seed: int, size: float) -> torch.Tensor:
    """A normalized (K, K) kernel from a random smooth trajectory whose largest span is `size` px."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    n = 256
    s = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    theta0 = 2 * math.pi * torch.rand((), generator=gen, dtype=torch.float64)
    bend = torch.randn(2, generator=gen, dtype=torch.float64)          # heading drift: linear + quadratic
    theta = theta0 + 1.5 * bend[0] * s + 1.0 * bend[1] * s ** 2
    wobble = torch.randn(4, generator=gen, dtype=torch.float64)         # smooth speed changes (shake)
    speed = 1.0 + 0.4 * torch.tanh(wobble[0] * torch.sin(math.pi * s) + wobble[1] * torch.sin(2 * math.pi * s)
                                   + wobble[2] * torch.cos(3 * math.pi * s) + wobble[3] * s)
    steps = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1) * speed[:, None]
    return rasterize_path(torch.cumsum(steps, dim=0), size)


def rasterize_path(pts: torch.Tensor, size: float) -> torch.Tensor:
    """A normalized (K, K) kernel: the path `pts` (N, 2) (x, y), centred and scaled so its largest span is
    `size` px, splatted bilinearly (equal time per point, so slow stretches of the path weigh more)."""
    pts = pts - pts.mean(0)
    span = torch.cdist(pts, pts).max()
    pts = pts * (size / span) if size > 0 and span > 0 else torch.zeros_like(pts)
    radius = int(math.ceil(float(pts.abs().max()))) + 1
    k = 2 * radius + 1
    kernel = torch.zeros(k, k, dtype=torch.float64)
    c = pts + radius                                                   # (x, y) in pixel coordinates
    i0 = c.floor()
    f = c - i0
    i0 = i0.long()
    for dx in (0, 1):
        for dy in (0, 1):
            w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1])
            kernel.index_put_((i0[:, 1] + dy, i0[:, 0] + dx), w, accumulate=True)
    return kernel / kernel.sum()


def trim_zero_border(kernel: torch.Tensor) -> torch.Tensor:
    """The kernel without all-zero outer rings: the same blur with less padding, so a small kernel (a delta at
    size 0 is 3×3 before trimming) fits a 1- or 2-pixel-wide image."""
    while kernel.shape[-1] > 1 and not (kernel[[0, -1], :].any() or kernel[:, [0, -1]].any()):
        kernel = kernel[1:-1, 1:-1]
    return kernel


def check_extent(params: dict, key: str) -> dict:
    """The `min_size` / `max_size` fields of a family whose kernel extent grows with severity."""
    params["min_size"] = finite_number(params["min_size"], "min_size", key, 0.0, 1024.0)
    params["max_size"] = finite_number(params["max_size"], "max_size", key, 0.0, 1024.0)
    if params["max_size"] < params["min_size"]:
        raise ValueError(f"sample {key}: max_size={params['max_size']} < min_size={params['min_size']}")
    return params


def extent(params: dict) -> float:
    """The kernel's extent in px at the sample's severity: min_size + (max_size − min_size)·t."""
    return params["min_size"] + (params["max_size"] - params["min_size"]) * params["severity"]


def fitted_kernels(op: Operator, height: int, width: int, make) -> torch.Tensor:
    """(B, K, K) kernels `make(params)` per sample, trimmed, checked to fit the image (reflect padding),
    flipped for correlation and zero-padded (centred) to one size."""
    ks = []
    for p, key in zip(op.params, op.keys):
        k = trim_zero_border(make(p))
        check_kernel_fits(k.shape[-1], height, width, key, "max_size")
        ks.append(k.flip(0, 1))
    return stack_kernels(ks)


def defocus_kernel(size: float) -> torch.Tensor:
    """A normalized anti-aliased disk of diameter `size` px (a delta at 0)."""
    r = size / 2.0
    radius = int(math.ceil(r)) + 1
    i = torch.arange(-radius, radius + 1, dtype=torch.float64)
    dist = torch.sqrt(i[:, None] ** 2 + i[None, :] ** 2)
    kernel = (r + 0.5 - dist).clamp(0.0, 1.0)
    return kernel / kernel.sum()


class NonlinearBlur(Operator):
    """Blur in linear light + camera response + smooth saturation; differentiable, not linear."""

    name = "nonlinear_blur"
    label = "nonlinear blur"
    linear = False
    defaults = {"kernel_type": "motion", "min_size": 0.0, "max_size": 21.0,
                "exposure": 1.0, "saturation_sharpness": 40.0}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """Motion, defocus and a small extent; max_size is capped where the default could overflow the image.

        A trajectory of extent s has points within s of its mean, so its kernel is at most 2·⌈s⌉ + 3 wide
        (a disk's is narrower); reflect padding needs < 2·min(H, W), which every s ≤ min(H, W) − 2 gives."""
        cap = float(max(0, min(height, width) - 2))
        fit = {} if cls.defaults["max_size"] <= cap else {"max_size": cap}
        return [fit, {"kernel_type": "defocus", **fit}, {"max_size": min(7.0, cap)}]

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        if params["kernel_type"] not in KERNEL_TYPES:
            raise ValueError(f"sample {key}: kernel_type must be one of {KERNEL_TYPES}, got {params['kernel_type']!r}")
        params = check_extent(params, key)
        params["exposure"] = finite_number(params["exposure"], "exposure", key, 1e-3, 1e3)
        params["saturation_sharpness"] = finite_number(params["saturation_sharpness"], "saturation_sharpness",
                                                       key, 1.0, 1e4)
        return params

    size = staticmethod(extent)

    def kernels(self, height: int, width: int) -> torch.Tensor:
        """(B, K, K) float64 convolution kernels (already flipped for correlation), zero-padded to one size."""
        return fitted_kernels(self, height, width, lambda p: motion_kernel(p["seed"], extent(p))
                              if p["kernel_type"] == "motion" else defocus_kernel(extent(p)))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        shape = (-1, 1, 1, 1)
        exposure = torch.tensor([p["exposure"] for p in self.params], dtype=x01.dtype, device=x01.device)
        beta = torch.tensor([p["saturation_sharpness"] for p in self.params], dtype=x01.dtype, device=x01.device)
        v = blur_reflect(srgb_decode(x01), self.for_size(x01, self.kernels)) * exposure.view(shape)
        return srgb_encode(soft_saturate(v, beta.view(shape)))
