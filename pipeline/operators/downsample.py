"""Downsampling (super-resolution): the archive holds a small copy; the restored image is `scale`× larger.

scale(t) = max_scale^t (defaults: 4^t, so t = ½ is ×2 and t = 1 is ×4), or the dict's own `scale`
(a job's `--scale`). The small copy is what `PIL.Image.resize(..., BICUBIC)` makes of the clean
image (anti-aliased: PIL widens the cubic kernel by the factor when it shrinks), or `filter:
area` (PIL's BOX, the mean over each source area). Its size is round(H / scale) × round(W / scale);
`size` records the clean image's H×W where it is known (degrade writes it), else the restored size
is round(h · scale) × round(w · scale).

Why the pipeline sees a lifted measurement: every stage works on images of the restored size (the
severity encoder reads y, the canvas is y's size, the metrics compare with the reference), so the
read stage lifts the small copy with the bicubic upsampler U (`lift`), and the operator is
A = U ∘ D, D the downsampler. Both are PIL's resampling, which is separable and linear: per axis a
matrix, taken from PIL by resizing an identity image (`resize_matrix`), so A's adjoint Dᵀ ∘ Uᵀ is
exact. The measurement noise is added to the small copy (n ~ N(0, σ²) per small pixel), before the
lift, as an archive's thumbnail carries it. `psnr_input` of a row is thus bicubic upsampling's:
the reference row the issue asks Flash to beat.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from pipeline.io.samples import encode_png
from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.sampling.seeding import randn_per_sample

FILTERS = {"bicubic": Image.Resampling.BICUBIC, "area": Image.Resampling.BOX}
MAX_SIDE = 1 << 16


@lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int, filter_name: str) -> torch.Tensor:
    eye = Image.fromarray(np.eye(n_in, dtype=np.float32), mode="F")
    out = np.asarray(eye.resize((n_out, n_in), FILTERS[filter_name]), dtype=np.float32)
    return torch.from_numpy(out.T.copy())


def resize_matrix(n_in: int, n_out: int, filter_name: str) -> torch.Tensor:
    """(n_out, n_in) float32: PIL's resampling of a line of n_in pixels to n_out (do not modify)."""
    return _matrix(int(n_in), int(n_out), filter_name)


def small_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return max(1, round(height / scale)), max(1, round(width / scale))


