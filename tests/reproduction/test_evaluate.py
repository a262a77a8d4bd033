"""`flash-restore evaluate`: the suite's cells, the fixed-start and decode-only modes, resumable
cells, and the report (a --quick run on tiny random models)."""
import json
import re

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from pipeline.reproduction.suite import Budget, Cell, parse_cell, suite_cells, task_named


def test_suite_holds_every_row_of_the_issue():
    cells = {c.id for c in suite_cells(Budget())}
    for task in ("blur_varying", "blur_fixed", "nonlinear_blur", "inpainting"):
        assert {f"{task}/none/input", f"{task}/none/decode"} <= cells
        for solver in ("ldps", "gml_dps", "resample") + (("psld",) if task != "nonlinear_blur" else ()):
            assert {f"{task}/{solver}/{m}" for m in ("flash", "baseline", "equal_nfe")} <= cells
    assert not any(c.startswith("nonlinear_blur/psld/") for c in cells)  # PSLD needs a linear operator
    assert {f"blur_varying/ldps/start-{k}" for k in (25, 50, 100, 200, 400, 700)} <= cells
    for sigma in ("0", "0.025", "0.075", "0.1"):
        assert {f"blur_varying-noise{sigma}/ldps/flash", f"blur_varying-noise{sigma}/ldps/baseline"} <= cells
    assert len(cells) == len(suite_cells(Budget()))  # σ = 0.05 is the main task, not a copy of it


@pytest.mark.parametrize("bad", ["blur_varying/ldps", "nope/ldps/flash", "blur_varying/dps/flash",
                                 "blur_varying/none/flash", "blur_varying/ldps/start-x", "blur_varying/ldps/fast"])
def test_bad_cell_names_are_refused(bad):
    with pytest.raises(ValueError):
        parse_cell(bad)


def test_fixed_start_and_decode_only_config_checks():
    from pipeline.execution.config import load_config

    for sets in (["flash.start_step=-1"], ["flash.enabled=false", "flash.decode_only=true"],
                 ["flash.start_step=3", "flash.decode_only=true"]):
        with pytest.raises(ValueError):
            load_config(None, sets)
    a = load_config(None, ["flash.start_step=10"]).output_hash()
    assert a != load_config(None, ["flash.start_step=11"]).output_hash() != load_config().output_hash()


def _restore(tiny_models, sets, n=3):
    from pipeline.execution.config import load_config
    from pipeline.execution.crop_restore import degraded_samples
    from pipeline.execution.restorer import build_restorer, prepare_samples

    cfg = load_config(None, [f"models.autoencoder={tiny_models / 'autoencoder'}", f"models.denoiser={tiny_models / 'ldm'}",
                             "models.device=cpu", "execution.engine=local", *sets])
    cfg.models.severity = {"gaussian_blur": str(tiny_models / "severity-gaussian_blur")}
    x01 = torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    samples = degraded_samples("gaussian_blur", x01, np.linspace(0.1, 0.9, n), {"kernel_size": 7}, 0, "t")
    r = build_restorer(cfg)
    est = r.estimate(prepare_samples(cfg, samples))
    return r, est, r.solve(est)


def test_decode_only_is_the_autoencoders_answer(tiny_models):
    from pipeline.io.samples import decode_image
    from pipeline.operators.noise import to_unit_domain

    r, est, out = _restore(tiny_models, ["flash.decode_only=true"])
    z_hat = torch.stack([e.z_hat for e in est])
    expected = to_unit_domain(r.ldm.autoencoder.decode(z_hat)).clamp(0, 1)
    for (row, png, _), e, x in zip(out, est, expected):
        assert row["nfe"] == 0 and row["denoiser_calls"] == 0 and row["start_step"] == -1
        assert row["sigma2_hat"] == pytest.approx(e.sigma2)
        assert torch.allclose(decode_image(png, "k"), (x * 255).round() / 255, atol=1e-6)


def test_fixed_start_runs_every_sample_from_k(tiny_models):
    with pytest.raises(ValueError, match="off the"):
        _restore(tiny_models, ["flash.start_step=50"])  # the tiny schedule has 50 steps: 0..49
    _, est, out = _restore(tiny_models, ["flash.start_step=7"])
    assert {row["start_step"] for row, _, _ in out} == {7} and {row["nfe"] for row, _, _ in out} == {8}
    assert [row["sigma2_hat"] for row, _, _ in out] == pytest.approx([e.sigma2 for e in est])  # still reported


def _evaluate(args):
    from jobs.cli import app

    return CliRunner().invoke(app, ["evaluate", *args])


