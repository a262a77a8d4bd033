"""Gaussian blur (method §4): depthwise, reflect-padded, per-sample kernel size and std.

std(t) = std_min + (std_max − std_min)·t (defaults 0.3 → 3.0, kernel 61, as the reference).
The kernel is the reference's: a normalized sampled Gaussian per axis (what
`scipy.ndimage.gaussian_filter(impulse, σ, truncate=6)` gives), outer product in 2-D.

The adjoint is exact (docs/method.md §4): a transposed convolution followed by the adjoint
of reflect padding, which folds each padded border back onto the pixels it copied. The
reference's fold is off by one (it is the adjoint of symmetric padding).

The Gaussian is separable, so the blur runs as two grouped 1-D passes (61 taps instead of
61², same result). Mixed kernel sizes in one batch share each pass: every kernel is
zero-padded (centred) to the batch's largest size and the image is reflect-padded by the
largest half-width. This is exact, because a kernel of half-width r only reads padded pixels
within r of the image, and those are the same for any reflect pad ≥ r.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number


def gaussian_kernel_1d(std: float, size: int) -> torch.Tensor:
    """Normalized sampled Gaussian of odd `size`, truncated at radius int(6·std + 0.5) like scipy."""
    r = size // 2
    radius = min(r, int(6.0 * std + 0.5))
    i = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (i / std) ** 2) * (i.abs() <= radius)
    return g / g.sum()


def stack_kernels(kernels: list[torch.Tensor]) -> torch.Tensor:
    """(B, K, K): odd square kernels zero-padded (centred) to the largest size K."""
    size = max(k.shape[-1] for k in kernels)
    out = []
    for k in kernels:
        p = (size - k.shape[-1]) // 2
        out.append(F.pad(k, (p, p, p, p)))
    return torch.stack(out)


def check_kernel_fits(size: int, height: int, width: int, key: str, field: str) -> None:
    """Reflect padding by (size−1)/2 needs size < 2·min(H, W)."""
    if size >= 2 * min(height, width):
        raise ValueError(f"sample {key}: {field}={size} gives a kernel too large for a {height}×{width} image "
                         f"(needs < {2 * min(height, width)})")


def _weight(kernels: torch.Tensor, channels: int, like: torch.Tensor) -> torch.Tensor:
    """(B, …) per-sample kernels → grouped-conv weight (B·C, 1, …) in like's dtype and device."""
    return kernels.to(device=like.device, dtype=like.dtype).repeat_interleave(channels, dim=0).unsqueeze(1)


