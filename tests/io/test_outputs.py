"""The output store: parts commit through the manifest; debris of an interrupted run is removed."""
import io
import json
import tarfile

import pytest

from pipeline.io.outputs import OutputStore, PartBuffer, error_row


def _part(keys):
    part = PartBuffer()
    for k in keys:
        part.add({"key": k, "shard": "s.tar", "status": "ok", "nfe": 3}, b"png-bytes-" + k.encode(), {"nfe": 3})
    part.add(error_row("bad-" + keys[0], "s.tar", "sample bad: undecodable", "undecodable"))
    return part


def test_commit_and_resume(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    manifest = store.prepare("h1")
    store.commit(_part(["a", "b"]), manifest)
    store.commit(_part(["c"]), manifest)
    again = OutputStore(str(tmp_path / "out"))
    m2 = again.prepare("h1")
    assert again.done_keys(m2) == {"a", "b", "bad-a", "c", "bad-c"}
    table = again.read_metrics()
    assert sorted(table.column("key").to_pylist()) == ["a", "b", "bad-a", "bad-c", "c"]
    rows = {r["key"]: r for r in table.to_pylist()}
    assert rows["a"]["image_url"].endswith("images/part-00000.tar#a.png")
    assert rows["bad-a"]["image_url"] is None and rows["bad-a"]["error_kind"] == "undecodable"
    assert m2["counts"] == {"ok": 3, "error": 2}


def test_uncommitted_parts_are_removed_on_resume(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    manifest = store.prepare("h1")
    store.commit(_part(["a"]), manifest)
    # an interrupted run left a part on disk that never reached the manifest
    (tmp_path / "out/images/part-00001.tar").write_bytes(b"partial")
    (tmp_path / "out/metrics/part-00001.parquet").write_bytes(b"partial")
    store2 = OutputStore(str(tmp_path / "out"))
    store2.prepare("h1")
    assert not (tmp_path / "out/images/part-00001.tar").exists()
    assert store2.done_keys() == {"a", "bad-a"}


def test_other_config_refused_unless_overwrite(tmp_path):
    store = OutputStore(str(tmp_path / "out"))
    store.commit(_part(["a"]), store.prepare("h1"))
    with pytest.raises(ValueError, match="config hash"):
        store.prepare("h2")
    manifest = store.prepare("h2", overwrite=True)
    assert manifest["parts"] == {} and store.done_keys() == set()


def test_tar_bytes_are_deterministic():
    """Key order and fixed metadata: the same images give the same bytes whatever order they came in."""
    data = _part(["b", "a"]).tar_bytes()
    assert data == _part(["a", "b"]).tar_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["a.png", "a.json", "b.png", "b.json"]
        assert all(m.mtime == 0 and m.mode == 0o644 for m in members)
        assert tar.extractfile("a.png").read() == b"png-bytes-a"
        assert json.loads(tar.extractfile("b.json").read()) == {"nfe": 3}
