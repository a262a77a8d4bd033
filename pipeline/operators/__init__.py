"""Degradation operators: one file per family, registered here.

Adding a family = one file with a `base.Operator` subclass + one line in `OPERATORS`
(see the `nonlinear_blur` module docstring); every list of families (default severity
encoders, model report, test fixtures) derives from `OPERATORS`. `build_operator` rebuilds a
batch's operator from the per-sample dicts a shard sample carries.
"""
from __future__ import annotations

from typing import Sequence

from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.operators.downsample import Downsample
from pipeline.operators.gaussian_blur import GaussianBlur
from pipeline.operators.inpainting import Inpainting
from pipeline.operators.jpeg import Jpeg
from pipeline.operators.motion_blur import MotionBlur
from pipeline.operators.noise import NoiseLevel, measure, to_model_domain, to_unit_domain
from pipeline.operators.nonlinear_blur import NonlinearBlur
from pipeline.operators.varying_blur import VaryingBlur

OPERATORS: dict[str, type[Operator]] = {
    "downsample": Downsample,
    "gaussian_blur": GaussianBlur,
    "inpainting": Inpainting,
    "jpeg": Jpeg,
    "motion_blur": MotionBlur,
    "nonlinear_blur": NonlinearBlur,
    "varying_blur": VaryingBlur,
}


def build_operator(dicts: Sequence[dict], keys: Sequence[str] | None = None) -> Operator:
    """The batch operator for per-sample dicts of one family; ValueError naming the keys otherwise."""
    keys = list(keys) if keys is not None else [f"#{i}" for i in range(len(dicts))]
    if len(keys) != len(dicts):
        raise ValueError(f"build_operator: {len(dicts)} parameter dicts for {len(keys)} keys")
    if not dicts:
        raise ValueError("build_operator: empty batch")
    names = [d.get("operator") if isinstance(d, dict) else None for d in dicts]
    unknown = [k for k, n in zip(keys, names) if n not in OPERATORS]
    if unknown:
        raise ValueError(f"build_operator: unknown or missing operator for keys {unknown} "
                         f"(known: {sorted(OPERATORS)})")
    if len(set(names)) > 1:
        by_family = {n: [k for k, m in zip(keys, names) if m == n] for n in dict.fromkeys(names)}
        raise ValueError(f"build_operator: one family per batch, got {by_family}")
    return OPERATORS[names[0]].from_dicts(dicts, keys)


__all__ = [
    "OPERATORS", "build_operator", "Operator", "Downsample", "GaussianBlur", "Inpainting", "Jpeg", "MotionBlur", "NonlinearBlur", "VaryingBlur",
    "NoiseLevel", "measure", "to_model_domain", "to_unit_domain",
    "check_common", "fill_defaults", "finite_number",
]