class Downsample(Operator):
    """Per-sample factor; forward = U(D(x)) at the restored size, `measurement` adds noise to D(x)."""

    name = "downsample"
    label = "downsampling (super-resolution)"
    linear = True
    settings_of = "gaussian_blur"   # where the table has no entry of its own (other solvers, baselines)
    defaults = {"max_scale": 4.0, "scale": None, "filter": "bicubic", "size": None}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """A range whose small copies keep 8 px a side (what a job reads; the default 4^t on 32 px and up),
        a fixed ×2 with the area filter, and a larger range."""
        fit = max(1.0, min(4.0, min(height, width) / 8))
        return [{"max_scale": fit}, {"scale": 2.0, "filter": "area"}, {"max_scale": 8.0}]

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        params["max_scale"] = finite_number(params["max_scale"], "max_scale", key, 1.0, 16.0)
        if params["scale"] is None:
            params["scale"] = round(params["max_scale"] ** params["severity"], 6)
        params["scale"] = finite_number(params["scale"], "scale", key, 1.0, 16.0)
        if params["filter"] not in FILTERS:
            raise ValueError(f"sample {key}: filter must be one of {sorted(FILTERS)}, got {params['filter']!r}")
        size = params["size"]
        if size is not None:
            if not (isinstance(size, list) and len(size) == 2 and all(
                    isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE for v in size)):
                raise ValueError(f"sample {key}: size must be [height, width] in pixels, got {size!r}")
        return params

    @classmethod
    def for_image(cls, params: dict, height: int, width: int) -> dict:
        return cls.params_for(**{**params, "size": [int(height), int(width)]})

    @staticmethod
    def severity_of(scale: float, max_scale: float = 4.0) -> float:
        return min(max(math.log(scale) / math.log(max_scale), 0.0), 1.0) if max_scale > 1 else 1.0

    # --- sizes and the lift ------------------------------------------------------------
    def restored_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a small copy of height×width restores to (one sample)."""
        p = self.params[0]
        size = tuple(p["size"]) if p["size"] is not None else (round(height * p["scale"]), round(width * p["scale"]))
        if small_size(*size, p["scale"]) != (height, width):
            raise ValueError(f"sample {self.keys[0]}: a {height}×{width} image is not the ×{p['scale']:g} copy of "
                             f"{size[0]}×{size[1]} (that would be {'×'.join(map(str, small_size(*size, p['scale'])))})")
        return size

    def lift(self, small01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """U: the bicubic upsampling of small images (B, 3, h, w) to `size` (all samples one scale)."""
        uh = resize_matrix(small01.shape[-2], size[0], "bicubic").to(small01)
        uw = resize_matrix(small01.shape[-1], size[1], "bicubic").to(small01)
        return uh @ small01 @ uw.T

    def _mats(self, i: int, height: int, width: int, like: torch.Tensor):
        p = self.params[i]
        h, w = small_size(height, width, p["scale"])
        cache = self.__dict__.setdefault("_mats_cache", {})
        key = (h, w, height, width, p["filter"], like.device, like.dtype)
        if key not in cache:
            cache[key] = tuple(m.to(device=like.device, dtype=like.dtype) for m in (
                resize_matrix(height, h, p["filter"]), resize_matrix(width, w, p["filter"]),
                resize_matrix(h, height, "bicubic"), resize_matrix(w, width, "bicubic")))
        return cache[key]

    def small(self, x01: torch.Tensor) -> list[torch.Tensor]:
        """D(x) per sample (sizes differ with the scale)."""
        self.check_input(x01)
        out = []
        for i in range(len(self)):
            dh, dw, _, _ = self._mats(i, *x01.shape[-2:], x01)
            out.append(dh @ x01[i] @ dw.T)
        return out

    def _upsampled(self, smalls: list[torch.Tensor], x01: torch.Tensor) -> torch.Tensor:
        """U of each sample's small image, back at x01's size."""
        rows = []
        for i, s in enumerate(smalls):
            _, _, uh, uw = self._mats(i, *x01.shape[-2:], x01)
            rows.append(uh @ s @ uw.T)
        return torch.stack(rows)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        return self._upsampled(self.small(x01), x01)

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        rows = []
        for i in range(len(self)):
            dh, dw, uh, uw = self._mats(i, *y01.shape[-2:], y01)
            rows.append(dh.T @ (uh.T @ y01[i] @ uw) @ dw)
        return torch.stack(rows)

    # --- what an archive holds ---------------------------------------------------------
    def noisy_small(self, x01: torch.Tensor, gens) -> list[torch.Tensor]:
        if len(gens) != len(self):
            raise ValueError(f"{self.name}: {len(gens)} generators for {len(self)} samples (keys {self.keys})")
        out = []
        for s, g, p in zip(self.small(x01), gens, self.params):
            n = randn_per_sample(tuple(s.shape), [g], dtype=torch.float32, device=s.device)[0]
            out.append(s + p["noise_sigma"] * n.to(s.dtype))
        return out

    def measurement(self, x01: torch.Tensor, gens) -> torch.Tensor:
        """U(D(x) + n): the small copy's noise, lifted to the restored size as the read stage lifts it."""
        return self._upsampled(self.noisy_small(x01, gens), x01)

    def archive_files(self, x01: torch.Tensor, gens) -> list[tuple[str, bytes]]:
        """The small copies as 8-bit PNGs (what a thumbnail archive holds)."""
        return [("png", encode_png(s.clamp(0.0, 1.0))) for s in self.noisy_small(x01, gens)]
