"""JPEG blocking of a restoration against its reference: how much the error jumps at 8-px block borders.

r = mean |Δe| across the borders of the 8×8 JPEG grid (between columns 8k−1 and 8k, and rows
likewise) / mean |Δe| across every other pair of neighbouring pixels, with e = restored − clean
per channel. 1 means the error knows nothing of the grid; libjpeg at quality 10 gives r ≈ 1.5 on
our 64-px crops. Issue 28 asks a JPEG restoration to halve r − 1. The grid starts at the image's
top-left pixel, as a JPEG file's does.
"""
from __future__ import annotations

import torch

BLOCK = 8


def blocking_ratio(restored01: torch.Tensor, clean01: torch.Tensor) -> torch.Tensor:
    """r per image (B,), float64; images (B, 3, H, W) with both sides over one block."""
    if restored01.shape != clean01.shape or restored01.dim() != 4 or min(restored01.shape[-2:]) <= BLOCK:
        raise ValueError(f"blocking_ratio needs two equal (B,3,H,W) batches with sides > {BLOCK}, got "
                         f"{tuple(restored01.shape)} and {tuple(clean01.shape)}")
    e = restored01.double() - clean01.double()
    dx = (e[..., :, 1:] - e[..., :, :-1]).abs()     # jump between column j and j + 1
    dy = (e[..., 1:, :] - e[..., :-1, :]).abs()
    on_x = (torch.arange(dx.shape[-1], device=e.device) + 1) % BLOCK == 0
    on_y = (torch.arange(dy.shape[-2], device=e.device) + 1) % BLOCK == 0
    border = dx[..., on_x].flatten(1).sum(1) + dy[..., on_y, :].flatten(1).sum(1)
    other = dx[..., ~on_x].flatten(1).sum(1) + dy[..., ~on_y, :].flatten(1).sum(1)
    n_border = dx[..., on_x][0].numel() + dy[..., on_y, :][0].numel()
    n_other = dx[..., ~on_x][0].numel() + dy[..., ~on_y, :][0].numel()
    return (border / n_border) / (other / n_other).clamp_min(1e-12)