@pytest.fixture(scope="module")
def quick_run(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    args = ["--quick", "--models", str(tiny_models), "--out", str(root / "rep"), "--work", str(root / "work")]
    result = _evaluate(args)
    assert result.exit_code == 0, result.output
    return root, args


def test_quick_evaluation_writes_every_section(quick_run):
    root, _ = quick_run
    text = (root / "rep.md").read_text()
    for heading in ("## Verdicts", "## 1. Main table", "What the solver adds", "## 2. Adaptivity", "## 3. Robustness",
                    "## 4. Severity", "## 5. Sample grids", "## Cells"):
        assert heading in text
    assert "not run yet" not in text and "--quick smoke run" in text
    assert "± 0.000" not in text and re.search(r"\d\.\d{3}² \|", text)   # 2 images: one KID subset, no spread
    for name in ("adaptivity.png", "robustness.png", "severity.png", "grid-blur_varying.png", "grid-inpainting.png"):
        assert (root / "rep" / name).stat().st_size > 1000
    import pyarrow.parquet as pq

    cells = suite_cells(Budget.quick())
    for c in cells:
        record = json.loads((root / "rep" / "cells" / c.id / "cell.json").read_text())
        assert record["ok"] == c.n(Budget.quick()) and record["errors"] == 0, c.id
        task = task_named(c.task)  # tasks share crop keys: each cell's rows must be its own task's
        rows = pq.read_table(root / "rep" / "cells" / c.id / "metrics.parquet").to_pylist()
        assert {r["operator"] for r in rows} == {task.family}, c.id
        assert all(task.severity[0] <= r["severity"] <= task.severity[1] for r in rows), c.id
        assert {r["noise_sigma"] for r in rows} == {task.noise}, c.id
    eq = json.loads((root / "rep" / "cells" / "inpainting/ldps/equal_nfe" / "cell.json").read_text())
    fl = json.loads((root / "rep" / "cells" / "inpainting/ldps/flash" / "cell.json").read_text())
    assert eq["sampler_steps"] == max(1, round(fl["mean_nfe"]))  # equal compute: the baseline on Flash's NFE


def test_cells_are_reused_and_one_can_be_rerun(quick_run):
    root, args = quick_run
    cells = root / "rep" / "cells"
    before = {p: p.stat().st_mtime_ns for p in cells.glob("**/cell.json")}
    again = _evaluate(args)
    assert again.exit_code == 0 and "images" not in again.output  # every cell reused, none run
    assert {p: p.stat().st_mtime_ns for p in cells.glob("**/cell.json")} == before
    one = _evaluate(args + ["--cell", "blur_fixed/ldps/flash"])
    assert one.exit_code == 0, one.output
    changed = [p for p in cells.glob("**/cell.json") if p.stat().st_mtime_ns != before[p]]
    assert [p.relative_to(cells).parent.as_posix() for p in changed] == ["blur_fixed/ldps/flash"]
    kept = _evaluate(args + ["--cell", "blur_fixed/ldps/flash", "--reuse"])   # stored and current: not rerun
    assert kept.exit_code == 0 and "images" not in kept.output, kept.output
    rebuilt = _evaluate(args + ["--report-only"])
    assert rebuilt.exit_code == 0 and (root / "rep.md").exists()
    # a run stopped after its first cell wrote no meta; the report still names it, read from that cell
    path = cells / "blur_varying/ldps/start-2" / "cell.json"
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "command": "flash-restore evaluate --stopped-part-way"}))
    assert _evaluate(args + ["--report-only"]).exit_code == 0
    commands = json.loads((root / "rep" / "evaluation.json").read_text())["commands"]
    assert "flash-restore evaluate --stopped-part-way" in commands and len(commands) == len(set(commands))
    assert any("--cell blur_fixed/ldps/flash" in c for c in commands)  # the rerun of one cell, still stored
    assert "--stopped-part-way" in (root / "rep.md").read_text()
    path.write_text(json.dumps(record))


def test_kid_and_fid_get_a_verdict_each(quick_run, tmp_path):
    import shutil

    from pipeline.reproduction.report import Report

    root, _ = quick_run
    shutil.copytree(root / "rep", tmp_path / "rep")
    for mode, kid, fid in (("flash", 0.01, 400.0), ("baseline", 0.02, 300.0)):  # Flash: better KID, worse FID
        path = tmp_path / "rep" / "cells" / "blur_varying" / "ldps" / mode / "cell.json"
        record = json.loads(path.read_text())
        record["set_metrics"]["grid"] = {"kid": kid, "kid_std": 0.0, "fid": fid, "n": 2}
        path.write_text(json.dumps(record))
    report = Report(tmp_path / "rep", suite_cells(Budget.quick()), Budget.quick())
    row = next(ln for ln in report.main_verdicts("blur_varying").splitlines() if ln.startswith("| ldps"))
    assert "KID 0.010 vs 0.020 ✓, FID 400 vs 300 ✗" in row
    assert "KID ✓ · FID ✗" in report.grid[("blur_varying", "ldps")]