def blur_reflect(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-sample depthwise correlation of x (B,C,H,W) with kernels (B,K,K), reflect padding, same size."""
    b, c, h, w = x.shape
    pad = kernels.shape[-1] // 2
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad else x
    out = F.conv2d(xp.reshape(1, b * c, h + 2 * pad, w + 2 * pad), _weight(kernels, c, x), groups=b * c)
    return out.reshape(b, c, h, w)


def _fold_reflect_1d(z: torch.Tensor, pad: int, dim: int) -> torch.Tensor:
    """Adjoint of 1-D reflect padding along `dim`: add each border, mirrored, onto the pixels it copied."""
    n = z.shape[dim] - 2 * pad
    core = z.narrow(dim, pad, n).clone()
    left = z.narrow(dim, 0, pad).flip(dim)          # padded index pad−j (j = 1..pad) copied x[j]
    right = z.narrow(dim, pad + n, pad).flip(dim)    # padded index pad+n−1+j copied x[n−1−j]
    core.narrow(dim, 1, pad).add_(left)
    core.narrow(dim, n - 1 - pad, pad).add_(right)
    return core


def blur_reflect_adjoint(y: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of `blur_reflect`: transposed grouped conv, then fold the reflect-padded border."""
    b, c, h, w = y.shape
    pad = kernels.shape[-1] // 2
    z = F.conv_transpose2d(y.reshape(1, b * c, h, w), _weight(kernels, c, y), groups=b * c)
    z = z.reshape(b, c, h + 2 * pad, w + 2 * pad)
    if pad:
        z = _fold_reflect_1d(z, pad, dim=3)
        z = _fold_reflect_1d(z, pad, dim=2)
    return z


def blur_separable(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """`blur_reflect` with kernels outer(g, g) given as taps g (B, K): two 1-D passes, K/2 times cheaper.

    Exact: reflect padding along H commutes with filtering along W, so pad+filter W, then pad+filter H
    equals the 2-D reflect pad followed by the 2-D correlation.
    """
    b, c, h, w = x.shape
    pad = taps.shape[-1] // 2
    weight = _weight(taps, c, x)                                      # (B·C, 1, K)
    z = F.pad(x, (pad, pad, 0, 0), mode="reflect") if pad else x
    z = F.conv2d(z.reshape(1, b * c, h, w + 2 * pad), weight.unsqueeze(2), groups=b * c)
    z = F.pad(z, (0, 0, pad, pad), mode="reflect") if pad else z
    z = F.conv2d(z, weight.unsqueeze(3), groups=b * c)
    return z.reshape(b, c, h, w)


def blur_separable_adjoint(y: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Exact adjoint of `blur_separable`: the two passes transposed, in reverse order."""
    b, c, h, w = y.shape
    pad = taps.shape[-1] // 2
    weight = _weight(taps, c, y)
    z = F.conv_transpose2d(y.reshape(1, b * c, h, w), weight.unsqueeze(3), groups=b * c)
    z = _fold_reflect_1d(z, pad, dim=2) if pad else z
    z = F.conv_transpose2d(z, weight.unsqueeze(2), groups=b * c)
    z = _fold_reflect_1d(z, pad, dim=3) if pad else z
    return z.reshape(b, c, h, w)


def check_odd_size(value, field: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % 2 == 0:
        raise ValueError(f"sample {key}: {field} must be a positive odd integer, got {value!r}")
    return value


class GaussianBlur(Operator):
    """Per-sample Gaussian blur; linear, with the exact adjoint of the reflect-padded convolution."""

    name = "gaussian_blur"
    label = "Gaussian blur"
    linear = True
    defaults = {"kernel_size": 61, "std_min": 0.3, "std_max": 3.0}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """A small kernel, the largest that fits, and the default 61 (or the next largest when it does not fit)."""
        widest = 2 * min(height, width) - 1          # reflect padding needs kernel_size < 2·min(H, W)
        default = {} if cls.defaults["kernel_size"] <= widest else {"kernel_size": max(1, widest - 2)}
        return [{"kernel_size": min(7, widest)}, {"kernel_size": min(cls.defaults["kernel_size"], widest)}, default]

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        params["kernel_size"] = check_odd_size(params["kernel_size"], "kernel_size", key)
        params["std_min"] = finite_number(params["std_min"], "std_min", key, 1e-6)
        params["std_max"] = finite_number(params["std_max"], "std_max", key, 1e-6)
        if params["std_max"] < params["std_min"]:
            raise ValueError(f"sample {key}: std_max={params['std_max']} < std_min={params['std_min']}")
        return params

    @staticmethod
    def std(params: dict) -> float:
        return params["std_min"] + (params["std_max"] - params["std_min"]) * params["severity"]

    @property
    def stds(self) -> torch.Tensor:
        return torch.tensor([self.std(p) for p in self.params], dtype=torch.float64)

    def taps(self, height: int, width: int) -> torch.Tensor:
        """(B, K) float64 1-D kernels g (the 2-D kernel is outer(g, g)), zero-padded to the batch's largest."""
        gs = []
        for p, key in zip(self.params, self.keys):
            check_kernel_fits(p["kernel_size"], height, width, key, "kernel_size")
            gs.append(gaussian_kernel_1d(self.std(p), p["kernel_size"]))
        size = max(g.shape[-1] for g in gs)
        return torch.stack([F.pad(g, ((size - g.shape[-1]) // 2,) * 2) for g in gs])

    def kernels(self, height: int, width: int) -> torch.Tensor:
        """(B, K, K) float64 2-D kernels."""
        g = self.taps(height, width)
        return g[:, :, None] * g[:, None, :]

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        return blur_separable(x01, self.for_size(x01, self.taps))

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        self.check_input(y01)
        return blur_separable_adjoint(y01, self.for_size(y01, self.taps))
