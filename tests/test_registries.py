"""Adding an operator family or a solver is one file plus one registry line.

This test is that file: it defines a family and a solver here, registers each with one line
(`monkeypatch.setitem` on `OPERATORS` / `SOLVERS`, undone after each test), and then runs the
registry-driven contract checks, the lists every command derives from the registries, and a
small restore job on them, editing nothing else. The job runs with Flash on, using the random
tiny severity encoder `build_tiny_models` writes for every registered family (nothing is trained),
and once as the baseline.
"""
from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.io.outputs import OutputStore
from pipeline.io.shards import write_shard
from pipeline.operators import OPERATORS
from pipeline.operators.base import Operator, check_common, fill_defaults, finite_number
from pipeline.solvers import SOLVERS
from pipeline.solvers.ldps import LatentDPS
from tests.operators import test_operators as operator_contract
from tests.helpers import FAMILY_PARAMS, IMAGE_SIZE, archive_samples, build_tiny_models
from tests.solvers import test_solvers as solver_contract


class Brightness(Operator):
    """Per-sample brightness scale A(x) = s·x with s(t) = 1 − (1 − min_scale)·t: linear and self-adjoint."""

    name = "brightness"
    label = "brightness scale"
    linear = True
    defaults = {"min_scale": 0.3}

    def validate(self, params: dict, key: str) -> dict:
        params = fill_defaults(check_common(params, key, self.name), key, self.name, self.defaults)
        params["min_scale"] = finite_number(params["min_scale"], "min_scale", key, 0.0, 1.0)
        return params

    @classmethod
    def example_params(cls, height: int, width: int) -> list[dict]:
        return [{}, {"min_scale": 0.6}]

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        self.check_input(x01)
        s = [1.0 - (1.0 - p["min_scale"]) * p["severity"] for p in self.params]
        return x01 * torch.tensor(s, dtype=x01.dtype, device=x01.device).view(-1, 1, 1, 1)

    def adjoint(self, y01: torch.Tensor) -> torch.Tensor:
        return self.forward(y01)


class HalfStepDPS(LatentDPS):
    """Latent-DPS with half the step: a solver of its own name and label, nothing else."""

    name = "half_step_dps"
    label = "Half-step DPS"
    defaults = {"step_size": 0.5, "scaling": "error"}


@pytest.fixture
def registered(monkeypatch):
    """The one line each: what a developer adds to `OPERATORS` and `SOLVERS`."""
    monkeypatch.setitem(OPERATORS, Brightness.name, Brightness)
    monkeypatch.setitem(SOLVERS, HalfStepDPS.name, HalfStepDPS)
    # the fixtures' per-family dict is derived from the registry when tests/helpers.py is imported,
    # before this family joined; a family in the source is in it from the start
    monkeypatch.setitem(FAMILY_PARAMS, Brightness.name, Brightness.example_params(IMAGE_SIZE, IMAGE_SIZE)[0])


def test_the_new_family_meets_the_operator_contract(registered):
    name = Brightness.name
    operator_contract.check_registration(name)
    operator_contract.check_examples_fit(name)
    for size in operator_contract.SIZES:
        operator_contract.check_adjoint(name, size)
    operator_contract.check_batching(name)
    for bad, field in operator_contract.COMMON_BAD + [({"min_scale": 1.5}, "min_scale")]:
        operator_contract.check_bad_params(name, bad, field)
    operator_contract.check_bad_batches(name)


def test_the_new_solver_meets_the_solver_contract(registered):
    name = HalfStepDPS.name
    solver_contract.check_registration(name)
    for sampler_name in ("ddpm", "ddim"):
        solver_contract.check_batched_equals_one_by_one(name, sampler_name)
    solver_contract.check_nfe_counted(name)
    solver_contract.check_guidance(name)
    solver_contract.check_bad_inputs(name)


def test_every_list_derives_from_the_registries(registered, monkeypatch, tmp_path):
    from pipeline.execution.config import load_config
    from pipeline.restoration import options
    from pipeline.model_report.measurements import families
    from pipeline.reproduction.report import method_label
    from pipeline.reproduction.suite import TASKS, Budget, Cell, parse_cell, solver_names, suite_cells
    from pipeline.solvers import default_sampler_name, restoring_solvers

    (tmp_path / "models" / "severity-brightness").mkdir(parents=True)
    assert families(tmp_path / "models") == ["brightness"] and restoring_solvers()[-1] == "half_step_dps"
    assert "unconditional" not in restoring_solvers() and default_sampler_name("half_step_dps") == "ddpm"
    cells = suite_cells(Budget.quick())
    assert solver_names() == restoring_solvers()
    assert all(Cell(task, "half_step_dps", mode) in cells for task in TASKS for mode in ("flash", "baseline"))
    assert parse_cell("blur_varying/half_step_dps/equal_nfe") == Cell("blur_varying", "half_step_dps", "equal_nfe")
    assert method_label("half_step_dps", "flash") == "Flash(Half-step DPS)"
    # default severity encoders: every registered family with a shipped folder; the shipped ones stay as they were
    shipped = load_config(None, []).models.severity
    assert "brightness" not in shipped
    assert shipped == {f: str(options.MODELS_DIR / f"severity-{f}") for f in ("downsample", "gaussian_blur", "inpainting",
                                                                              "jpeg", "motion_blur", "nonlinear_blur")}
    (tmp_path / "severity-brightness").mkdir()
    monkeypatch.setattr(options, "MODELS_DIR", tmp_path)
    assert load_config(None, []).models.severity == {"brightness": str(tmp_path / "severity-brightness")}


def test_a_restore_job_runs_the_new_family_and_solver(registered, tmp_path):
    models = build_tiny_models(tmp_path / "models")   # writes severity-brightness too: it walks the registry
    sets = [a for o in models["overrides"] for a in ("--set", o)]
    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(4, families=("brightness", "gaussian_blur")))
    runner = CliRunner()
    for mode in ("flash", "baseline"):
        out = tmp_path / mode
        res = runner.invoke(app, ["restore", "--input", str(tmp_path / "in"), "--output", str(out), "--engine",
                                  "local", "--batch-size", "2", "--solver", "half_step_dps", *sets,
                                  *(["--baseline"] if mode == "baseline" else [])])
        assert res.exit_code == 0, res.output + repr(res.exception)
        rows = OutputStore(str(out)).read_metrics().to_pylist()
        assert len(rows) == 4 and all(r["status"] == "ok" and r["psnr"] is not None for r in rows), rows
        assert {r["solver"] for r in rows} == {"half_step_dps"}
        assert {r["operator"] for r in rows} == {"brightness", "gaussian_blur"}
        assert all(r["nfe"] == r["start_step"] + 1 for r in rows)
        if mode == "baseline":
            assert {r["nfe"] for r in rows} == {50}
        else:
            assert all(r["sigma2_hat"] is not None for r in rows)
    res = runner.invoke(app, ["estimate", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "e.json"),
                              *sets])
    assert res.exit_code == 0, res.output + repr(res.exception)
    estimate = json.loads((tmp_path / "e.json").read_text())
    assert list(estimate["solvers"]) == ["ldps", "gml_dps", "psld", "resample", "half_step_dps"]
