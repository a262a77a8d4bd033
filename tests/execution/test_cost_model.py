"""The cost model: a staggered batch costs Σ_k c(active rows at k) + f(B), batches as the job forms them."""
import pytest

from pipeline.execution.cost_model import (architecture_fingerprint, batch_seconds, batches, find_entry, interpolate,
                                           predict_solve_seconds, read_table, write_entries)

ENTRY = {"per_batch": {"1": {"step_s": 1.0, "fixed_s": 0.5}, "2": {"step_s": 1.5, "fixed_s": 0.5},
                       "4": {"step_s": 2.5, "fixed_s": 1.0}}}


def test_interpolation_is_exact_at_calibrated_sizes_and_linear_between_and_beyond():
    table = {1: 1.0, 2: 1.5, 4: 2.5}
    assert interpolate(table, 2) == 1.5 and interpolate(table, 3) == 2.0 and interpolate(table, 8) == 4.5


def test_a_staggered_batch_pays_only_for_its_active_rows():
    # starts 3 and 1: steps 3, 2 run one row (1.0 s each); steps 1, 0 run two rows (1.5 s each); + f(2)
    assert batch_seconds([[3], [1]], ENTRY) == pytest.approx(2 * 1.0 + 2 * 1.5 + 0.5)
    assert batch_seconds([[0]], ENTRY) == pytest.approx(1.0 + 0.5)


def test_a_photo_pays_for_its_tiles_as_rows():
    """Without a canvas calibration, a photo of tiles starting at 3, 1 and 1 costs what three crops with those starts cost;
    beside a crop starting at 0 its tiles and the crop are the step's rows."""
    assert batch_seconds([[3, 1, 1]], ENTRY) == pytest.approx(batch_seconds([[3], [1], [1]], ENTRY))
    # steps 3, 2: one tile (1.0 s); step 1: three (2.0 s); step 0: four (2.5 s); f(4) = 1.0
    assert batch_seconds([[3, 1, 1], [0]], ENTRY) == pytest.approx(2 * 1.0 + 2.0 + 2.5 + 1.0)


def test_a_photo_costs_a_whole_canvas_step_by_area_every_step_from_its_top_start():
    """With canvases calibrated at 1000 and 3000 px (0.25 / 1.25 s a step, 1 / 2 s once), a 2000-px photo whose top
    start is 3 costs 4 steps × 0.75 s + 1.5 s whatever its other tiles' starts, a 500-px one half the smaller
    canvas's (through 0); crops beside it keep their own c(n) and f(B)."""
    entry = {**ENTRY, "canvas": [{"pixels": 1000, "step_s": 0.25, "fixed_s": 1.0},
                                 {"pixels": 3000, "step_s": 1.25, "fixed_s": 2.0}]}
    assert batch_seconds([[3, 1, 1, 0]], entry, [2000]) == pytest.approx(4 * 0.75 + 1.5)
    assert batch_seconds([[3, 3, 3, 3]], entry, [2000]) == batch_seconds([[3, 0]], entry, [2000])
    assert batch_seconds([[3, 1, 1, 0]], entry, [500]) == pytest.approx(4 * 0.125 + 0.5)
    assert batch_seconds([[3, 1, 1, 0], [1]], entry, [2000, 4096]) == pytest.approx(4 * 0.75 + 1.5 + 2 * 1.0 + 0.5)
    assert batch_seconds([[3], [1]], entry, [4096, 4096]) == batch_seconds([[3], [1]], ENTRY)


def test_batches_follow_the_jobs_bucketing():
    group = ("gaussian_blur", (64, 64))
    records = [(group, s, [s]) for s in (10, 12, 80)] + [(("inpainting", (64, 64)), 11, [11])]
    got = batches(records, batch_size=2, width=25)
    assert sorted(sorted(t[0] for t, _ in b) for b in got) == [[10, 12], [11], [80]]
    assert predict_solve_seconds(records, 2, 25, ENTRY) == pytest.approx(
        sum(batch_seconds([t for t, _ in b], ENTRY) for b in got))


def test_the_newest_matching_calibration_is_used():
    entries = [{"device_class": "cpu", "solver": "ldps", "architecture": "a", "dtype": "float32", "measured": t,
                "per_batch": {}, "id": t} for t in (1, 3, 2)] + [
        {"device_class": "h100", "solver": "ldps", "architecture": "a", "dtype": "float32", "measured": 9},
        {"device_class": "cpu", "solver": "ldps", "architecture": "a", "dtype": "float64", "measured": 9}]
    assert find_entry(entries, "cpu", "ldps", "a")["id"] == 3 and find_entry(entries, "cpu", "psld", "a") is None
    assert find_entry(entries, "cpu", "ldps", "b") is None and find_entry(entries, "cpu", "ldps", "a", "float64")


def test_retrained_weights_keep_the_calibration_and_another_architecture_does_not(tmp_path):
    from tests.helpers import tiny_latent_diffusion

    arch = architecture_fingerprint(tiny_latent_diffusion(seed=0))
    retrained = tiny_latent_diffusion(seed=7, num_timesteps=50)   # other weights and schedule, same networks
    retrained.prediction = "v_prediction"
    assert architecture_fingerprint(retrained) == arch
    assert architecture_fingerprint(tiny_latent_diffusion(kind="kl")) != arch           # another autoencoder
    assert architecture_fingerprint(tiny_latent_diffusion(image_size=32)) != arch       # other latent size
    old = {"device_class": "cpu", "solver": "ldps", "model_hash": "w1+w2", "measured": 1, "per_batch": {}}
    (tmp_path / "calibration.json").write_text('{"version": 1, "entries": [%s]}' % str(old).replace("'", '"'))
    assert find_entry(read_table(tmp_path), "cpu", "ldps", arch) is None   # keyed by weights: matches nothing
    write_entries(tmp_path, [{**ENTRY, "device_class": "cpu", "solver": "ldps", "architecture": arch,
                              "dtype": "float32", "measured": 2}])
    assert [e.get("architecture") for e in read_table(tmp_path)] == [arch]   # the version-1 entry is dropped


def test_the_shipped_models_are_calibrated_on_cpu_for_every_restoring_solver():
    """A shipped model whose architecture changed must come with a new calibration (`bench calibrate`)."""
    from pipeline.execution.config import load_config
    from pipeline.restoration.options import MODELS_DIR
    from pipeline.models.model_store import load_latent_diffusion
    from pipeline.solvers import SOLVERS

    cfg = load_config()
    arch = architecture_fingerprint(load_latent_diffusion(cfg.models.autoencoder, cfg.models.denoiser))
    restoring = sorted(set(SOLVERS) - {"unconditional"})   # unconditional ignores the measurement: never priced
    missing = [s for s in restoring if find_entry(read_table(MODELS_DIR), "cpu", s, arch, cfg.models.dtype) is None]
    assert not missing, f"models/calibration.json has no cpu entry for architecture {arch}: {missing}"
