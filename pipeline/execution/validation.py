"""Read-time validation: a decoded sample → measurement + true operator, or an error.

Runs in the read stage, before any model: it needs only the config, so a reader checks a
sample's operator parameters against its own image (a blur kernel wider than the image, an
unknown family, a family without a severity encoder) and a bad sample becomes one error row
instead of failing a solver batch later.
"""
from __future__ import annotations

import torch

from pipeline.execution.blind_parameters import fill_blind, is_blind
from pipeline.execution.config import RestoreConfig
from pipeline.io.samples import Sample, SampleError
from pipeline.models.whole_image import MIN_SIDE
from pipeline.operators import OPERATORS, build_operator
from pipeline.operators.noise import to_model_domain
from pipeline.quality.noise_level import NoiseUnknown, estimate_noise_sigma
from pipeline.restoration.items import Prepared


class SampleValidator:
    def __init__(self, cfg: RestoreConfig):
        self.default_operator = dict(cfg.input.operator) if cfg.input.operator else None
        self.noise = cfg.input.noise
        self.max_pixels = cfg.input.max_pixels
        self.families = set(cfg.models.severity) if cfg.flash.enabled else None

    def prepare(self, sample: Sample) -> Prepared:
        # the sample's json is its operator dict, plus optional lineage under "provenance"
        params = {k: v for k, v in sample.params.items() if k != "provenance"} if sample.params else None
        if not params or "operator" not in params:
            params = dict(self.default_operator) if self.default_operator else None
        if not params:
            raise SampleError("params", sample.key, f"no operator parameters (no {sample.key}.json and no "
                              "input.operator in the config)", sample.shard)
        family = params.get("operator")
        if family not in OPERATORS:
            raise SampleError("params", sample.key, f"unknown operator {family!r}; known {sorted(OPERATORS)}",
                              sample.shard)
        if self.families is not None and family not in self.families:
            raise SampleError("params", sample.key, f"no severity encoder configured for {family!r}",
                              sample.shard)
        image = sample.image01.to(torch.float32)
        estimated, pending = {}, ()
        if sample.missing is not None and not (family == "inpainting" and is_blind(params)):
            raise SampleError("mode", sample.key, f"sample {sample.key}: its {sample.missing_source} marks missing "
                              "pixels, which only a blind inpainting job reads", sample.shard)
        if is_blind(params):
            params, estimated, image, pending = fill_blind(params, sample, image)
        if "noise_sigma" not in params and self.noise is not None:
            if self.noise != "estimate":
                params["noise_sigma"] = float(self.noise)
            else:
                try:
                    params["noise_sigma"] = round(estimate_noise_sigma(image), 6)
                except NoiseUnknown as exc:
                    raise SampleError("noise", sample.key, f"sample {sample.key}: cannot estimate the noise level: "
                                      f"{exc}; give noise_sigma in {sample.key}.json or set input.noise",
                                      sample.shard) from None
                estimated["noise_sigma"] = params["noise_sigma"]
        try:
            op = build_operator([params], [sample.key])
            size = op.restored_size(*image.shape[-2:])
        except ValueError as exc:
            raise SampleError("params", sample.key, str(exc), sample.shard) from exc
        if size[0] * size[1] > self.max_pixels:
            raise SampleError("pixel_bomb", sample.key, f"restores to {size[0]}×{size[1]} = {size[0] * size[1]} "
                              f"pixels, limit input.max_pixels = {self.max_pixels}", sample.shard)
        try:
            image = op.lift(image.unsqueeze(0), size)[0]
            op.observing(image.unsqueeze(0)).check_fits(*size)
        except ValueError as exc:
            raise SampleError("params", sample.key, str(exc), sample.shard) from exc
        if sample.clean01 is not None and tuple(sample.clean01.shape[-2:]) != tuple(size):
            raise SampleError("size", sample.key, f"clean reference {tuple(sample.clean01.shape[-2:])} is not the "
                              f"restored size {tuple(size)} (H×W)", sample.shard)
        return Prepared(sample.key, sample.shard, to_model_domain(image), sample.clean01, op.to_dicts()[0],
                        sample.image_sha256, estimated or None, pending)


def read_limits(cfg: RestoreConfig) -> dict:
    """Read-time limits. Photos are restored at their own size, so any size with both sides
    ≥ MIN_SIDE (8 px, what the autoencoder's padding needs) up to `input.max_pixels` is taken,
    and a smaller one is a `size` error row before any compute; `input.expected_size`, when
    set, requires exactly that size instead."""
    size = cfg.input.expected_size
    blind = cfg.input.operator or {}
    return {"expected_size": None if size is None else (size, size), "min_side": MIN_SIDE,
            "max_pixels": cfg.input.max_pixels, "allow_convert": cfg.input.allow_convert,
            "alpha_masks": blind.get("operator") == "inpainting" and is_blind(blind)}
