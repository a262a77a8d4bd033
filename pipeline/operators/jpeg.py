"""JPEG compression (issue 28): the measurement is a real JPEG file; guidance goes through a differentiable copy.

Quality q(t) = round(q_max − (q_max − q_min)·t), defaults 50 → 5, or the dict's own `quality`
(what a blind job reads exactly from a file's quantisation tables, `pipeline.io.jpeg_tables`). Chroma is
subsampled 4:2:0, as PIL's encoder does by default, or kept whole (`subsampling: "4:4:4"`).

* The measurement (`measurement`, `archive_files`) is libjpeg's, through PIL: the clean image plus
  the sample's noise, rounded to 8 bits, encoded at quality q with PIL's defaults and decoded. A
  degraded archive stores that file itself as `<key>.jpg`; it is never re-encoded.
* The forward model A (`forward`) is our differentiable copy of the same codec: JFIF RGB→YCbCr,
  edge-replicated padding to the 16-px MCU, 2×2 mean chroma subsampling, the orthonormal 8×8
  DCT (the transform the IJG tables are defined for), quantisation by the IJG-scaled tables with
  straight-through rounding (forward value exact, gradient the identity), the inverse DCT,
  triangle-filter chroma upsampling (libjpeg's "fancy" upsampling is this 3/4–1/4 filter) and
  the YCbCr→RGB map with straight-through rounding to 8 bits. Where the restored image's own JPEG
  equals the measurement, the data term is zero and the prior is free: that is what lets the
  solver remove blocking the measurement cannot tell apart from detail.
  How far it is from libjpeg on our crops: docs/method.md §4 (measured by tests/operators/test_jpeg.py).
It is not linear: it has no adjoint, so PSLD (whose gluing term uses Aᵀ) does not apply.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pipeline.io.jpeg_tables import CHROMA, LUMA, ijg_table
from pipeline.operators.base import Operator, check_common, fill_defaults

SUBSAMPLING = ("4:2:0", "4:4:4")


def _dct_matrix() -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64)
    m = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * math.sqrt(2 / 8)
    m[0] /= math.sqrt(2)
    return m


DCT = _dct_matrix()
TO_YCC = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                      dtype=torch.float64)
TO_RGB = torch.linalg.inv(TO_YCC)
CENTRE = torch.tensor([0.0, 128.0, 128.0], dtype=torch.float64)


def _st_round(v: torch.Tensor) -> torch.Tensor:
    """Rounded value, identity gradient."""
    return v + (torch.round(v) - v).detach()


def _blocks(p: torch.Tensor) -> torch.Tensor:
    b, c, h, w = p.shape
    return p.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)


def _unblocks(q: torch.Tensor) -> torch.Tensor:
    b, c, hb, wb = q.shape[:4]
    return q.permute(0, 1, 2, 4, 3, 5).reshape(b, c, hb * 8, wb * 8)


def _quantise(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Level-shifted DCT, quantisation by `table` (B, 1, 1, 1, 8, 8), dequantisation, inverse DCT."""
    d = DCT.to(plane)
    coef = d @ _blocks(plane - 128.0) @ d.T
    coef = _st_round(coef / table) * table
    return _unblocks(d.T @ coef @ d) + 128.0


