"""Tuned solver settings: the table feeds jobs, user settings win, and the table enters the config hash."""
from __future__ import annotations

import pytest

from pipeline.restoration import solver_settings as ss
from pipeline.execution.config import load_config
from pipeline.tuning.grid_search import write_table

RESULT = {"flash": {"best": {"step_size": 2.0, "noise_correction": 0.6, "psnr": 25.0, "nfe": 40.0}, "crops": 8},
          "baseline": {"best": {"step_size": 0.5, "psnr": 23.0, "nfe": 1000.0}, "crops": 2}}


@pytest.fixture()
def table(tmp_path, monkeypatch):
    path = tmp_path / "settings.yaml"
    write_table(path, "ldps", "gaussian_blur", RESULT, "test")
    monkeypatch.setattr(ss, "TABLE", path)
    return path


def test_written_table_resolves_per_mode(table):
    assert ss.load_table()["version"] == 1
    assert ss.resolve("ldps", "gaussian_blur", True, {}, "tuned", str(table)) == ({"step_size": 2.0}, 0.6)
    assert ss.resolve("ldps", "gaussian_blur", False, {}, "tuned", str(table))[0] == {"step_size": 0.5}
    # explicit user settings win; solver.settings=null asks for the built-ins
    assert ss.resolve("ldps", "gaussian_blur", True, {"step_size": 3.0}, 1.0, str(table)) == ({"step_size": 3.0}, 1.0)
    assert ss.resolve("ldps", "gaussian_blur", True, {}, "tuned", None) == ({}, 1.2)


def test_an_untuned_entry_is_refused_unless_set_explicitly_or_opted_into(table):
    with pytest.raises(ValueError, match="no entry ldps/inpainting/flash.*solver.params.*flash.noise_correction"):
        ss.resolve("ldps", "inpainting", True, {}, "tuned", str(table), untuned="error")
    with pytest.raises(ValueError, match="no entry ldps/inpainting/flash: set flash.noise_correction explicitly"):
        ss.resolve("ldps", "inpainting", True, {"step_size": 3.0}, "tuned", str(table), untuned="error")  # c: built-in
    explicit = ss.resolve("ldps", "inpainting", False, {"step_size": 3.0}, "tuned", str(table), untuned="error")
    assert explicit == ({"step_size": 3.0}, 1.2)
    # opted in, or a report asking what a cell resolves to: the built-ins
    assert ss.resolve("ldps", "inpainting", True, {}, "tuned", str(table), untuned="defaults") == ({}, 1.2)
    assert ss.resolve("ldps", "inpainting", True, {}, "tuned", str(table)) == ({}, 1.2)
    assert [ss.source("ldps", "inpainting", True, p, c, str(table), u) for p, c, u in (
        ({"step_size": 3.0}, 0.5, "error"), ({}, "tuned", "defaults"))] == ["explicit", "defaults"]
    assert ss.source("ldps", "gaussian_blur", True, {"step_size": 3.0}, "tuned", str(table)) == "tuned"
    assert ss.source("unconditional", "inpainting", False, {}, "tuned", str(table)) == "explicit"  # nothing to tune
    assert ss.source("ldps", "inpainting", True, {}, "tuned", None) == "defaults"  # solver.settings=null


