"""Random-pixel inpainting (method §4): A = diag(mask), so A is self-adjoint.

Masked fraction frac(t) = frac_min + (frac_max − frac_min)·t; the defaults (0.0, 0.8) give
the reference's keep rule u < 0.2 + 0.8·(1−t), i.e. 80 % missing at t = 1.

Each sample draws a keep field u ~ U[0,1]^{H×W} (shared by the 3 channels) from a
torch.Generator seeded with its dict's `seed`, and keeps a pixel iff u ≥ frac(t). One seed
thus gives nested masks across t, which keeps severity monotone. docs/method.md §4 chose per-sample
masks; `shared_mask: true` reproduces the reference protocol, where one field drawn from
seed 0 serves every image. The field is drawn on the CPU (float32) and then moved, so a
mask is the same on every device. Masked pixels are 0 in [0,1], hence −1 in [−1,1].

`mask: "zeros"` is a real archive's mask (issue 28): the pixels that are exactly zero in every
channel of the measurement are the missing ones. A blind job turns a `<key>.mask.png` member or
an alpha channel into this rule by zeroing the pixels they mark (docs/blind-parameters.md), and
binds the measurement to the operator with `observing(y01)`; on a photo's padded canvas the map
is mirrored as the measurement is (`reflect_pad`). There `severity` only reports the missing fraction.
"""
from __future__ import annotations

from functools import lru_cache

import torch

from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.sampling.tiles import reflect_pad

MASK_RULES = ("random", "zeros")


@lru_cache(maxsize=32)
def _keep_field_cpu(seed: int, height: int, width: int) -> torch.Tensor:
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return torch.rand((height, width), generator=gen, dtype=torch.float32)


@lru_cache(maxsize=32)
def _keep_field_on(seed: int, height: int, width: int, device: str) -> torch.Tensor:
    return _keep_field_cpu(seed, height, width).to(device)


def keep_field(seed: int, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The cached field u (H, W) for a seed; do not modify the returned tensor."""
    return _keep_field_on(int(seed), int(height), int(width), str(torch.device(device)))


class Inpainting(Operator):
    """Per-sample random-pixel mask; forward = adjoint = x·mask."""

    name = "inpainting"
    label = "random inpainting"
    linear = True
    defaults = {"frac_min": 0.0, "frac_max": 0.8, "shared_mask": False, "mask": "random"}

    def __init__(self, params, keys=None):
        super().__init__(params, keys)
        self._observed: torch.Tensor | None = None

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """Per-sample masks, the shared mask, and a narrower masked fraction (any image size fits)."""
        return [{}, {"shared_mask": True}, {"frac_min": 0.1, "frac_max": 0.5}]

    def observing(self, y01: torch.Tensor) -> "Inpainting":
        """Bind the measurements (B,3,H,W) in [0,1]: the `zeros` rule reads its mask from them."""
        self._observed = (y01.detach() != 0).any(dim=1, keepdim=True).cpu()
        return self

    def subset(self, index) -> "Inpainting":
        out = super().subset(index)
        if self._observed is not None:
            idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
            out._observed = self._observed[idx]
        return out

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        params["frac_min"] = finite_number(params["frac_min"], "frac_min", key, 0.0, 1.0)
        params["frac_max"] = finite_number(params["frac_max"], "frac_max", key, 0.0, 1.0)
        if params["frac_max"] < params["frac_min"]:
            raise ValueError(f"sample {key}: frac_max={params['frac_max']} < frac_min={params['frac_min']}")
        if not isinstance(params["shared_mask"], bool):
            raise ValueError(f"sample {key}: shared_mask must be true or false, got {params['shared_mask']!r}")
        if params["mask"] not in MASK_RULES:
            raise ValueError(f"sample {key}: mask must be one of {MASK_RULES}, got {params['mask']!r}")
        return params

    @staticmethod
    def frac(params: dict) -> float:
        return params["frac_min"] + (params["frac_max"] - params["frac_min"]) * params["severity"]

    def masks(self, height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(B, 1, H, W) boolean keep masks."""
        rows = []
        for i, p in enumerate(self.params):
            if p["mask"] == "zeros":
                if self._observed is None:
                    raise ValueError(f"sample {self.keys[i]}: mask 'zeros' reads the measurement; bind it with "
                                     "observing(y01) first")
                rows.append(reflect_pad(self._observed[i, 0], height, width).to(device))
                continue
            u = keep_field(0 if p["shared_mask"] else p["seed"], height, width, device)
            rows.append(u >= self.frac(p))
        return torch.stack(rows).unsqueeze(1)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        return x01 * self.masks(x01.shape[-2], x01.shape[-1], x01.device).to(x01.dtype)

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        return self.forward(y01)