class Jpeg(Operator):
    """Per-sample JPEG quality; `forward` is the differentiable codec, `measurement` libjpeg's."""

    name = "jpeg"
    label = "JPEG compression"
    linear = False
    blocky = True
    settings_of = "gaussian_blur"   # where the table has no entry of its own (other solvers, baselines)
    defaults = {"q_min": 5, "q_max": 50, "quality": None, "subsampling": "4:2:0"}

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """The default range, an explicit quality (a blind job's reading of a file) and a milder range."""
        return [{}, {"quality": 30, "subsampling": "4:4:4"}, {"q_min": 20, "q_max": 90}]

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        for field in ("q_min", "q_max") + (("quality",) if params["quality"] is not None else ()):
            v = params[field]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or not 1 <= v <= 100:
                raise ValueError(f"sample {key}: {field} must be an integer quality in 1..100, got {v!r}")
            params[field] = int(v)
        if params["subsampling"] not in SUBSAMPLING:
            raise ValueError(f"sample {key}: subsampling must be one of {SUBSAMPLING}, got {params['subsampling']!r}")
        if params["q_min"] > params["q_max"]:
            raise ValueError(f"sample {key}: q_min={params['q_min']} > q_max={params['q_max']}")
        if params["quality"] is None:
            params["quality"] = round(params["q_max"] - (params["q_max"] - params["q_min"]) * params["severity"])
        return params

    @staticmethod
    def severity_of(quality: int, q_min: int = 5, q_max: int = 50) -> float:
        """The severity a quality stands for on the family's scale (clipped to [0, 1])."""
        return min(max((q_max - quality) / (q_max - q_min), 0.0), 1.0) if q_max > q_min else 1.0

    def tables(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample luminance and chrominance tables, shaped (B, 1, 1, 1, 8, 8)."""
        def stack(base):
            t = torch.tensor([ijg_table(base, p["quality"]) for p in self.params], dtype=dtype, device=device)
            return t.view(-1, 1, 1, 1, 8, 8)
        return stack(LUMA), stack(CHROMA)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        h, w = x01.shape[-2:]
        ycc = torch.einsum("ij,bjhw->bihw", TO_YCC.to(x01), x01 * 255.0) + CENTRE.to(x01).view(1, 3, 1, 1)
        ph, pw = -h % 16, -w % 16
        ycc = F.pad(ycc, (0, pw, 0, ph), mode="replicate")
        luma_t, chroma_t = self.tables(x01.device, x01.dtype)
        y = _quantise(ycc[:, :1], luma_t)
        half = torch.tensor([p["subsampling"] == "4:2:0" for p in self.params], device=x01.device).view(-1, 1, 1, 1)
        c = ycc[:, 1:]
        whole = None if bool(half.all()) else _quantise(c, chroma_t)
        sub = None if not bool(half.any()) else F.interpolate(_quantise(F.avg_pool2d(c, 2), chroma_t),
                                                              scale_factor=2, mode="bilinear", align_corners=False)
        c = whole if sub is None else sub if whole is None else torch.where(half, sub, whole)
        ycc = torch.cat([y, c], dim=1)[..., :h, :w] - CENTRE.to(x01).view(1, 3, 1, 1)
        rgb = torch.einsum("ij,bjhw->bihw", TO_RGB.to(x01), ycc)
        return _st_round(rgb).clamp(0.0, 255.0) / 255.0

    # --- the real codec ---------------------------------------------------------------
    def encode(self, noisy01: torch.Tensor) -> list[bytes]:
        """libjpeg (PIL, 4:2:0) files of the 8-bit rounding of each image in [0, 1]."""
        out = []
        for img, p in zip(noisy01.detach().float().cpu().clamp(0, 1), self.params):
            arr = (img * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(arr, "RGB").save(buf, "JPEG", quality=p["quality"], subsampling=p["subsampling"])
            out.append(buf.getvalue())
        return out

    def measurement(self, x01: torch.Tensor, gens) -> torch.Tensor:
        """libjpeg's decoded file of the noisy clean image, in x01's device and dtype."""
        files = self.encode(self.noisy(x01, gens))
        dec = [torch.from_numpy(np.asarray(Image.open(io.BytesIO(f)).convert("RGB"), dtype=np.float32).copy())
               for f in files]
        return (torch.stack(dec).permute(0, 3, 1, 2) / 255.0).to(x01)

    def archive_files(self, x01: torch.Tensor, gens) -> list[tuple[str, bytes]]:
        return [("jpg", f) for f in self.encode(self.noisy(x01, gens))]

