"""The noise level from the image: accurate on blurred images, unknown (not guessed) when it cannot be read,
and a job fills a sample's missing noise_sigma from it (or from input.noise) and says so."""
from __future__ import annotations

import json

import pytest
import torch

from pipeline.execution.config import load_config
from pipeline.execution.validation import SampleValidator
from pipeline.io.samples import Sample, SampleError
from pipeline.operators import GaussianBlur
from pipeline.quality.noise_level import NoiseUnknown, estimate_noise_sigma
from tests.operators.test_operators import smooth_image


def measured(sigma: float, seed: int = 0) -> torch.Tensor:
    """A smooth image blurred (t = 0.5), σ noise added, clipped and rounded to 8 bits as a PNG holds it."""
    x = 0.1 + 0.8 * smooth_image(1, 96, 128)
    y = GaussianBlur([GaussianBlur.params_for(0.5)])(x)
    y = y + sigma * torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype)
    return ((y.clamp(0, 1) * 255).round() / 255)[0].float()


@pytest.mark.parametrize("sigma", [0.02, 0.05, 0.1])
def test_the_estimate_is_within_eight_percent_on_a_blurred_image(sigma):
    assert estimate_noise_sigma(measured(sigma)) == pytest.approx(sigma, rel=0.08)


def test_clipped_unobserved_and_tiny_images_leave_the_level_unknown():
    with pytest.raises(NoiseUnknown, match="blocks"):
        estimate_noise_sigma(torch.zeros(3, 64, 64))            # all clipped: no noise survives at 0
    with pytest.raises(NoiseUnknown, match="blocks"):
        estimate_noise_sigma(measured(0.05), observed=torch.zeros(96, 128, dtype=torch.bool))
    with pytest.raises(NoiseUnknown):
        estimate_noise_sigma(torch.rand(3, 1, 50))
    half = torch.zeros(96, 128, dtype=torch.bool)
    half[:, :64] = True                                         # blocks of the observed half only
    assert estimate_noise_sigma(measured(0.05), observed=half) == pytest.approx(0.05, rel=0.1)


def _sample(key: str, image: torch.Tensor, params: dict | None) -> Sample:
    return Sample(key, "shard-0", image, None, params, "sha")


def test_a_job_fills_missing_noise_from_the_image_or_the_config_and_records_it():
    operator = json.dumps({"operator": "gaussian_blur", "severity": 0.5})
    est = SampleValidator(load_config(None, [f"input.operator={operator}", "input.noise=estimate"]))
    p = est.prepare(_sample("nojson", measured(0.05), None))
    assert p.params["noise_sigma"] == pytest.approx(0.05, rel=0.08) and p.estimated == {
        "noise_sigma": p.params["noise_sigma"]}
    own = est.prepare(_sample("own", measured(0.05), {"operator": "gaussian_blur", "severity": 0.2,
                                                      "noise_sigma": 0.01}))
    assert own.params["noise_sigma"] == 0.01 and own.estimated is None      # a json's own value is kept
    with pytest.raises(SampleError, match="black.*cannot estimate the noise level") as err:
        est.prepare(_sample("black", torch.zeros(3, 64, 64), None))
    assert err.value.kind == "noise"
    fixed = SampleValidator(load_config(None, [f"input.operator={operator}", "input.noise=0.03"]))
    p = fixed.prepare(_sample("nojson", measured(0.05), None))
    assert p.params["noise_sigma"] == 0.03 and p.estimated is None
    assert SampleValidator(load_config(None, [f"input.operator={operator}"])).prepare(
        _sample("nojson", measured(0.05), None)).params["noise_sigma"] == 0.0    # unset: noiseless, as before


@pytest.mark.parametrize("bad", ["loud", "1.5", "-0.1"])
def test_a_bad_noise_setting_fails_before_any_compute(bad):
    with pytest.raises(ValueError, match="input.noise"):
        load_config(None, [f"input.noise={bad}"])