def test_a_rebuild_checks_staleness_against_the_settings_it_is_given(quick_run, tmp_path, tiny_models):
    import shutil

    from pipeline.tuning.grid_search import write_table

    root, _ = quick_run
    shutil.copytree(root / "rep", tmp_path / "rep")
    other = tmp_path / "other.yaml"
    write_table(other, "ldps", "gaussian_blur", {"flash": {"best": {"step_size": 0.125, "noise_correction": 2.0,
                                                                      "psnr": 1.0, "nfe": 1.0}, "crops": 1}}, "t")
    args = ["--quick", "--models", str(tiny_models), "--out", str(tmp_path / "rep"), "--report-only"]
    assert _evaluate(args).exit_code == 0
    assert "changed since" not in (tmp_path / "rep.md").read_text()
    assert _evaluate(args + ["--settings", str(other)]).exit_code == 0
    assert "changed since" in (tmp_path / "rep.md").read_text()   # the cells ran on other ldps settings
    assert json.loads((tmp_path / "rep" / "evaluation.json").read_text())["settings"] == str(other)
    assert _evaluate(args).exit_code == 0 and "changed since" in (tmp_path / "rep.md").read_text()  # kept


def test_jobs_split_the_cells_over_workers_with_the_same_results(quick_run, tmp_path, tiny_models):
    import pyarrow.parquet as pq

    from workers.evaluation_workers import partition

    cells = suite_cells(Budget.quick())
    parts = partition(cells, 2)
    assert sorted(c.id for p in parts for c in p) == sorted(c.id for c in cells) and len(parts) == 2
    for part in parts:   # an equal-NFE cell shares its worker with its Flash cell
        ids = {c.id for c in part}
        assert all(f"{c.task}/{c.solver}/flash" in ids for c in part if c.mode == "equal_nfe")
    root, _ = quick_run
    out = tmp_path / "rep"
    result = _evaluate(["--quick", "--models", str(tiny_models), "--out", str(out), "--work", str(tmp_path / "w"),
                        "--jobs", "2"])
    assert result.exit_code == 0, result.output
    assert "2 workers done (exit codes [0, 0])" in result.output and "images" not in result.output  # parent reused all
    for c in cells:
        mine, ref = (pq.read_table(r / "cells" / c.id / "metrics.parquet").to_pylist() for r in (out, root / "rep"))
        assert [r["key"] for r in mine] == [r["key"] for r in ref], c.id
        assert [r["psnr"] for r in mine] == pytest.approx([r["psnr"] for r in ref], abs=1e-3), c.id
        record = json.loads((out / "cells" / c.id / "cell.json").read_text())
        assert "--jobs" in record["command"] and "--worker" not in record["command"], c.id   # the user's command
    assert (tmp_path / "rep.md").exists()


def test_findings_are_included_and_flagged_when_the_cells_change(quick_run):
    import re

    root, args = quick_run
    (root / "rep" / "findings.md").write_text("<!-- cells: 000000000000 -->\nThe baseline wins here because X.\n")
    assert _evaluate(args + ["--report-only"]).exit_code == 0
    text = (root / "rep.md").read_text()
    assert "The baseline wins here because X." in text and "written for other cell results" in text
    digest = re.search(r"Cells digest `([0-9a-f]{12})`", text).group(1)
    (root / "rep" / "findings.md").write_text(f"<!-- cells: {digest} -->\nThe baseline wins here because X.\n")
    assert _evaluate(args + ["--report-only"]).exit_code == 0
    text = (root / "rep.md").read_text()
    assert "because X." in text and "written for other cell results" not in text
    (root / "rep" / "findings.md").unlink()


