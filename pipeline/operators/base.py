"""The operator contract: a batch of per-sample degradations of one family.

Operators act on images in [0,1], shape (B, 3, H, W), because measurements are formed in
[0,1] and only then mapped to [−1,1] (method §1): `y01 = A(x01) + n`, `y = 2·y01 − 1`.
Every sample carries its own parameters as a small JSON dict (`to_dicts` / `from_dicts`),
so a shard sample can carry its operator and a solver can rebuild the true operator.

Common dict fields: `operator` (family name), `severity` t ∈ [0,1], `noise_sigma` (std of
the additive Gaussian noise in [0,1] units), `seed` (int; drives masks and kernels).
"""
from __future__ import annotations

from typing import ClassVar, Sequence

import torch

from pipeline.io.samples import encode_png
from pipeline.sampling.seeding import randn_per_sample


class Operator:
    """Batched, per-sample forward model A; linear families also give the exact adjoint Aᵀ."""

    name: ClassVar[str] = "operator"
    #: human-readable family name for reports ("Gaussian blur"); every registered family sets its own
    label: ClassVar[str] = ""
    linear: ClassVar[bool] = False
    # A family whose tuned solver settings this one borrows while the settings table has no
    # entry of its own (a close relative: varying_blur takes gaussian_blur's).
    settings_of: ClassVar[str | None] = None
    #: the family's own dict fields and their defaults (filled in by `fill_defaults`)
    defaults: ClassVar[dict] = {}
    #: a block codec's family: its rows add the blocking metric across the 8-px grid (pipeline/quality/blocking.py)
    blocky: ClassVar[bool] = False

    def __init__(self, params: Sequence[dict], keys: Sequence[str] | None = None):
        self.keys = list(keys) if keys is not None else [f"#{i}" for i in range(len(params))]
        if len(self.keys) != len(params):
            raise ValueError(f"{self.name}: {len(params)} parameter dicts for {len(self.keys)} keys")
        self.params = [self.validate(dict(p), k) for p, k in zip(params, self.keys)]

    # --- per-family hooks -------------------------------------------------------------
    def validate(self, params: dict, key: str) -> dict:
        """Check one sample's dict and fill defaults; raise ValueError naming the key."""
        return check_common(params, key, self.name)

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not linear: it has no adjoint")

    # --- shared behaviour -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.params)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return self.forward(x01)

    @classmethod
    def params_for(cls, severity: float, noise_sigma: float = 0.0, seed: int = 0, **overrides) -> dict:
        """One sample's validated dict (defaults filled), as the degradation job stores it."""
        params = {"operator": cls.name, "severity": severity, "noise_sigma": noise_sigma, "seed": seed, **overrides}
        return cls([params], ["params_for"]).params[0]

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        """Family fields (beside severity, noise, seed) valid on every height×width image at any severity and
        seed, so the registry-driven tests and fixtures cover a new family without a hand-kept list.

        The first entry is the cheap one fixtures use; the others vary the family's options, so a batch of
        them mixes settings. The defaults alone ([{}]) suffice when they fit small images."""
        return [{}]

    @classmethod
    def from_dicts(cls, params: Sequence[dict], keys: Sequence[str] | None = None) -> "Operator":
        return cls(params, keys)

    def to_dicts(self) -> list[dict]:
        return [dict(p) for p in self.params]

    def subset(self, index: Sequence[int] | torch.Tensor) -> "Operator":
        """The operator restricted to some rows of the batch (in the given order)."""
        idx = [int(i) for i in (index.tolist() if isinstance(index, torch.Tensor) else index)]
        return type(self)([self.params[i] for i in idx], [self.keys[i] for i in idx])

    def check_fits(self, height: int, width: int) -> None:
        """Raise ValueError (naming the keys) when these parameters cannot act on an image of
        this size; a dry forward on zeros, so every family's own shape rules are applied."""
        with torch.no_grad():
            try:
                self.forward(torch.zeros(len(self), 3, height, width))
            except (RuntimeError, ValueError) as exc:
                msg = str(exc)
                raise ValueError(msg if any(k in msg for k in self.keys) else
                                 f"sample(s) {self.keys}: parameters do not fit a {height}×{width} image: {msg}") from exc

    def check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[0] != len(self):
            raise ValueError(f"{self.name}: expected a batch of {len(self)} images (B,C,H,W), got shape "
                             f"{tuple(x.shape)} for keys {self.keys}")
        bad = (~torch.isfinite(x.detach())).flatten(1).any(1)
        if bool(bad.any()):
            raise ValueError(f"{self.name}: non-finite input for keys "
                             f"{[k for k, b in zip(self.keys, bad.tolist()) if b]}")

    def for_size(self, x: torch.Tensor, build) -> torch.Tensor:
        """`build(height, width)` (kernels, taps) in x's device and dtype, built once per image size, device
        and dtype: a family whose kernels depend on the image size builds them on first use."""
        cache = self.__dict__.setdefault("_size_cache", {})
        key = (x.shape[-2], x.shape[-1], x.device, x.dtype)
        if key not in cache:
            cache[key] = build(x.shape[-2], x.shape[-1]).to(device=x.device, dtype=x.dtype)
        return cache[key]

    @classmethod
    def for_image(cls, params: dict, height: int, width: int) -> dict:
        """A degradation's dict for a clean image of this size: unchanged, except where the archive image
        is smaller and the dict records the clean size (`downsample`)."""
        return params

    def restored_size(self, height: int, width: int) -> tuple[int, int]:
        """The size a measurement of height×width restores to (one sample); `downsample`'s is larger."""
        return height, width

    def lift(self, y01: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The measurement as the pipeline holds it at the restored size (identity unless the sizes differ)."""
        return y01

    def observing(self, y01: torch.Tensor) -> "Operator":
        """Bind the batch's measurements in [0,1], for a family whose operator reads them (inpainting's
        `zeros` mask); the others ignore them."""
        return self

    # --- what an archive holds ---------------------------------------------------------
    def noisy(self, clean01: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """clean01 + noise_sigma_i·n_i, n_i ~ N(0, I) from gens[i] (float32 draws whatever the dtype)."""
        if len(gens) != len(self):
            raise ValueError(f"{self.name}: {len(gens)} generators for {len(self)} samples (keys {self.keys})")
        sig = self.noise_sigmas.to(device=clean01.device, dtype=clean01.dtype).view(-1, 1, 1, 1)
        noise = randn_per_sample(tuple(clean01.shape[1:]), list(gens), dtype=torch.float32, device=clean01.device)
        return clean01 + sig * noise.to(clean01.dtype)

    def measurement(self, x01: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """y01 = A(x01) + noise, not clipped. A family whose measurement is a real file's (JPEG) overrides it."""
        return self.noisy(self.forward(x01), gens)

    def archive_files(self, x01: torch.Tensor, gens: Sequence[torch.Generator]) -> list[tuple[str, bytes]]:
        """(extension, bytes) of the degraded image an archive holds per sample: an 8-bit PNG of the clipped
        measurement; JPEG writes its real `.jpg` file."""
        y01 = self.measurement(x01, gens).clamp(0.0, 1.0)
        return [("png", encode_png(y)) for y in y01]

    def forward_pm(self, x: torch.Tensor) -> torch.Tensor:
        """Â(x) = 2·A((x+1)/2) − 1: the operator in the models' [−1,1] domain (method §5)."""
        return 2.0 * self.forward((x + 1.0) / 2.0) - 1.0

    def adjoint_pm(self, v: torch.Tensor) -> torch.Tensor:
        """Âᵀ(v) = 2·Aᵀ((v+1)/2) − 1, the transpose PSLD uses (method §5.3)."""
        return 2.0 * self.adjoint((v + 1.0) / 2.0) - 1.0

    @property
    def noise_sigmas(self) -> torch.Tensor:
        return torch.tensor([p["noise_sigma"] for p in self.params], dtype=torch.float64)


