"""Shard listing, streaming reads with per-key errors, and reproducible writes."""
import hashlib
import os

import fsspec
import pytest
import torch

from pipeline.io.samples import Sample, SampleError, encode_png
from pipeline.io.shards import iter_samples, list_shards, write_shard
from tests.io.test_samples import png16_rgb, png_bytes, png_header_only


def good(key, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, 6, 8, generator=g)
    return {"__key__": key, "png": encode_png(img), "clean.png": encode_png(img.flip(-1)),
            "json": {"operator": "blur", "severity": 0.25, "seed": seed}}


def test_roundtrip_local_and_memory(tmp_path):
    samples = [good(f"k{i:03d}", i) for i in range(3)]
    for url in (str(tmp_path / "a.tar"), "memory://bucket/a.tar"):
        assert write_shard(url, samples) == 3
        out = list(iter_samples(url))
        assert [s.key for s in out] == ["k000", "k001", "k002"]
        assert all(isinstance(s, Sample) and s.shard == url for s in out)
        assert out[1].params == {"operator": "blur", "seed": 1, "severity": 0.25}
        assert out[2].clean01.shape == (3, 6, 8)
        assert out[0].image_sha256 == hashlib.sha256(samples[0]["png"]).hexdigest()
    fsspec.filesystem("memory").rm("/bucket", recursive=True)


def test_write_is_reproducible(tmp_path):
    samples = [good("x", 1), good("y", 2)]
    write_shard(str(tmp_path / "1.tar"), samples)
    write_shard(str(tmp_path / "2.tar"), samples)
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()


def _rgba():
    return png_bytes("RGBA")


BAD = [  # (key, members, kind)
    ("zero", {"png": b""}, "empty"),
    ("garbage", {"png": b"\x00garbage bytes"}, "undecodable"),
    ("truncpng", {"png": png_bytes()[:40]}, "undecodable"),
    ("grey", {"png": png_bytes("L")}, "mode"),
    ("rgba", {"png": _rgba()}, "mode"),
    ("sixteen", {"png": png16_rgb(8, 6)}, "mode"),
    ("wrongsize", {"png": png_bytes(size=(5, 5))}, "size"),
    ("bomb", {"png": png_header_only(20000, 20000)}, "pixel_bomb"),
    ("noimage", {"json": {"seed": 1}}, "missing_image"),
    ("nanjson", {"png": png_bytes(), "json": b'{"severity": NaN}'}, "nan"),
]


def test_each_bad_sample_is_one_error_and_good_ones_survive(tmp_path):
    url = str(tmp_path / "mixed.tar")
    samples = [good("first")]
    for key, members, _ in BAD:
        samples += [{"__key__": key, **members}, good(f"ok-{key}")]
    samples.append(good("first"))  # the same key again, not next to its first members
    write_shard(url, samples)
    out = list(iter_samples(url, expected_size=(6, 8)))
    errors = [o for o in out if isinstance(o, SampleError)]
    oks = [o.key for o in out if isinstance(o, Sample)]
    assert oks == ["first"] + [f"ok-{k}" for k, _, _ in BAD]
    expected = [(k, kind) for k, _, kind in BAD] + [("first", "duplicate")]
    assert [(e.key, e.kind) for e in errors] == expected
    for e in errors:
        assert e.key in str(e) and e.shard == url


def test_pixel_bomb_with_low_limit(tmp_path):
    url = str(tmp_path / "s.tar")
    write_shard(url, [good("a"), good("b")])
    out = list(iter_samples(url, max_pixels=47))
    assert [(o.key, o.kind) for o in out] == [("a", "pixel_bomb"), ("b", "pixel_bomb")]


def test_truncated_tar_yields_earlier_keys_then_one_error(tmp_path):
    url = str(tmp_path / "t.tar")
    write_shard(url, [good(f"k{i}", i) for i in range(4)])
    data = (tmp_path / "t.tar").read_bytes()
    cut = str(tmp_path / "cut.tar")
    with open(cut, "wb") as f:
        f.write(data[: data.index(b"k2.png") + 700])  # inside k2's image data
    out = list(iter_samples(cut))
    assert [o.key for o in out[:-1]] == ["k0", "k1"] and all(isinstance(o, Sample) for o in out[:-1])
    last = out[-1]
    assert isinstance(last, SampleError) and last.kind == "corrupt_tar" and last.key == "k2"
    assert "k2" in str(last)
    # Not a tar at all: one error, no exception.
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(1500))
    out = list(iter_samples(str(junk)))
    assert len(out) == 1 and out[0].kind == "corrupt_tar"


