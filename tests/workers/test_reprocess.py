"""Reprocess only what needs it, with lineage, and merge runs into a view of one row per key."""
import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from jobs.cli import app
from pipeline.io.outputs import OutputStore
from tests.helpers import build_tiny_models, write_archive

runner = CliRunner()


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """A job whose pixel limit refuses every sample: nine error rows to redo."""
    root = tmp_path_factory.mktemp("reprocess")
    models = build_tiny_models(root / "models")
    sets = [a for o in models["overrides"] for a in ("--set", o)]
    archive = write_archive(root / "archive", n=9, shards=2)
    out = root / "first"
    res = runner.invoke(app, ["restore", "--input", archive, "--output", str(out), "--engine", "local",
                              "--max-error-rate", "1", *sets, "--set", "input.max_pixels=100"])
    assert res.exit_code == 0, res.output
    rows = OutputStore(str(out)).read_metrics().to_pylist()
    assert len(rows) == 9 and {r["error_kind"] for r in rows} == {"pixel_bomb"}
    return root, str(out)


def test_reprocess_redoes_selected_rows_with_lineage_and_merge_keeps_one_row_per_key(first_run, tmp_path):
    root, first = first_run
    second = str(tmp_path / "second")
    res = runner.invoke(app, ["reprocess", "--from", first, "--where", "status = 'error' and key != 's0008'",
                              "--output", second, "--set", "input.max_pixels=100000", "--engine", "local"])
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in OutputStore(second).read_metrics().to_pylist()}
    assert sorted(rows) == [f"s{i:04d}" for i in range(8)] and all(r["status"] == "ok" for r in rows.values())
    r = rows["s0003"]
    assert r["lineage_source"] == first and r["lineage_row"].endswith("#s0003")
    assert r["lineage_model_hash"] is None  # the source row was an error: no model made it
    assert json.loads(r["lineage_config_diff"]) == {"input.max_pixels": [100, 100000]}
    # a rerun of the same reprocess is a no-op (resume), and a bad predicate fails before compute
    again = runner.invoke(app, ["reprocess", "--from", first, "--where", "status = 'error' and key != 's0008'",
                                "--output", second, "--set", "input.max_pixels=100000", "--engine", "local"])
    assert again.exit_code == 0 and len(OutputStore(second).read_metrics()) == 8
    bad = runner.invoke(app, ["reprocess", "--from", first, "--where", "__import__('os')", "--output",
                              str(tmp_path / "x")])
    assert bad.exit_code == 1 and "not a supported predicate" in " ".join(bad.output.split())
    assert not (tmp_path / "x").exists()
    for rule, s8 in (("best", first), ("newest", first)):
        view = tmp_path / f"view-{rule}"
        res = runner.invoke(app, ["merge", first, second, "--output", str(view), "--rule", rule])
        assert res.exit_code == 0, res.output
        merged = pq.read_table(view / "view.parquet").to_pylist()
        assert len(merged) == len({m["key"] for m in merged}) == 9
        by_key = {m["key"]: m for m in merged}
        assert by_key["s0003"]["view_source"] == second and by_key["s0003"]["status"] == "ok"
        assert by_key["s0008"]["view_source"] == s8  # only the first run has it
        assert json.loads((view / "_view.json").read_text())["rows_by_source"] == {first: 1, second: 8}


@pytest.fixture(scope="module")
def broken_run(tmp_path_factory):
    """A job over sample-level errors (an undecodable image) and shard-level ones: a shard that is no
    tar at all (one keyless row) and one truncated inside a sample (a keyed `corrupt_tar` row)."""
    from pipeline.io.shards import write_shard
    from tests.helpers import archive_samples

    root = tmp_path_factory.mktemp("reprocess-broken")
    models = build_tiny_models(root / "models")
    sets = [a for o in models["overrides"] for a in ("--set", o)]
    archive = root / "archive"
    write_shard(str(archive / "a.tar"), archive_samples(2, prefix="a") + [{"__key__": "bad", "png": b"\x00no image"}])
    (archive / "b.tar").write_bytes(b"not a tar at all " * 64)
    write_shard(str(archive / "c.tar"), archive_samples(3, prefix="c"))
    trunc = archive / "c.tar"
    trunc.write_bytes(trunc.read_bytes()[: int(trunc.stat().st_size * 0.45)])
    out = root / "first"
    res = runner.invoke(app, ["restore", "--input", str(archive), "--output", str(out), "--engine", "local",
                              "--max-error-rate", "1", *sets])
    assert res.exit_code == 0, res.output
    errors = {r["key"]: r for r in OutputStore(str(out)).read_metrics().to_pylist() if r["status"] == "error"}
    assert errors["bad"]["error_kind"] == "undecodable"
    assert [k for k in errors if k.endswith("#corrupt_tar")] == [f"{archive / 'b.tar'}#corrupt_tar"]
    assert any(r["error_kind"] == "corrupt_tar" and r["key"].startswith("c") for r in errors.values())
    return root, archive, str(out), sets, errors


def test_reprocess_redoes_sample_and_shard_level_errors_one_new_row_per_key(broken_run, tmp_path):
    root, archive, first, sets, errors = broken_run
    second = str(tmp_path / "second")
    res = runner.invoke(app, ["reprocess", "--from", first, "--where", "status = 'error'", "--output", second,
                              "--engine", "local", "--set", "execution.max_error_rate=1"])
    assert res.exit_code == 0, res.output
    rows = OutputStore(second).read_metrics().to_pylist()
    assert sorted(r["key"] for r in rows) == sorted(errors)   # exactly one new row per selected key
    for r in rows:   # the shards are still broken: the same error rows, now with lineage
        assert (r["status"], r["error_kind"]) == ("error", errors[r["key"]]["error_kind"])
        assert r["lineage_source"] == first and r["lineage_row"].endswith(f"#{r['key']}")
    assert "not redone" not in res.output


def test_reprocess_restores_a_repaired_shard_and_reports_what_it_cannot_redo(broken_run, tmp_path):
    from pipeline.io.shards import write_shard
    from tests.helpers import archive_samples

    root, archive, first, sets, errors = broken_run
    write_shard(str(archive / "b.tar"), archive_samples(2, prefix="b"))   # repaired
    (archive / "c.tar").unlink()                                           # gone
    third = str(tmp_path / "third")
    res = runner.invoke(app, ["reprocess", "--from", first, "--where", "status = 'error'", "--output", third,
                              "--engine", "local", "--set", "execution.max_error_rate=1"])
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in OutputStore(third).read_metrics().to_pylist()}
    shard_row = f"{archive / 'b.tar'}#corrupt_tar"
    assert sorted(rows) == ["b0000", "b0001", "bad"]
    assert rows["b0000"]["status"] == "ok" and rows["b0000"]["lineage_row"].endswith(f"#{shard_row}")
    text = " ".join(res.output.split())
    assert f"not redone: {shard_row}: not in its shard when re-read" in text
    assert all(f"not redone: {k}: its shard" in text for k in errors if k.startswith("c"))
