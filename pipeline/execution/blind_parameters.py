"""Blind parameters: a sample that names its family but not its damage (issue 28, docs/blind-parameters.md).

A real archive's owner knows "these scans are soft", not each image's kernel width. With
`input.operator: {operator: FAMILY}` (`restore --operator FAMILY`) and no `severity` in a
sample's parameters, the read stage fills what the image itself says, per family:

* gaussian_blur: the width is left to the severity stage, which runs the family's trained
  estimator (`models.estimators`, `pipeline.models.parameter_estimator`); until then the
  sample is checked at the widest kernel (t = 1).
* varying_blur: the same estimator, read on windows spread over the image, fits the four
  corners' severities (`estimate_corners`); checked at t = 1 until then.
* inpainting: the missing pixels, from a `<key>.mask.png` member (non-zero = missing), else the
  image's alpha channel (alpha 0 = missing), else the pixels that are exactly zero in every
  channel. The first two are written into the measurement as zeros, so one rule (`mask: zeros`)
  serves the solver; severity reports the missing fraction on the family's scale.
* downsample: the factor is the job's (`--scale`, input.operator.scale) or the json's, never guessed:
  a thumbnail does not say how large its original was.
* jpeg: the quality, read exactly from the file's quantisation tables (`pipeline.io.jpeg_tables`);
  a PNG cannot say what JPEG quality its pixels went through, so it is an error row.
* motion_blur, nonlinear_blur: a shake path or a random network's weights cannot be read from one
  image by anything we ship: an error row, never a guess.
A sample whose parameters give `severity` keeps them (mixed archives work).
"""
from __future__ import annotations

import torch

from pipeline.io.samples import Sample, SampleError
from pipeline.operators import OPERATORS

# Families whose missing severity the severity stage estimates with a trained model.
BY_MODEL = ("gaussian_blur", "varying_blur")
NOT_ESTIMABLE = {
    "motion_blur": "its shake path (a random curve) cannot be read from one blurred image by any estimator we ship",
    "nonlinear_blur": "its kernel is a random network's output; nothing recovers the network's seed from the image",
}


def is_blind(params: dict) -> bool:
    """Whether these parameters leave the damage to be estimated (a family without severity)."""
    return "severity" not in params


def unreadable(params: dict) -> str | None:
    """Why a blind sample of this family cannot be filled from its image alone; None where it can.
    The job's config check and the read stage both ask it, so one rule fails a job or a sample."""
    family = params["operator"]
    if family in NOT_ESTIMABLE:
        return f"{family} parameters cannot be estimated: {NOT_ESTIMABLE[family]}"
    if family == "downsample" and params.get("scale") is None:
        return "a small copy does not say how much larger it was; give the factor with --scale (input.operator.scale)"
    return None


def fill_blind(params: dict, sample: Sample, image: torch.Tensor) -> tuple[dict, dict, torch.Tensor, tuple]:
    """(params, estimated, image, pending): the parameters the image gives, what was estimated (the
    row's `estimated` column), the measurement (inpainting zeroes its missing pixels) and the fields
    the severity stage still has to estimate. SampleError naming the key where nothing can be read."""
    family, key = params["operator"], sample.key
    reason = unreadable(params)
    if reason:
        raise SampleError("params", key, f"sample {key}: {reason} (or give the parameters in {key}.json)", sample.shard)
    if family in BY_MODEL:
        return {**params, "severity": 1.0}, {}, image, ("severity",)
    if family == "inpainting":
        return _inpainting(params, sample, image)
    if family == "downsample":
        t = OPERATORS["downsample"].severity_of(float(params["scale"]), float(params.get("max_scale", 4.0)))
        return {**params, "severity": round(t, 6)}, {}, image, ()
    if family == "jpeg":
        found = sample.jpeg
        if found is None:
            raise SampleError("params", key, f"sample {key}: blind jpeg reads the quality from the JPEG file's "
                              "tables, but its degraded image is not a JPEG", sample.shard)
        if found["subsampling"] not in ("4:2:0", "4:4:4"):
            raise SampleError("params", key, f"sample {key}: JPEG chroma layout {found['subsampling']!r} is not "
                              "modelled (4:2:0 and 4:4:4 are)", sample.shard)
        q = found["quality"]
        filled = {**params, "quality": q, "subsampling": found["subsampling"],
                  "severity": round(OPERATORS["jpeg"].severity_of(q, params.get("q_min", 5), params.get("q_max", 50)), 6)}
        return filled, {"quality": q, "quality_exact": found["exact"], "subsampling": found["subsampling"]}, image, ()
    raise SampleError("params", key, f"sample {key}: no blind rule for {family!r}; give its parameters in "
                      f"{key}.json", sample.shard)


def _inpainting(params: dict, sample: Sample, image: torch.Tensor) -> tuple[dict, dict, torch.Tensor, tuple]:
    missing, source = sample.missing, sample.missing_source
    if missing is None:
        missing, source = (image == 0).all(dim=0), "zeros"
    else:
        image = image.masked_fill(missing.unsqueeze(0), 0.0)
    frac = float(missing.float().mean())
    scale = OPERATORS["inpainting"].params_for(0.0, **{k: v for k, v in params.items()
                                                        if k in ("frac_min", "frac_max")})
    lo, hi = scale["frac_min"], scale["frac_max"]
    t = min(max((frac - lo) / (hi - lo), 0.0), 1.0) if hi > lo else 1.0
    return ({**params, "severity": round(t, 6), "mask": "zeros"},
            {"mask": source, "missing_fraction": round(frac, 6)}, image, ())