def test_missing_shard_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(iter_samples(str(tmp_path / "nope.tar")))


def test_list_shards(tmp_path):
    for i in range(3):
        (tmp_path / f"data-{i:03d}.tar").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    names = [str(tmp_path / f"data-{i:03d}.tar") for i in range(3)]
    assert list_shards(str(tmp_path)) == names
    assert list_shards(str(tmp_path) + "/") == names
    assert list_shards(str(tmp_path / "data-*.tar")) == names
    assert list_shards(str(tmp_path / "data-{000..002}.tar")) == names
    assert list_shards(str(tmp_path / "data-001.tar")) == names[1:2]
    assert list_shards("file://" + str(tmp_path)) == ["file://" + n for n in names]
    with pytest.raises(ValueError):
        list_shards(str(tmp_path / "data-{000..005}.tar"))  # a named shard is missing
    with pytest.raises(ValueError):
        list_shards(str(tmp_path / "nothing-*.tar"))
    with pytest.raises(ValueError):
        list_shards(str(tmp_path / "absent"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError):
        list_shards(str(empty))


def test_list_shards_memory():
    fs = fsspec.filesystem("memory")
    for i in (1, 0):
        fs.pipe(f"/lst/s-{i}.tar", b"")
    assert list_shards("memory://lst") == ["memory:///lst/s-0.tar", "memory:///lst/s-1.tar"]
    assert list_shards("memory://lst/s-{0..1}.tar") == ["memory://lst/s-0.tar", "memory://lst/s-1.tar"]
    fs.rm("/lst", recursive=True)


def _png() -> bytes:
    return encode_png(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0)))


def _raw_tar(path, members) -> None:
    """A tar written member by member: (name, bytes) files, or (name, ('sym'|'hard', target)) links."""
    import io
    import tarfile

    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "sym" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize("name, kind", [
    ("../../x.png", "unsafe_key"), ("/abs/x.png", "unsafe_key"), ("a/./b.png", "unsafe_key"),
    ("bad\\\\name.png", "unsafe_key"), ("ctl\\x01.png", "unsafe_key"), ("k" * 600 + ".png", "unsafe_key"),
])
def test_hostile_member_names_become_one_error_each(tmp_path, name, kind):
    shard = tmp_path / "s.tar"
    _raw_tar(shard, [("good.png", _png()), (name, _png()), ("after.png", _png())])
    items = list(iter_samples(str(shard)))
    assert [type(i).__name__ for i in items] == ["Sample", "SampleError", "Sample"]
    assert items[1].kind == kind and items[1].key == name[:-4]


@pytest.mark.parametrize("link", ["sym", "hard"])
def test_a_key_made_only_of_a_link_is_an_error_row_not_lost(tmp_path, link):
    shard = tmp_path / "s.tar"
    _raw_tar(shard, [("good.png", _png()), ("lnk.png", (link, "good.png"))])
    items = list(iter_samples(str(shard)))
    assert isinstance(items[0], Sample) and isinstance(items[1], SampleError)
    assert items[1].kind == "link" and items[1].key == "lnk" and "lnk" in str(items[1])


def test_a_folder_of_gzipped_shards_is_read(tmp_path):
    import gzip

    from pipeline.io.shards import iter_samples, list_shards, write_shard
    from tests.helpers import archive_samples

    write_shard(str(tmp_path / "plain.tar"), archive_samples(2, prefix="p"))
    for name in ("a.tar.gz", "b.tgz"):
        (tmp_path / name).write_bytes(gzip.compress((tmp_path / "plain.tar").read_bytes()))
    shards = list_shards(str(tmp_path))
    assert [s.rsplit("/", 1)[1] for s in shards] == ["a.tar.gz", "b.tgz", "plain.tar"]
    for shard in shards:
        assert [s.key for s in iter_samples(shard)] == ["p0000", "p0001"]
