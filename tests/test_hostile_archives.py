"""Archives built the way an attacker would, on both backends: every hostile sample is one
error row with a kind and a message naming its key, nothing is written outside the output,
the good samples restore, and a rerun completes the job (no crash at the same place)."""
import io
import os
import tarfile

import pytest
import torch

from pipeline.outputs import OutputStore
from pipeline.samples import encode_png
from pipeline.shards import write_shard
from tests.pipeline_fixtures import archive_samples, engine_setup, tiny_config
from workers.execute import execute

WANT = {"tiny": "size", "huge": "size", "wide_kernel": "params", "../../escape": "unsafe_key",
        "/abs/evil": "unsafe_key", "lnk": "link", "hard": "link", "deep": "params"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return engine_setup(tmp_path_factory.mktemp("hostile"))


def hostile_archive(folder) -> str:
    folder.mkdir()
    good = archive_samples(2, prefix="ok")
    params = good[0]["json"]
    wide = {**params, "operator": "gaussian_blur", "kernel_size": 61}  # needs an image of ≥ 31 px
    write_shard(str(folder / "a.tar"), good + [
        {"__key__": "tiny", "png": torch.rand(3, 1, 1), "json": params},       # 1×1 PNG
        {"__key__": "huge", "png": torch.rand(3, 64, 64), "json": params},     # the models take 16×16
        {"__key__": "wide_kernel", "png": torch.rand(3, 16, 16), "json": wide}])
    png = encode_png(torch.rand(3, 16, 16))
    with tarfile.open(folder / "b.tar", "w") as tar:
        def add(name, data=None, kind=None, link=None):
            info = tarfile.TarInfo(name)
            if kind:
                info.type, info.linkname = kind, link
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        add("../../escape.png", png)
        add("/abs/evil.png", png)
        add("lnk.png", kind=tarfile.SYMTYPE, link="/etc/passwd")
        add("hard.png", kind=tarfile.LNKTYPE, link="deep.png")
        add("deep.png", png)
        add("deep.json", b"[" * 200_000 + b"]" * 200_000)
    return str(folder)


def image_names(out) -> list[str]:
    store = OutputStore(out)
    names = []
    for info in store.read_manifest()["parts"].values():
        with tarfile.open(store.path(info["images"])) as tar:
            names += tar.getnames()
    return names


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_hostile_samples_are_one_error_row_each_and_a_rerun_completes(engine, setup, tmp_path, request):
    if engine == "ray":
        request.getfixturevalue("ray_local")
    root, models, _ = setup
    archive = hostile_archive(tmp_path / "archive")
    cfg = tiny_config(models, f"execution.engine={engine}")
    out = str(tmp_path / "out")
    summary = execute(cfg, archive, out)
    rows = {r["key"]: r for r in OutputStore(out).read_metrics().to_pylist()}
    assert {k: rows[k]["error_kind"] for k in WANT} == WANT
    assert all(k in rows[k]["error"] for k in WANT)
    assert rows["ok0000"]["status"] == rows["ok0001"]["status"] == "ok"
    assert summary["ok"] == 2 and summary["errors"] == len(WANT) and len(rows) == len(WANT) + 2
    names = image_names(out)
    assert len(names) == 4 and not any(n.startswith(("/", "..")) or "/../" in n for n in names)
    assert not os.path.exists(tmp_path / "escape.png")
    again = execute(cfg, archive, out)
    assert again["samples"] == 0 and again["skipped_already_done"] == len(WANT) + 2
    assert len(OutputStore(out).read_metrics()) == len(WANT) + 2
