"""LPIPS-VGG (v0.1) in plain torch, with weights only from a user-supplied safetensors file.

The ImageNet VGG16 backbone and the LPIPS linear heads cannot be obtained offline, so the
project ships no weights and never downloads any: `from_safetensors(path)` loads them, and
without a file the metric is reported as missing (`pipeline.quality.metrics.lpips_metric`).

Expected tensor names (float, any precision; converted to float32):

    vgg.conv{b}_{i}.weight  (C_out, C_in, 3, 3)   vgg.conv{b}_{i}.bias  (C_out,)
        for (b, i) in 1_1 1_2 | 2_1 2_2 | 3_1 3_2 3_3 | 4_1 4_2 4_3 | 5_1 5_2 5_3
        with channels 64, 64 | 128, 128 | 256 ×3 | 512 ×3 | 512 ×3 (conv1_1 has C_in = 3)
    lin{k}.weight           (1, C_k, 1, 1)   k = 0..4, C_k = 64, 128, 256, 512, 512

Aliases accepted so that the two public sources can be merged into one file without
renaming: torchvision's `features.{n}.weight|bias` (n = 0, 2, 5, 7, 10, 12, 14, 17, 19, 21,
24, 26, 28) and the lpips package's `lin{k}.model.1.weight`.
"""
from __future__ import annotations

import re

import fsspec
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from torch import nn

# (block, conv index, C_in, C_out); a 2×2 max-pool precedes blocks 2..5.
_CONVS = [(1, 1, 3, 64), (1, 2, 64, 64),
          (2, 1, 64, 128), (2, 2, 128, 128),
          (3, 1, 128, 256), (3, 2, 256, 256), (3, 3, 256, 256),
          (4, 1, 256, 512), (4, 2, 512, 512), (4, 3, 512, 512),
          (5, 1, 512, 512), (5, 2, 512, 512), (5, 3, 512, 512)]
_TAP_CHANNELS = [64, 128, 256, 512, 512]  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_TORCHVISION_INDEX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
# LPIPS input scaling: x ∈ [-1,1] → (x − shift)/scale (ImageNet statistics in that range).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Canonical tensor name → shape, as `from_safetensors` requires."""
    shapes: dict[str, tuple[int, ...]] = {}
    for b, i, cin, cout in _CONVS:
        shapes[f"vgg.conv{b}_{i}.weight"] = (cout, cin, 3, 3)
        shapes[f"vgg.conv{b}_{i}.bias"] = (cout,)
    for k, c in enumerate(_TAP_CHANNELS):
        shapes[f"lin{k}.weight"] = (1, c, 1, 1)
    return shapes


def _canonical(name: str) -> str:
    m = re.fullmatch(r"features\.(\d+)\.(weight|bias)", name)
    if m and int(m.group(1)) in _TORCHVISION_INDEX:
        b, i, _, _ = _CONVS[_TORCHVISION_INDEX.index(int(m.group(1)))]
        return f"vgg.conv{b}_{i}.{m.group(2)}"
    m = re.fullmatch(r"lin(\d)\.model\.1\.weight", name)
    if m:
        return f"lin{m.group(1)}.weight"
    return name


class LPIPS(nn.Module):
    """d(x, y) = Σ_l mean_hw ‖w_l ⊙ (φ̂_l(x) − φ̂_l(y))‖², φ̂ = channel-unit-normalised VGG features.

    Call with images in [0,1] (B,3,H,W); they are clipped and mapped to [-1,1] as the
    reference does. Returns (B,) distances. Build it with `from_safetensors` (or call
    `load_weights`): a bare `LPIPS()` has no weights yet.
    """

    def __init__(self):
        super().__init__()
        # Built on the meta device: random init of 15M parameters is wasted work, since
        # `load_weights` is the only way to give the model values.
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, 3, padding=1, device="meta") for _, _, cin, cout in _CONVS)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False, device="meta") for c in _TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_safetensors(cls, path: str, device: torch.device | str = "cpu") -> "LPIPS":
        """Load and validate weights (names in the module docstring); ValueError on any mismatch."""
        with fsspec.open(path, "rb") as f:
            raw = f.read()
        try:
            tensors = st_load(raw)
        except Exception as exc:
            raise ValueError(f"LPIPS weights {path}: not a readable safetensors file ({exc})") from exc
        model = cls()
        model.load_weights(tensors, source=path)
        return model.to(device)

    def load_weights(self, tensors: dict[str, torch.Tensor], source: str = "<dict>") -> None:
        want = expected_shapes()
        got: dict[str, torch.Tensor] = {}
        for name, t in tensors.items():
            canon = _canonical(name)
            if canon in got:
                raise ValueError(f"LPIPS weights {source}: {name!r} duplicates {canon!r}")
            got[canon] = t
        missing = sorted(set(want) - set(got))
        unknown = sorted(set(got) - set(want))
        if missing or unknown:
            raise ValueError(f"LPIPS weights {source}: missing tensors {missing[:6]}"
                             f"{' …' if len(missing) > 6 else ''}, unexpected tensors {unknown[:6]}"
                             f"{' …' if len(unknown) > 6 else ''} (expected names: see pipeline/quality/lpips.py)")
        for name, shape in want.items():
            if tuple(got[name].shape) != shape:
                raise ValueError(f"LPIPS weights {source}: {name} has shape {tuple(got[name].shape)}, "
                                 f"expected {shape}")
            if not got[name].is_floating_point() or not torch.isfinite(got[name]).all():
                raise ValueError(f"LPIPS weights {source}: {name} must be finite floats")
        dev = self.shift.device

        def param(name: str) -> nn.Parameter:
            return nn.Parameter(got[name].to(dev, torch.float32).clone(), requires_grad=False)

        for conv, (b, i, _, _) in zip(self.convs, _CONVS):
            conv.weight, conv.bias = param(f"vgg.conv{b}_{i}.weight"), param(f"vgg.conv{b}_{i}.bias")
        for k, lin in enumerate(self.lins):
            lin.weight = param(f"lin{k}.weight")

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, block = [], 1
        for conv, (b, i, _, _) in zip(self.convs, _CONVS):
            if b != block:  # entering a new block: pool the previous block's output
                x, block = F.max_pool2d(x, 2, 2), b
            x = F.relu(conv(x))
            if (b == 1 and i == 2) or (b == 2 and i == 2) or (b >= 3 and i == 3):
                taps.append(x)
        return taps

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)

    @torch.no_grad()
    def forward(self, pred01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
        if pred01.shape != target01.shape or pred01.ndim != 4 or pred01.shape[1] != 3:
            raise ValueError(f"expected two (B,3,H,W) tensors of one shape, got {tuple(pred01.shape)} "
                             f"and {tuple(target01.shape)}")
        dev = self.shift.device
        x = (pred01.to(dev, torch.float32).clamp(0, 1) * 2 - 1 - self.shift) / self.scale
        y = (target01.to(dev, torch.float32).clamp(0, 1) * 2 - 1 - self.shift) / self.scale
        taps = self._taps(torch.cat([x, y]))  # one backbone pass for both sides
        n = x.shape[0]
        dist = torch.zeros(n, device=dev)
        for lin, f in zip(self.lins, taps):
            d = (self._unit(f[:n]) - self._unit(f[n:])).pow(2)
            dist = dist + lin(d).mean(dim=(1, 2, 3))
        return dist
