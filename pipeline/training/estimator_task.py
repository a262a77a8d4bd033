"""Training the blind parameter estimator (`pipeline.models.parameter_estimator`) of one family.

The same surface as the other tasks (`module`, `model`, `inputs`, `save`), so `fit` gives it EMA,
checkpoints and resume. Each row draws t ~ U[0,1], an operator seed and a noise σ ~ U[noise_sigma,
noise_sigma_max] (an archive's noise is unknown; the restore job estimates it separately), and the
measurement is rounded to 8 bits, as the PNG or JPEG a real archive holds. The estimator learns t
from y alone; the loss is the Gaussian NLL of t under its (t̂, variance).
"""
from __future__ import annotations

import torch
from torch import nn

from pipeline.models.model_store import save_model
from pipeline.models.parameter_estimator import ParameterEstimator, estimator_loss
from pipeline.operators import OPERATORS, build_operator, measure, to_model_domain
from pipeline.sampling.seeding import DEGRADATION, sample_generator, sample_seed
from pipeline.training.data import gather, step_generator


class _EstimatorLoss(nn.Module):
    def __init__(self, model: ParameterEstimator):
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        mean, log_var = self.model(y)
        return estimator_loss(mean.float(), log_var.float(), t)


class EstimatorTask:
    """Learn a family's severity t from 8-bit measurements at noise σ ~ U[noise_sigma, noise_sigma_max]."""

    kind = "estimator"

    def __init__(self, images: torch.Tensor, operator: str, noise_sigma: float, noise_sigma_max: float,
                 operator_params: dict, model_cfg: dict, seed: int):
        if operator not in OPERATORS:
            raise ValueError(f"unknown operator {operator!r}; choose one of {sorted(OPERATORS)}")
        self.images, self.seed, self.operator = images, seed, operator
        self.noise = (float(noise_sigma), float(noise_sigma_max))
        self.operator_params = dict(operator_params)
        OPERATORS[operator].params_for(0.5, self.noise[0], 0, **self.operator_params)  # fail fast on bad params
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(seed, "train-init", "init-estimator"))
            self.model = ParameterEstimator(int(model_cfg["channels"]), int(model_cfg["hidden"]))
        self.module = _EstimatorLoss(self.model)

    def inputs(self, step: int, index: torch.Tensor, flip: torch.Tensor, rows: slice, device) -> dict:
        b = len(index)
        t = torch.rand(b, generator=step_generator(self.seed, step, "severity"), dtype=torch.float64)
        u = torch.rand(b, generator=step_generator(self.seed, step, "noise-sigma"), dtype=torch.float64)
        sigma = self.noise[0] + (self.noise[1] - self.noise[0]) * u
        op_seeds = torch.randint(0, 2 ** 31 - 1, (b,), generator=step_generator(self.seed, step, "operator-seed"))
        rng = range(b)[rows]
        keys = [f"train-{step}-{i}" for i in rng]
        params = [OPERATORS[self.operator].params_for(float(t[i]), float(sigma[i]), int(op_seeds[i]),
                                                      **self.operator_params) for i in rng]
        x01 = gather(self.images, index[rows], flip[rows]).to(device)
        with torch.no_grad():
            gens = [sample_generator(self.seed, k, DEGRADATION) for k in keys]
            y01 = (measure(build_operator(params, keys), x01, gens).clamp(0, 1) * 255).round() / 255
        return {"y": to_model_domain(y01), "t": t[rows].float().to(device)}

    def save(self, model: nn.Module, url: str, extra: dict) -> str:
        return save_model(model, url, extra={"role": "estimator", "operator": self.operator, "field": "severity",
                                             "noise_sigma_range": list(self.noise),
                                             "operator_params": self.operator_params, **extra})
