"""The cost model: a staggered batch costs Σ_k c(active rows at k) + f(B), batches as the job forms them."""
import pytest

from pipeline.execution.cost_model import batch_seconds, batches, find_entry, interpolate, predict_solve_seconds

ENTRY = {"per_batch": {"1": {"step_s": 1.0, "fixed_s": 0.5}, "2": {"step_s": 1.5, "fixed_s": 0.5},
                       "4": {"step_s": 2.5, "fixed_s": 1.0}}}


def test_interpolation_is_exact_at_calibrated_sizes_and_linear_between_and_beyond():
    table = {1: 1.0, 2: 1.5, 4: 2.5}
    assert interpolate(table, 2) == 1.5 and interpolate(table, 3) == 2.0 and interpolate(table, 8) == 4.5


def test_a_staggered_batch_pays_only_for_its_active_rows():
    # starts 3 and 1: steps 3, 2 run one row (1.0 s each); steps 1, 0 run two rows (1.5 s each); + f(2)
    assert batch_seconds([3, 1], ENTRY) == pytest.approx(2 * 1.0 + 2 * 1.5 + 0.5)
    assert batch_seconds([0], ENTRY) == pytest.approx(1.0 + 0.5)


def test_batches_follow_the_jobs_bucketing():
    group = ("gaussian_blur", (64, 64))
    records = [(group, 10), (group, 12), (group, 80), (("inpainting", (64, 64)), 11)]
    got = batches(records, batch_size=2, width=25)
    assert sorted(sorted(b) for b in got) == [[10, 12], [11], [80]]
    assert predict_solve_seconds(records, 2, 25, ENTRY) == pytest.approx(sum(batch_seconds(b, ENTRY) for b in got))


def test_the_newest_matching_calibration_is_used():
    entries = [{"device_class": "cpu", "solver": "ldps", "model_hash": "m", "measured": t, "per_batch": {}, "id": t}
               for t in (1, 3, 2)] + [{"device_class": "h100", "solver": "ldps", "model_hash": "m", "measured": 9}]
    assert find_entry(entries, "cpu", "ldps", "m")["id"] == 3 and find_entry(entries, "cpu", "psld", "m") is None
