"""The severity stage's half of blind parameters: a family's severity from its trained estimator.

Why here: the estimator is a model, and models load in the stages that hold them (the read stage
has none). The read stage (`pipeline.execution.blind_parameters`) marks what is `pending`; this
fills it before the severity encoder runs, so σ̂², the start step and the solver all see the
estimated operator. The row's `estimated` column records t̂, its standard deviation (the
estimator's own, `pipeline.models.parameter_estimator.estimate_image`) and, for Gaussian blur,
the kernel width in pixels that t̂ stands for. A varying blur's four corners are fitted to the
Gaussian estimator's reading of windows spread over the image (`estimate_corners`); the row
records them and their standard deviations.
"""
from __future__ import annotations

import torch

from pipeline.models.model_store import fingerprint, load_model
from pipeline.operators import build_operator
from pipeline.models.parameter_estimator import ESTIMATOR_OF, estimate_corners, estimate_image


class ParameterEstimators:
    """Estimators by family, loaded on first use; `fill` completes the pending samples in place."""

    def __init__(self, urls: dict[str, str], device: torch.device, dtype: torch.dtype):
        self.urls, self.device, self.dtype = dict(urls), device, dtype
        self._models: dict[str, torch.nn.Module] = {}

    def model(self, family: str) -> torch.nn.Module:
        if family not in self._models:
            if family not in self.urls:
                raise ValueError(f"no parameter estimator for {family!r} (models.estimators names "
                                 f"{sorted(self.urls) or 'none'}); give the parameters per sample")
            model, meta = load_model(self.urls[family], device=self.device, dtype=self.dtype, return_meta=True)
            if meta.get("role") != "estimator" or meta.get("operator") != family:
                raise ValueError(f"{self.urls[family]} is not a parameter estimator for {family!r} "
                                 f"(role {meta.get('role')!r}, operator {meta.get('operator')!r})")
            self._models[family] = model.eval()
        return self._models[family]

    def fingerprints(self) -> dict[str, str]:
        return {fam: fingerprint(url) for fam, url in sorted(self.urls.items())}

    def fill(self, items: list) -> None:
        """Estimate every pending field of these `Prepared` samples (only `severity` is ever pending)."""
        for p in items:
            if not p.pending:
                continue
            family = p.params["operator"]
            model = self.model(ESTIMATOR_OF.get(family, family))
            if family == "varying_blur":
                corners, stds = estimate_corners(model, p.y)
                corners = [round(c, 6) for c in corners]
                found = {"severity": round(sum(corners) / 4, 8), "severity_corners": corners,
                         "severity_corners_std": [round(s, 6) for s in stds]}
                fields = {"severity": found["severity"], "severity_corners": corners}
            else:
                t, std = estimate_image(model, p.y)
                found = {"severity": round(t, 6), "severity_std": round(std, 6)}
                fields = {"severity": found["severity"]}
            params = build_operator([{**p.params, **fields}], [p.key]).to_dicts()[0]
            if family == "gaussian_blur":
                t = found["severity"]
                found["blur_std_px"] = round(params["std_min"] + (params["std_max"] - params["std_min"]) * t, 4)
            p.params, p.estimated, p.pending = params, {**(p.estimated or {}), **found}, ()
