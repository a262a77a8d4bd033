"""A short severity training on the shipped autoencoder must order severities (the init regression).

Why: the reference-style KL head read the autoencoder's own log-variance channels as the std
map; σ̂² started ~600× above the target and pulling it down destroyed the order (ordering
accuracy 0.008 after training). With the variance head starting at the target level, 60
steps on 256 training crops already order a 10-severity Gaussian-blur ladder on dev crops.
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.model_report.measurements import load_eval_crops, measure_severity, resolve_photos, spread
from pipeline.sampling.schedules import DDPMSampler, NoiseSchedule
from pipeline.training.loop import fit, load_frozen_autoencoder
from pipeline.training.data import BatchPlan, load_crops
from pipeline.training.tasks import SeverityTask

LOSS = {"lambda_sigma": 1.0, "lambda_img": 0.0, "variance_loss": "log", "couple_variance": False,
        "head_channels": 64, "init_sigma2": 0.03, "head_lr_scale": 10.0, "pair_weight": 0.0,
        "freeze_mean": False}




def test_short_training_orders_gaussian_blur_severities(tmp_path):
    ae, _ = load_frozen_autoencoder("models/autoencoder", "cpu")
    images, _ = load_crops("data/corpus/train", max_items=256)
    task = SeverityTask(images, ae, "gaussian_blur", 0.05, {}, LOSS, seed=0)
    cfg = {"run": {"max_steps": 60, "log_every": 20, "checkpoint_every": 1000, "precision": "fp32"},
           "optim": {"lr": 1e-4, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.0, "warmup_steps": 0,
                     "grad_clip": 1.0, "ema_decay": 0.0}}
    out = fit(task, BatchPlan(len(images), 16, 0), cfg, str(tmp_path / "ckpt"), torch.device("cpu"))
    crops = load_eval_crops(resolve_photos("dev"), 64)
    crops = crops[spread(len(crops), 12)]
    got = measure_severity(out["model"].float(), ae, "gaussian_blur", crops, {}, torch.device("cpu"), 0, 40,
                           DDPMSampler(NoiseSchedule.ldm_linear()))
    assert got["ordering_accuracy"] >= 0.9, got
    assert got["realised_ordering_accuracy"] >= 0.95, got   # the ladder itself orders the damage
    assert np.isfinite(got["sigma2_mean"]) and 0.002 < got["sigma2_mean"] < 0.5
