"""The blind parameter estimator: a family's severity t (for Gaussian blur, the kernel width) from y alone.

Why its own model and not a head on the severity encoder: the encoder's σ̂² ranks one crop's
severities well but mixes blur with content across crops (Spearman ρ(σ̂², t) = 0.77 for Gaussian
blur, docs/models.md), and retraining it would move every shipped calibration and start step.
A few convolutions at full resolution see the finest scales, where blur width is written.

Architecture (`ParameterEstimator`): four 3×3 reflect-padded convolutions (two of them stride 2) on
y ∈ [−1, 1], then, per channel, the log of the map's mean energy and its mean, and a two-layer MLP
that gives a mean t̂ ∈ [0, 1] (a sigmoid) and a log-variance. Trained with the Gaussian negative
log-likelihood (`estimator_loss`), so exp(½·log-variance) is the estimate's own uncertainty.
Pooled statistics make it size-free: a photo is read as a whole, or through `estimate_image`'s
evenly spread windows when it is large.

Cost: about 0.2 M parameters; one forward on a 64-px crop is ~2 ms on one CPU core, a few % of
the severity encoder's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

LOG_VAR_RANGE = (-12.0, 2.0)
#: families read by another family's estimator: a varying blur is Gaussian blur, window by window
ESTIMATOR_OF = {"varying_blur": "gaussian_blur"}
WINDOW = 256          # a photo larger than this on a side is read through windows of this size
MAX_WINDOWS = 16
# Windows for a blur field, chosen on 256-px mosaics of training crops under random corners: 48 px × 5
# per side read the corners with mean error 0.098 (Spearman 0.94), 64 px × 4 with 0.132 (0.92)
CORNER_WINDOW = 48
CORNER_GRID = 5


class ParameterEstimator(ModelMixin, ConfigMixin):
    """y (B, 3, H, W) in [−1, 1] → (t̂ (B,), log-variance of t̂ (B,))."""

    @register_to_config
    def __init__(self, channels: int = 32, hidden: int = 64):
        super().__init__()
        if channels < 1 or hidden < 1:
            raise ValueError("channels and hidden must be ≥ 1")
        c = channels

        def conv(i, o, stride=1):
            return nn.Conv2d(i, o, 3, stride=stride, padding=1, padding_mode="reflect")

        self.convs = nn.ModuleList([conv(3, c), conv(c, c), conv(c, 2 * c, 2), conv(2 * c, 2 * c, 2)])
        features = 2 * (c + c + 2 * c + 2 * c)
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if y.dim() != 4 or y.shape[1] != 3 or min(y.shape[-2:]) < 8:
            raise ValueError(f"the estimator reads RGB images (B, 3, H, W) of at least 8 px, got {tuple(y.shape)}")
        feats, h = [], y
        for i, conv in enumerate(self.convs):
            h = conv(h if i == 0 else F.silu(h))
            feats += [h.pow(2).flatten(2).mean(2).add(1e-6).log(), h.flatten(2).mean(2)]
        out = self.mlp(torch.cat(feats, dim=1))
        return torch.sigmoid(out[:, 0]), out[:, 1].clamp(*LOG_VAR_RANGE)


def estimator_loss(mean: torch.Tensor, log_var: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gaussian negative log-likelihood of the true t (and the plain absolute error, for logs)."""
    t = t.to(mean.dtype)
    nll = 0.5 * (log_var + (t - mean).pow(2) * torch.exp(-log_var))
    return {"loss": nll.mean(), "abs_error": (t - mean).abs().mean().detach()}


def window_grid(h: int, w: int, size: int, per_side: int) -> tuple[list[int], list[int], int, int]:
    """(top rows, left columns, window height, width) of up to per_side² size×size windows spread evenly
    over an h×w image; one window, the image itself, when it is no larger than that."""
    sh, sw = min(size, h), min(size, w)
    rows = torch.linspace(0, h - sh, per_side).round().long().unique().tolist()
    cols = torch.linspace(0, w - sw, per_side).round().long().unique().tolist()
    return rows, cols, sh, sw


def windows(y: torch.Tensor, size: int = WINDOW, limit: int = MAX_WINDOWS) -> torch.Tensor:
    """Up to `limit` size×size windows spread evenly over one image (3, H, W); the image itself when small."""
    rows, cols, sh, sw = window_grid(*y.shape[-2:], size, max(1, int(limit ** 0.5)))
    return torch.stack([y[:, r:r + sh, c:c + sw] for r in rows for c in cols])


@torch.no_grad()
def estimate_image(model: ParameterEstimator, y: torch.Tensor) -> tuple[float, float]:
    """(t̂, its standard deviation) for one image (3, H, W) in [−1, 1]. A large photo's windows are read
    one by one and their estimates pooled with inverse-variance weights (the pooled std also counts
    the windows' disagreement, so a photo whose parts disagree reports it)."""
    param = next(model.parameters())
    parts = windows(y.to(param.device, param.dtype))
    mean, log_var = model(parts)
    var = log_var.exp()
    w = 1.0 / var
    t = float((w * mean).sum() / w.sum())
    spread = float((w * (mean - t).pow(2)).sum() / w.sum())
    std = float((1.0 / w.sum()) ** 0.5) if len(parts) == 1 else (float(var.mean()) + spread) ** 0.5
    return min(max(t, 0.0), 1.0), std


@torch.no_grad()
def estimate_corners(model: ParameterEstimator, y: torch.Tensor, size: int = CORNER_WINDOW,
                     per_side: int = CORNER_GRID) -> tuple[list[float], list[float]]:
    """(t̂ at the four corners [tl, tr, bl, br], their standard deviations) of a blur that varies
    bilinearly over one image (3, H, W) in [−1, 1] (`varying_blur`'s field).

    Windows on a per_side × per_side grid are read one by one; a window's mean of a bilinear field
    is the field at its centre, so the corners are the inverse-variance weighted least-squares fit
    of the bilinear basis at the window centres. A weak pull (1 % of the windows' total weight)
    toward the pooled t̂ fixes what the windows cannot tell apart: an image of one window gets four
    equal corners. Standard deviations come from the fit's covariance."""
    param = next(model.parameters())
    y = y.to(param.device, param.dtype)
    h, w = y.shape[-2:]
    rows, cols, sh, sw = window_grid(h, w, size, per_side)
    mean, log_var = model(torch.stack([y[:, r:r + sh, c:c + sw] for r in rows for c in cols]))
    v = torch.tensor([(r + (sh - 1) / 2) / max(h - 1, 1) for r in rows for _ in cols], dtype=torch.float64)
    u = torch.tensor([(c + (sw - 1) / 2) / max(w - 1, 1) for _ in rows for c in cols], dtype=torch.float64)
    basis = torch.stack([(1 - u) * (1 - v), u * (1 - v), (1 - u) * v, u * v], dim=1)
    t, weight = mean.double().flatten(), log_var.double().flatten().neg().exp()
    pooled = float((weight * t).sum() / weight.sum())
    pull = 0.01 * float(weight.sum())
    normal = basis.T @ (weight[:, None] * basis) + pull * torch.eye(4, dtype=torch.float64)
    corners = torch.linalg.solve(normal, basis.T @ (weight * t) + pull * pooled)
    stds = torch.linalg.inv(normal).diagonal().sqrt()
    return [min(max(float(c), 0.0), 1.0) for c in corners], [float(s) for s in stds]