def test_a_job_on_an_untuned_entry_is_refused_before_any_model_loads(table, tmp_path):
    from pipeline.io.shards import write_shard
    from tests.helpers import archive_samples
    from workers.execute import execute

    write_shard(str(tmp_path / "in" / "a.tar"), archive_samples(1))
    cfg = load_config(None, ["execution.engine=local"])   # the fixture's table tunes gaussian_blur only
    with pytest.raises(ValueError, match="no entry ldps/inpainting/flash"):
        execute(cfg, str(tmp_path / "in"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="solver.untuned"):
        load_config(None, ["solver.untuned=maybe"])
    opted = load_config(None, ["solver.untuned=defaults"])
    got = {f: (s["entry"], s["source"], s["params"], s["noise_correction"]) for f, s in opted.settings_sources().items()}
    assert got == {"downsample": ("ldps/gaussian_blur/flash", "tuned", {"step_size": 2.0}, 0.6),
                   "gaussian_blur": ("ldps/gaussian_blur/flash", "tuned", {"step_size": 2.0}, 0.6),
                   "inpainting": ("ldps/inpainting/flash", "defaults", {}, 1.2),
                   # untuned here, motion_blur borrows its relative's entry (Operator.settings_of)
                   "motion_blur": ("ldps/gaussian_blur/flash", "tuned", {"step_size": 2.0}, 0.6),
                   "jpeg": ("ldps/gaussian_blur/flash", "tuned", {"step_size": 2.0}, 0.6),
                   "nonlinear_blur": ("ldps/nonlinear_blur/flash", "defaults", {}, 1.2)}
    assert opted.output_hash() == cfg.output_hash()   # the choice decides whether a job runs, not what it writes
    explicit = load_config(None, ["solver.params.step_size=3", "flash.noise_correction=1.0"]).settings_sources()
    assert {f: s["source"] for f, s in explicit.items()} == {
        "downsample": "tuned", "gaussian_blur": "tuned", "inpainting": "explicit", "jpeg": "tuned",
        "motion_blur": "tuned", "nonlinear_blur": "explicit"}
    cfg.models.severity = {"gaussian_blur": "unused"}   # a caller restoring one family narrows the check to it
    assert list(cfg.settings_sources()) == ["gaussian_blur"]


def test_the_restorer_refuses_an_untuned_family_it_meets(table, tiny_models):
    """A family outside models.severity (a baseline job meets any) is checked when first restored."""
    from pipeline.execution.restorer import build_restorer

    models = [f"models.autoencoder={tiny_models / 'autoencoder'}", f"models.denoiser={tiny_models / 'ldm'}",
              "models.device=cpu", "flash.enabled=false"]
    job = load_config(None, models)
    job.models.severity = {}
    restorer = build_restorer(job)
    assert restorer.flash_for("gaussian_blur").solver.config["step_size"] == 0.5
    with pytest.raises(ValueError, match="no entry ldps/inpainting/baseline"):
        restorer.flash_for("inpainting")


def test_the_shipped_table_tunes_every_combination_a_default_job_can_run():
    """The demo and the paper suite run on tuned entries only; PSLD cannot restore nonlinear blur (no Aᵀ)."""
    for solver in ("ldps", "gml_dps", "psld", "resample"):
        for flash in ("true", "false"):
            srcs = load_config(None, [f"solver.name={solver}", f"flash.enabled={flash}"]).settings_sources()
            assert srcs and {s["source"] for s in srcs.values()} == {"tuned"}, (solver, flash)
    assert "nonlinear_blur" not in load_config(None, ["solver.name=psld"]).settings_sources()
    # ... and a job's Restorer builds it a solver all the same (its samples fail on their own, as before)
    assert ss.resolve("psld", "nonlinear_blur", True, {}, "tuned", ss.table_for("tuned"), untuned="error") == ({}, 1.2)
    with pytest.raises(ValueError, match="no entry unconditional/downsample/flash"):
        load_config(None, ["solver.name=unconditional"]).settings_sources()   # Flash's c for it was never tuned


def test_table_content_enters_the_config_hash(table):
    before = load_config().output_hash()
    untuned = load_config(None, ["solver.settings=null"]).output_hash()
    write_table(table, "ldps", "gaussian_blur", {"flash": {**RESULT["flash"], "best": {**RESULT["flash"]["best"],
                                                                                      "step_size": 1.0}}}, "retuned")
    assert load_config().output_hash() != before
    assert load_config(None, ["solver.settings=null"]).output_hash() == untuned


def test_a_table_named_by_path_feeds_jobs_and_the_hash(table, tmp_path, tiny_models):
    """solver.settings=PATH reads another prior's table (what `tune --table` wrote) instead of the shipped one."""
    from pipeline.execution.restorer import build_restorer

    other = tmp_path / "other.yaml"
    write_table(other, "ldps", "gaussian_blur", {"flash": {**RESULT["flash"], "best": {
        **RESULT["flash"]["best"], "step_size": 7.0, "noise_correction": 0.3}}}, "another prior")
    cfg = load_config(None, [f"solver.settings={other}"])
    assert ss.resolve("ldps", "gaussian_blur", True, {}, "tuned", ss.table_for(cfg.solver.settings)) == (
        {"step_size": 7.0}, 0.3)
    assert ss.table_for("tuned") == str(table) and ss.table_for(None) is None
    assert cfg.output_hash() not in (load_config().output_hash(), load_config(None, ["solver.settings=null"]).output_hash())
    models = [f"models.autoencoder={tiny_models / 'autoencoder'}", f"models.denoiser={tiny_models / 'ldm'}",
              "models.device=cpu"]
    for setting, want in ((str(other), (7.0, 0.3)), ("tuned", (2.0, 0.6))):
        job = load_config(None, models + [f"solver.settings={setting}"])
        job.models.severity = {"gaussian_blur": str(tiny_models / "severity-gaussian_blur")}
        flash = build_restorer(job).flash_for("gaussian_blur")
        assert (flash.solver.config["step_size"], flash.noise_correction) == want, setting


@pytest.mark.parametrize("bad", ["solver.settings=best", "flash.noise_correction=fast", "flash.noise_correction=-1"])
def test_bad_settings_fail_fast(bad):
    with pytest.raises(ValueError):
        load_config(None, [bad])


@pytest.mark.parametrize("content", [
    b"\x00\xff\xfe binary", b"just: [unclosed", b"- a list\n", b"version: 1\n", b"x" * (ss.MAX_BYTES + 1),
    b"version: 1\nsettings: {rm -rf: {}}", b"version: 1\nsettings: {ldps: {gaussian_blur: {fast: {}}}}",
    b"version: 1\nsettings: {ldps: {gaussian_blur: {flash: {params: {zeta: 1}}}}}",
    b"version: 1\nsettings: {ldps: {gaussian_blur: {flash: {params: [1]}}}}",
    b"version: 1\nsettings: {ldps: {gaussian_blur: {flash: {noise_correction: .nan}}}}"])
def test_a_hostile_settings_path_fails_fast_with_its_name(tmp_path, content):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(content)
    for path in (bad, tmp_path, tmp_path / "missing.yaml"):
        with pytest.raises(ValueError, match="solver.settings") as err:
            load_config(None, [f"solver.settings={path}"])
        assert str(path) in str(err.value)


def test_tune_command_picks_the_best_trial_and_writes_table_and_report(tiny_models, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    table, doc = tmp_path / "settings.yaml", tmp_path / "tuning.md"
    result = CliRunner().invoke(app, [
        "tune", "--models", str(tiny_models), "--crops", "2", "--baseline-crops", "1", "--step-sizes", "0.5,2",
        "--noise-corrections", "1.2", "--baseline-step-sizes", "1", "--batch-size", "2",
        "--table", str(table), "--doc", str(doc)])
    assert result.exit_code == 0, result.output
    got = yaml.safe_load(table.read_text())
    entry = got["settings"]["ldps"]["gaussian_blur"]
    assert got["version"] == 1 and entry["baseline"]["params"] == {"step_size": 1.0}
    assert entry["flash"]["noise_correction"] == 1.2 and entry["flash"]["params"]["step_size"] in (0.5, 2.0)
    rows = [ln for ln in doc.read_text().splitlines() if ln.startswith("| flash") or ln.startswith("| baseline")]
    assert len(rows) == 3 and sum(ln.endswith("| yes |") for ln in rows) == 2
    best = max((r for r in rows if r.startswith("| flash")), key=lambda r: float(r.split("|")[4]))
    assert best.endswith("| yes |") and f"| {entry['flash']['params']['step_size']} |" in best
    bad = CliRunner().invoke(app, ["tune", "--models", str(tiny_models), "--step-sizes", "fast", "--table", str(table)])
    assert bad.exit_code != 0


def test_tune_noise_sets_the_validation_measurements_noise(tiny_models, tmp_path):
    """--noise degrades the validation crops at another σ (an archive noisier than training)."""
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    input_psnr = {}
    for noise in ("0", "0.2"):
        table, doc = tmp_path / f"s{noise}.yaml", tmp_path / f"t{noise}.md"
        out = CliRunner().invoke(app, [
            "tune", "--models", str(tiny_models), "--crops", "2", "--step-sizes", "1", "--noise-corrections", "1.2",
            "--skip-baseline", "--batch-size", "2", "--noise", noise, "--table", str(table), "--doc", str(doc)])
        assert out.exit_code == 0, out.output
        got = yaml.safe_load(table.read_text())
        assert got["tuned_on"].endswith(f"noise {noise}")
        assert got["settings"]["ldps"]["gaussian_blur"]["flash"]["score"]["noise"] == float(noise)
        row = next(ln for ln in doc.read_text().splitlines() if ln.startswith("| flash"))
        input_psnr[noise] = float(row.split("|")[5])
    assert input_psnr["0"] > input_psnr["0.2"] + 3, input_psnr
    bad = CliRunner().invoke(app, ["tune", "--models", str(tiny_models), "--noise", "-0.1"])
    assert bad.exit_code != 0


def test_tune_grids_any_solver_hyperparameter_and_the_short_schedule(tiny_models, tmp_path):
    """ReSample has no ζ: its own hyperparameters are the grid; --baseline-steps tunes the equal-NFE entry."""
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    table, doc = tmp_path / "settings.yaml", tmp_path / "tuning.md"
    result = CliRunner().invoke(app, [
        "tune", "--models", str(tiny_models), "--solver", "resample", "--crops", "2", "--baseline-crops", "2",
        "--step-sizes", "", "--noise-corrections", "1.2", "--param", "resample_step=100,1600",
        "--baseline-step-sizes", "", "--baseline-param", "every_n=2", "--baseline-steps", "4",
        "--batch-size", "2", "--table", str(table), "--doc", str(doc)])
    assert result.exit_code == 0, result.output
    entry = yaml.safe_load(table.read_text())["settings"]["resample"]["gaussian_blur"]
    assert entry["flash"]["params"]["resample_step"] in (100, 1600) and "step_size" not in entry["flash"]["params"]
    assert entry["equal_nfe"] == {**entry["equal_nfe"], "params": {"every_n": 2}, "steps": 4}
    assert "baseline" not in entry and "## resample / gaussian_blur / equal_nfe (4 steps from noise)" in doc.read_text()
    for bad in (["--param", "zeta=1"], ["--param", "nonsense"], ["--skip-flash", "--skip-baseline"]):
        out = CliRunner().invoke(app, ["tune", "--models", str(tiny_models), "--table", str(table), *bad])
        assert out.exit_code == 2, (bad, out.output)


def test_tune_merge_keeps_the_better_entry_and_refuses_scores_that_do_not_compare(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from jobs.cli import app

    main, edge, other = tmp_path / "main.yaml", tmp_path / "edge.yaml", tmp_path / "other.yaml"
    write_table(main, "ldps", "gaussian_blur", RESULT, "grid")
    better = {"flash": {"best": {**RESULT["flash"]["best"], "step_size": 4.0, "psnr": 25.5}, "crops": 8},
              "baseline": {"best": {**RESULT["baseline"]["best"], "step_size": 0.25, "psnr": 22.0}, "crops": 2}}
    write_table(edge, "ldps", "gaussian_blur", better, "edge")
    write_table(edge, "psld", "inpainting", {"flash": RESULT["flash"]}, "new entry")
    before = main.read_text()
    dry = CliRunner().invoke(app, ["tune-merge", str(edge), "--table", str(main), "--dry-run"])
    assert dry.exit_code == 0 and main.read_text() == before, dry.output
    ok = CliRunner().invoke(app, ["tune-merge", str(edge), "--table", str(main)])
    assert ok.exit_code == 0, ok.output
    got = yaml.safe_load(main.read_text())
    assert got["version"] == 2 and "edge.yaml" in got["tuned_on"]
    assert got["settings"]["ldps"]["gaussian_blur"]["flash"]["params"] == {"step_size": 4.0}      # higher PSNR wins
    assert got["settings"]["ldps"]["gaussian_blur"]["baseline"]["params"] == {"step_size": 0.5}   # lower is kept
    assert got["settings"]["psld"]["inpainting"]["flash"]["score"]["psnr"] == 25.0                # missing is added
    # merging the same table again changes nothing, not even the version
    assert CliRunner().invoke(app, ["tune-merge", str(edge), "--table", str(main)]).exit_code == 0
    assert yaml.safe_load(main.read_text())["version"] == 2
    # a score on other crops does not compare: refused, by name, and the table is untouched
    write_table(other, "ldps", "gaussian_blur", {"flash": {**better["flash"], "crops": 16}}, "16 crops")
    merged = main.read_text()
    bad = CliRunner().invoke(app, ["tune-merge", str(other), "--table", str(main)])
    assert bad.exit_code == 2 and "ldps/gaussian_blur/flash" in bad.output and "crops" in bad.output
    assert main.read_text() == merged
    (tmp_path / "junk.yaml").write_text("settings: [1, 2]\nversion: 1\n")
    junk = CliRunner().invoke(app, ["tune-merge", str(tmp_path / "junk.yaml"), "--table", str(main)])
    assert junk.exit_code == 2 and main.read_text() == merged
    nowhere = CliRunner().invoke(app, ["tune-merge", str(edge), "--table", str(tmp_path / "no" / "such.yaml")])
    assert nowhere.exit_code == 2 and "cannot write" in nowhere.output


def test_an_entry_may_name_its_sampler_and_a_job_that_sets_one_keeps_its_own(tiny_models):
    from pipeline.execution.restorer import build_restorer

    shipped = ss.table_for("tuned")
    assert ss.sampler_of("ldps", "downsample", True, shipped) == {"name": "ddim", "steps": 100, "eta": 0.0}
    assert ss.sampler_of("ldps", "gaussian_blur", True, shipped) is None and ss.sampler_of("ldps", "downsample", True,
                                                                                            None) is None
    for bad in ({"name": "euler"}, {"name": "ddim", "steps": 0}, {"name": "ddim", "eta": -1}, {"name": "ddim", "x": 1}):
        with pytest.raises(ValueError, match="sampler"):
            ss.check_sampler(bad)
    models = [f"models.autoencoder={tiny_models / 'autoencoder'}", f"models.denoiser={tiny_models / 'ldm'}",
              "models.device=cpu"]

    def restorer(*extra):
        cfg = load_config(None, models + list(extra))
        cfg.models.severity = {f: str(tiny_models / f"severity-{f}") for f in ("downsample", "gaussian_blur")}
        return build_restorer(cfg)
    r = restorer()
    own = r.flash_for("downsample").solver.sampler
    assert type(own).__name__ == "DDIMSampler" and own.num_steps == min(100, r.ldm.schedule.num_timesteps)
    assert r.flash_for("gaussian_blur").solver.sampler is r.sampler
    fixed = restorer("solver.sampler=ddpm")
    assert fixed.flash_for("downsample").solver.sampler is fixed.sampler
