"""The typed config: YAML + overrides, fail-fast validation, an output hash that ignores execution."""
from pathlib import Path

import pytest

from pipeline.execution.config import load_config, save_config


def test_overrides_and_yaml(tmp_path):
    f = tmp_path / "job.yaml"
    f.write_text("seed: 7\nsolver:\n  name: gml_dps\n  params: {step_size: 3.0}\n")
    cfg = load_config(str(f), ["solver.params.gamma=0.05", "execution.batch_size=4"])
    assert cfg.seed == 7 and cfg.solver.name == "gml_dps"
    assert cfg.solver.params == {"step_size": 3.0, "gamma": 0.05}
    assert cfg.execution.batch_size == 4


def test_hash_ignores_execution_but_not_solver(tmp_path):
    base = load_config().output_hash()
    assert load_config(None, ["execution.batch_size=3", "execution.engine=local"]).output_hash() == base
    assert load_config(None, ["solver.params.step_size=2"]).output_hash() != base
    assert load_config(None, ["seed=1"]).output_hash() != base


def test_hash_is_the_same_in_a_checkout_at_another_path(monkeypatch):
    """A clone elsewhere names the shipped models by its own absolute paths; its job is the same job
    (and resumes the same output), while a model from anywhere else still changes the hash."""
    import pipeline.execution.config as config

    here, root = load_config(), str(config.MODELS_DIR)
    moved = load_config()
    m = moved.models
    m.autoencoder, m.denoiser = (u.replace(root, "/elsewhere/models") for u in (m.autoencoder, m.denoiser))
    m.severity = {f: u.replace(root, "/elsewhere/models") for f, u in m.severity.items()}
    m.estimators = {f: u.replace(root, "/elsewhere/models") for f, u in m.estimators.items()}
    base = here.output_hash()
    monkeypatch.setattr(config, "MODELS_DIR", Path("/elsewhere/models"))
    assert moved.output_hash() == base
    assert load_config(None, ["models.denoiser=s3://bucket/ldm"]).output_hash() != base


def test_options_added_later_keep_older_hashes_at_their_defaults():
    """input.noise unset and no estimators behave as before those options existed, so they hash alike."""
    base = load_config()
    bare = load_config()
    bare.models.estimators = {}
    assert load_config(None, ["input.noise=0.05"]).output_hash() != base.output_hash()
    assert bare.output_hash() != base.output_hash()   # the shipped estimator decides blind samples' outputs
    assert "estimators" not in bare.hashed_fields()["models"] and "noise" not in base.hashed_fields()["input"]


def test_round_trip(tmp_path):
    cfg = load_config(None, ["flash.noise_correction=1.0"])
    save_config(cfg, str(tmp_path / "c.yaml"))
    assert load_config(str(tmp_path / "c.yaml")).output_hash() == cfg.output_hash()


@pytest.mark.parametrize("override,needle", [
    ("solver.nope=1", "unknown key"), ("execution.engine=spark", "engine"),
    ("execution.batch_size=0", "batch_size"), ("flash.init=magic", "flash.init"),
    ("execution.max_error_rate=2", "max_error_rate"), ("flash.noise_correction=-1", "noise_correction"),
    ("justakey", "section.key=value"),
    # options that used to be silently ignored are now refused
    ("models.dtype=bfloat16", "models.dtype"), ("metrics.fid=true", "unknown key"),
    ("solver.steps=100", "name the sampler"), ("execution.engine=local execution.solver_actors=2", "local engine"),
    ("solver.sampler=ddpm solver.eta=0.5", "solver.eta is DDIM"),
    # Ray-only execution options are refused by the local engine, not dropped
    ("execution.engine=local execution.gpus_per_solver=0.5", "gpus_per_solver .*local engine"),
    ("execution.engine=local execution.cpus_per_actor=2", "cpus_per_actor .*local engine"),
    ("execution.engine=local execution.max_wait_s=1", "max_wait_s .*local engine"),
    # wrong types are refused with the dotted path
    ("execution.batch_size=four", "execution.batch_size: expected int"), ("seed=1.5", "seed: expected int"),
    ("flash.enabled=maybe", "flash.enabled: expected bool"),
    ("flash.enabled=false flash.max_nfe=10", "baseline runs its whole schedule"), ("flash.max_nfe=0", "max_nfe"),
    ("execution.budget_hours=-1", "budget_hours"),
])
def test_bad_config_fails_fast(override, needle):
    with pytest.raises(ValueError, match=needle):
        load_config(None, override.split(" "))


def test_ray_only_options_are_accepted_by_ray_and_defaults_by_local():
    sets = ["execution.gpus_per_solver=0.5", "execution.cpus_per_actor=2", "execution.max_wait_s=1"]
    assert load_config(None, ["execution.engine=ray", *sets]).execution.max_wait_s == 1.0
    local = load_config(None, ["execution.engine=local", "execution.solver_threads=1", "execution.max_wait_s=10"])
    assert local.execution.solver_threads == 1  # honoured by the local engine (tests/workers/test_local_engine.py)


def test_restore_and_training_configs_share_one_loader(tmp_path):
    """The same rules for both dialects: YAML ← overrides, unknown keys and bad types refused,
    each section's own validation, and the resolved config saved as YAML that reloads."""
    from pipeline.training.config import build_config
    from pipeline.execution.typed_config import save

    cfg = build_config("severity", "cpu", None, ["loss.head_channels=32", "optim.lr=1e-4"],
                       {"output": str(tmp_path / "m"), "data.url": "data/corpus/train", "autoencoder": "models/ae"})
    assert cfg.loss.head_channels == 32 and cfg.optim.lr == 1e-4
    save(cfg, str(tmp_path / "t.yaml"))
    assert build_config("severity", "cpu", str(tmp_path / "t.yaml")) == cfg
    for bad, needle in (("run.nope=1", "unknown key"), ("run.batch_size=x", "run.batch_size: expected int"),
                        ("loss.variance_loss=l7", "variance_loss"), ("optim.ema_decay=1.5", "ema_decay")):
        with pytest.raises(ValueError, match=needle):
            build_config("severity", "cpu", str(tmp_path / "t.yaml"), [bad])


def test_whole_photo_options_hash_only_when_changed():
    """flash.starts / tiling / tile_overlap change only photos off the prior's size: at their
    defaults they leave the hash of outputs made before they existed; any other value moves it."""
    base = load_config().output_hash()
    assert load_config(None, ["flash.starts=region", "flash.tiling=overlap", "flash.tile_overlap=2"]).output_hash() == base
    moved = {load_config(None, [o]).output_hash() for o in ("flash.starts=image", "flash.starts=image-max",
                                                              "flash.tiling=shifted", "flash.tile_overlap=8")}
    assert len(moved) == 4 and base not in moved
