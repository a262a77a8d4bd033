"""The varying-blur severity measurement: quadrants, stitched neighbours and the figures, on tiny models."""
from __future__ import annotations

import math

import numpy as np
import torch

from pipeline.corpus.crops import crop_key, load_corpus_export, write_corpus_export
from pipeline.model_report.varying_severity import (SEVERITIES, measure, quadrant_figures, quadrant_means,
                                                    stitched_blocks)
from pipeline.models.model_store import load_meta, load_model, save_model
from tests.helpers import model_set


def write_export(root, size: int = 16) -> str:
    """A photo cut into a 3×3 grid of crops (one 2×2 block of neighbours fits) and a lone crop of another."""
    rng = np.random.default_rng(0)
    pixels, keys, metas = [], [], []
    for r in range(3):
        for c in range(3):
            pixels.append((rng.random((size, size, 3)) * 255).astype(np.uint8))
            keys.append(crop_key("photo-a", 64, r, c))
            metas.append({"photo": "a", "short_side": 64, "row": r, "col": c})
    pixels.append((rng.random((size, size, 3)) * 255).astype(np.uint8))
    keys.append(crop_key("photo-b", 64, 0, 0))
    metas.append({"photo": "b", "short_side": 64, "row": 0, "col": 0})
    write_corpus_export(str(root), pixels, keys, metas)
    return str(root)


def test_stitched_blocks_put_neighbours_in_place(tmp_path):
    url = write_export(tmp_path / "export")
    arr, keys, _ = load_corpus_export(url)
    blocks = stitched_blocks(url)
    assert blocks.shape == (1, 3, 32, 32)       # only rows 0–1 × cols 0–1 of photo-a have all four
    at = {k: torch.from_numpy(a).permute(2, 0, 1).float() / 255 for k, a in zip(keys, arr)}
    for (r, c), (top, left) in {(0, 0): (0, 0), (0, 1): (0, 16), (1, 0): (16, 0), (1, 1): (16, 16)}.items():
        assert torch.equal(blocks[0, :, top:top + 16, left:left + 16], at[crop_key("photo-a", 64, r, c)])


def test_quadrant_means_and_figures():
    m = torch.zeros(1, 1, 4, 6, dtype=torch.float64)
    m[..., :2, 3:] = 1.0
    m[..., 2:, :3] = 2.0
    m[..., 2:, 3:] = 3.0
    assert quadrant_means(m).tolist() == [[0.0, 1.0, 2.0, 3.0]]
    truth = np.array([[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5], [0.4, 0.4, 0.2, 0.2]])
    perfect = quadrant_figures(truth * 2 + 1, truth)
    assert perfect["ordering_accuracy"] == 1.0 and perfect["images"] == 2   # the uniform image has no order
    assert math.isclose(perfect["within_image_spearman"], 1.0)
    constant = quadrant_figures(np.repeat([[0.1], [0.2], [0.3]], 4, axis=1), truth)
    assert constant["ordering_accuracy"] == 0.0 and constant["within_image_spearman"] is None


def reading_encoder(models) -> None:
    """The tiny Gaussian-blur encoder with a variance head that reads its input (an untrained head is constant)."""
    path = str(models / "severity-gaussian_blur")
    enc, meta = load_model(path), load_meta(path)
    with torch.no_grad():
        enc.variance_head.out.weight.copy_(torch.randn(enc.variance_head.out.weight.shape,
                                                       generator=torch.Generator().manual_seed(3)))
    save_model(enc, path, extra=meta)


def test_measure_on_tiny_models(tmp_path):
    models = model_set(tmp_path / "models")
    reading_encoder(models)
    url = write_export(tmp_path / "export")
    out = measure(str(models), url, crops=4, seed=0, batch=16, device="cpu")
    assert out["severities"] == list(SEVERITIES)
    gauss, varying = out["crops_gaussian_blur"], out["crops_spread0.5"]
    assert gauss["crops"] == 4 and varying["spread"] == 0.5 and out["crops_spread1"]["spread"] == 1.0
    for fig in (gauss, varying):
        assert -1.0 <= fig["spearman"] <= 1.0 and 0.0 <= fig["ordering_accuracy"] <= 1.0
    # the variance head gives one σ̂² per image: its map is constant, so it cannot order quadrants
    assert varying["map_pooled_distinct_per_image"] == 1.0
    assert varying["map_pooled_quadrants"]["ordering_accuracy"] == 0.0
    assert varying["map_pooled_quadrants"]["within_image_spearman"] is None
    alone = varying["quadrants_encoded_alone"]
    assert 0.0 <= alone["ordering_accuracy"] <= 1.0 and alone["images"] == 4 * 3   # t = 0 and 1: uniform
    stitched = out["stitched_spread1"]
    assert stitched["images"] == 1 and stitched["size"] == 32
    assert 0.0 <= stitched["quadrants_encoded_alone"]["ordering_accuracy"] <= 1.0