def test_a_changed_model_invalidates_only_its_cells(quick_run, tiny_models, tmp_path):
    import shutil

    from workers.evaluation_cells import Evaluation
    from workers.evaluation_crops import evaluation_crops
    from pipeline.models.model_store import load_model, save_model, load_meta

    root, _ = quick_run
    rep = tmp_path / "rep"
    shutil.copytree(root / "rep", rep)
    models = tmp_path / "models"
    shutil.copytree(tiny_models, models)
    enc = load_model(str(models / "severity-gaussian_blur"))
    with torch.no_grad():
        next(enc.parameters()).add_(0.01)
    meta = load_meta(str(models / "severity-gaussian_blur"))
    save_model(enc, str(models / "severity-gaussian_blur"), extra={k: meta[k] for k in ("role", "operator", "operator_params")})
    crops, keys, _ = evaluation_crops("dev", 2, 16)
    log = []
    ev = Evaluation(models=models, crops01=crops, crop_keys=keys, budget=Budget.quick(), out=rep,
                    work=root / "work", log=log.append)
    stored = json.loads((rep / "cells/blur_varying/ldps/flash/cell.json").read_text())
    ev.run(Cell("inpainting", "ldps", "flash"))         # another family's encoder: reused
    ev.run(Cell("blur_varying", "ldps", "baseline"))    # a baseline never loads the encoder: reused
    assert log == []
    record = ev.run(Cell("blur_varying", "ldps", "flash"))  # this family's encoder changed: recomputed
    assert any("another key" in m for m in log)
    assert record["key"] != stored["key"] and record["models"]["severity-gaussian_blur"] != stored["models"]["severity-gaussian_blur"]

    log.clear()                                         # the encoder's operator parameters shape the degraded
    params = {**meta["operator_params"], "kernel_size": meta["operator_params"]["kernel_size"] + 2}  # images
    save_model(enc, str(models / "severity-gaussian_blur"), extra={"role": "severity", "operator": meta["operator"],
                                                                     "operator_params": params})
    ev = Evaluation(models=models, crops01=crops, crop_keys=keys, budget=Budget.quick(), out=rep,
                    work=root / "work", log=log.append)
    assert ev.data(task_named("blur_varying")).key != record["data_key"]
    ev.run(Cell("blur_varying", "ldps", "baseline"))
    assert any("another key" in m for m in log)


def test_photo_lists_with_training_photos_or_none_are_refused(tmp_path, tiny_models):
    from pipeline.corpus.photos import read_photo_list

    lists = {"train.txt": read_photo_list("train")[0] + "\n", "empty.txt": "# nothing\n"}
    for name, text in lists.items():
        (tmp_path / name).write_text(text)
        result = _evaluate(["--quick", "--models", str(tiny_models), "--photos", str(tmp_path / name),
                            "--out", str(tmp_path / "r"), "--work", str(tmp_path / "w")])
        said = " ".join(result.output.split())  # rich wraps long lines
        assert result.exit_code == 2 and ("training photos" in said or "lists no photos" in said), said
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize("bad", [["--photos", "train"], ["--n", "0"], ["--suite", "other"], ["--cell", "x/y"],
                                 ["--engine", "spark"], ["--models", "/nonexistent"],
                                 ["--settings", "/nonexistent.yaml"], ["--threads", "0"], ["--jobs", "0"]])
def test_bad_options_fail_before_any_compute(bad, tmp_path, tiny_models):
    result = _evaluate(["--quick", "--models", str(tiny_models), "--out", str(tmp_path / "r"),
                        "--work", str(tmp_path / "w"), *bad])
    assert result.exit_code == 2, result.output
    assert not (tmp_path / "w").exists() and not (tmp_path / "r").exists()


def test_cell_key_follows_the_cells_own_settings_not_the_whole_table(tmp_path, monkeypatch):
    from workers.evaluation_cells import portable_hash
    from pipeline.tuning.grid_search import write_table
    from pipeline.execution.config import load_config
    from pipeline.restoration import solver_settings as ss

    flash = {"flash": {"best": {"step_size": 2.0, "noise_correction": 0.6, "psnr": 25.0, "nfe": 40.0}, "crops": 8}}
    monkeypatch.setattr(ss, "TABLE", tmp_path / "settings.yaml")
    write_table(ss.TABLE, "ldps", "gaussian_blur", flash, "test")
    ldps, gml = load_config(None, ["solver.name=ldps"]), load_config(None, ["solver.name=gml_dps"])
    moved = load_config(None, ["solver.name=ldps", "models.autoencoder=/elsewhere/autoencoder"])
    key = portable_hash(ldps, "gaussian_blur")
    assert portable_hash(moved, "gaussian_blur") == key  # model folders enter by fingerprint, not path
    moved.models.estimators = {"gaussian_blur": "/elsewhere/estimator"}
    assert portable_hash(moved, "gaussian_blur") == key  # a cell's samples carry their parameters
    gml_key = portable_hash(gml, "gaussian_blur")
    write_table(ss.TABLE, "gml_dps", "gaussian_blur", flash, "retuned another solver")
    assert portable_hash(ldps, "gaussian_blur") == key and portable_hash(gml, "gaussian_blur") != gml_key
    flash["flash"]["best"]["step_size"] = 1.0
    write_table(ss.TABLE, "ldps", "gaussian_blur", flash, "retuned this one")
    assert portable_hash(ldps, "gaussian_blur") != key


