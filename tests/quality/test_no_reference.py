"""No-reference quality: the measurement residual of a result, normalised by the noise level,
and how far σ̂² lies outside the encoder's training range."""
import torch

from pipeline.quality.no_reference import PNG_ROUNDING_STD, residuals, severity_ood, sigma2_quantiles
from pipeline.operators import OPERATORS, measure
from pipeline.sampling.seeding import generators


def smooth_images(n, gen):
    """Photo-like content: structure at scales a blur keeps (white noise would blur to grey)."""
    return torch.nn.functional.interpolate(torch.rand(n, 3, 6, 6, generator=gen), size=64, mode="bilinear")


def test_the_truth_has_residual_z_near_one_and_a_wrong_image_far_above():
    gen = torch.Generator().manual_seed(0)
    clean = smooth_images(4, gen)
    params = [OPERATORS["gaussian_blur"].params_for(t, 0.05, i) for i, t in enumerate((0.1, 0.4, 0.7, 1.0))]
    op = OPERATORS["gaussian_blur"](params, list("abcd"))
    y = measure(op, clean, generators(0, list("abcd"), "degradation"))
    r, z = residuals(y, clean, op, op.noise_sigmas)
    assert torch.allclose(r, torch.full((4,), 0.05, dtype=torch.float64), rtol=0.05)
    assert ((z > 0.9) & (z < 1.1)).all()
    _, z_wrong = residuals(y, smooth_images(4, gen), op, op.noise_sigmas)
    assert (z_wrong > 3).all()
    noiseless = OPERATORS["gaussian_blur"]([{**p, "noise_sigma": 0.0} for p in params], list("abcd"))
    _, z0 = residuals(noiseless(clean), clean, noiseless, noiseless.noise_sigmas)  # σ = 0: PNG rounding sets the scale
    assert torch.isfinite(z0).all() and (z0 < 1e-3 / PNG_ROUNDING_STD).all()


def test_severity_ood_is_zero_inside_the_training_range_and_grows_outside():
    q = {"q01": 0.01, "q50": 0.1, "q99": 1.0}
    assert severity_ood(0.01, q) == severity_ood(0.5, q) == 0.0
    assert abs(severity_ood(10.0, q) - 0.5) < 1e-9 and abs(severity_ood(1e-3, q) - 0.5) < 1e-9
    assert severity_ood(100.0, q) > severity_ood(10.0, q)


def test_training_quantiles_follow_the_encoder():
    class Constant(torch.nn.Module):
        def forward(self, y):
            return y, y.flatten(1).mean(1).exp()

    batches = lambda j: torch.full((8, 3, 4, 4), float(j))  # noqa: E731 - σ̂² = e^j
    q = sigma2_quantiles(Constant(), batches, n_batches=3)
    assert q["n"] == 24 and abs(q["q50"] - torch.e) < 1e-6 and q["q01"] < q["q50"] < q["q99"]