def check_common(params: dict, key: str, family: str) -> dict:
    """Validate the fields every operator dict shares."""
    if params.get("operator", family) != family:
        raise ValueError(f"sample {key}: operator {params.get('operator')!r} given to the {family} operator")
    params["operator"] = family
    for field, lo, hi in (("severity", 0.0, 1.0), ("noise_sigma", 0.0, 1.0)):
        if field not in params:
            if field == "noise_sigma":
                params[field] = 0.0
                continue
            raise ValueError(f"sample {key}: {family} parameters lack {field!r}")
        params[field] = finite_number(params[field], field, key, lo, hi)
    seed = params.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"sample {key}: seed must be a non-negative integer, got {seed!r}")
    params["seed"] = seed
    return params


def fill_defaults(params: dict, key: str, family: str, defaults: dict) -> dict:
    """Reject unknown fields (typos would silently fall back to defaults) and fill the family's defaults."""
    known = {"operator", "severity", "noise_sigma", "seed", *defaults}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"sample {key}: unknown {family} fields {unknown}")
    for field, value in defaults.items():
        params.setdefault(field, value)
    return params


def finite_number(value, field: str, key: str, lo: float | None = None, hi: float | None = None) -> float:
    """A float within [lo, hi]; anything else is a ValueError naming the sample key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"sample {key}: {field} must be a number, got {value!r}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"sample {key}: {field} is not finite ({value!r})")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"sample {key}: {field}={v} outside [{lo}, {hi}]")
    return v