def test_a_cell_run_before_a_retune_is_reported_stale(tmp_path, monkeypatch):
    """The report flags cells whose recorded settings the table no longer resolves to, per mode."""
    from pipeline.reproduction.report import stale_settings
    from pipeline.reproduction.suite import Cell
    from pipeline.tuning.grid_search import write_table
    from pipeline.restoration import solver_settings as ss

    monkeypatch.setattr(ss, "TABLE", tmp_path / "settings.yaml")
    best = {"step_size": 2.0, "noise_correction": 0.6, "psnr": 25.0, "nfe": 40.0}
    write_table(ss.TABLE, "ldps", "gaussian_blur", {"flash": {"best": best, "crops": 8}}, "test")
    ran = {"settings": {"params": {"step_size": 2.0}, "noise_correction": 0.6, "tuned": True}}
    flash, equal = Cell("blur_varying", "ldps", "flash"), Cell("blur_varying", "ldps", "equal_nfe")
    assert not stale_settings(flash, ran) and not stale_settings(Cell("blur_varying", "none", "input"), None)
    assert stale_settings(Cell("blur_varying", "ldps", "start-25"), {"settings": {**ran["settings"], "noise_correction": 1.2}})
    assert not stale_settings(equal, {"settings": {"params": {}, "noise_correction": None}})   # built-ins, untuned
    write_table(ss.TABLE, "ldps", "gaussian_blur",
                {"equal_nfe": {"best": {"step_size": 0.5, "psnr": 16.0, "nfe": 60.0}, "crops": 4, "steps": 60}}, "short")
    assert stale_settings(equal, {"settings": {"params": {}, "noise_correction": None}}) and not stale_settings(flash, ran)


def test_a_path_table_feeds_every_cell_and_the_stale_check(tmp_path, tiny_models, monkeypatch):
    """`evaluate --settings TABLE` (another prior's table): the cells, their equal-NFE ζ and the
    report's staleness check all read that table, never the shipped one."""
    from workers.evaluation_cells import Evaluation, portable_hash
    from pipeline.reproduction.report import stale_settings
    from pipeline.tuning.grid_search import write_table
    from pipeline.restoration import solver_settings as ss

    shipped, other = tmp_path / "shipped.yaml", tmp_path / "other.yaml"
    monkeypatch.setattr(ss, "TABLE", shipped)
    for path, zeta in ((shipped, 0.5), (other, 16.0)):
        flash_best = {"step_size": zeta, "noise_correction": 0.6, "psnr": 25.0, "nfe": 40.0}
        equal_best = {"step_size": zeta * 2, "psnr": 20.0, "nfe": 30.0}
        write_table(path, "ldps", "gaussian_blur", {"flash": {"best": flash_best, "crops": 8},
                                                    "equal_nfe": {"best": equal_best, "crops": 4, "steps": 30}}, "test")
    ev = Evaluation(models=tiny_models, crops01=torch.rand(2, 3, 16, 16), crop_keys=["a", "b"], budget=Budget.quick(),
                    out=tmp_path / "rep", work=tmp_path / "work", settings_table=str(other))
    monkeypatch.setattr(ev, "run", lambda cell, force=False: {"mean_nfe": 7.0})   # the Flash cell's NFE
    equal, flash = Cell("blur_varying", "ldps", "equal_nfe"), Cell("blur_varying", "ldps", "flash")
    task = task_named("blur_varying")
    cfg = ev.config_for(equal, task)
    assert cfg.solver.params["step_size"] == 32.0 and cfg.solver.settings == str(other)
    assert ev.settings(equal, task, cfg)["params"]["step_size"] == 32.0
    flash_cfg = ev.config_for(flash, task)
    assert ev.settings(flash, task, flash_cfg)["params"]["step_size"] == 16.0
    ran = {"settings": ev.settings(flash, task, flash_cfg)}
    assert not stale_settings(flash, ran, str(other)) and stale_settings(flash, ran)   # stale against the shipped one
    ran_equal = {"settings": ev.settings(equal, task, cfg)}
    assert not stale_settings(equal, ran_equal, str(other)) and stale_settings(equal, ran_equal)
    ev.threads = 1   # solver threads: set for the job, never in a cell key
    one = ev.config_for(flash, task)
    assert one.execution.solver_threads == 1
    assert portable_hash(one, "gaussian_blur") == portable_hash(flash_cfg, "gaussian_blur")
