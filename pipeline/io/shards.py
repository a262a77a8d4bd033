"""WebDataset shards on any fsspec URL: listing, streaming samples, writing.

Shards are opened through fsspec (webdataset has no s3:// handler) and read with tarfile in
streaming mode, so a reader holds one sample at a time whatever the shard size. Data
problems come out as `SampleError` items in the stream; they never raise.
"""
from __future__ import annotations

import json
import lzma
import re
import tarfile
import zlib
from typing import Any, Callable, Iterable, Iterator

import fsspec
from braceexpand import braceexpand
from fsspec.core import url_to_fs
from webdataset import TarWriter

from pipeline.io.samples import DEFAULT_MAX_PIXELS, PARAMS_EXT, Sample, SampleError, encode_png, parse_sample

__all__ = ["list_shards", "iter_samples", "keyless_name", "write_shard", "make_archive", "split_member_name",
           "DEFAULT_MAX_MEMBER_BYTES"]

DEFAULT_MAX_MEMBER_BYTES = 256 * 2**20
_GLOB_CHARS = re.compile(r"[*?\[]")
SHARD_PATTERNS = ("*.tar", "*.tar.gz", "*.tgz")  # a folder's shards; compressed ones stream through tarfile "r|*"


def _join(url: str, fs, path: str) -> str:
    """Return paths in the caller's style: plain local paths stay plain, URLs keep their scheme."""
    return fs.unstrip_protocol(path) if "://" in url else path


def list_shards(url: str) -> list[str]:
    """Shard URLs, sorted: a folder (its *.tar, *.tar.gz and *.tgz), a glob, a brace pattern, or one file.

    A brace pattern (`data-{000..009}.tar`) names shards that must all exist: a missing
    one is an error rather than a silently smaller job.
    """
    if "{" in url:
        urls = list(braceexpand(url))
        missing = [u for u in urls if not url_to_fs(u)[0].isfile(url_to_fs(u)[1])]
        if missing:
            raise ValueError(f"{url}: {len(missing)} of {len(urls)} shards do not exist, e.g. {missing[:3]}")
        return sorted(urls)
    fs, path = url_to_fs(url)
    if _GLOB_CHARS.search(path):
        found = [p for p in fs.glob(path) if fs.isfile(p)]
    elif fs.isdir(path):
        found = [p for pattern in SHARD_PATTERNS for p in fs.glob(path.rstrip("/") + "/" + pattern) if fs.isfile(p)]
    elif fs.isfile(path):
        found = [path]
    else:
        raise ValueError(f"no shards: {url} does not exist")
    if not found:
        raise ValueError(f"no shards: nothing matches {url}")
    return sorted(_join(url, fs, p) for p in found)


def split_member_name(name: str) -> tuple[str, str] | None:
    """'dir/abc.clean.png' → ('dir/abc', 'clean.png'): the key ends at the basename's first dot."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not stem or not dot or not ext:
        return None
    return (f"{folder}/{stem}" if folder else stem), ext


MAX_KEY_CHARS = 512


def unsafe_key_reason(key: str) -> str | None:
    """Why `key` cannot name an output file (None when it can): outputs are written as
    `<key>.png` inside tars that users extract, so a key must stay a relative path below the
    output folder and readable."""
    if len(key) > MAX_KEY_CHARS:
        return f"longer than {MAX_KEY_CHARS} characters"
    if key.startswith("/") or key.startswith("~"):
        return "absolute path"
    if "\\" in key or any(ord(c) < 32 or ord(c) == 127 for c in key):
        return "backslash or control character"
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "empty, '.' or '..' path component"
    return None


def keyless_name(shard: str, err: SampleError) -> str:
    """An error with no key (a tar corrupt before its first sample) is one row per shard."""
    return err.key or f"{shard}#{err.kind}"


def iter_samples(shard_url: str, *, expected_size: tuple[int, int] | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, allow_convert: bool = False, min_side: int | None = None,
                 max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES, alpha_masks: bool = False,
                 select: Callable[[str], bool] | None = None) -> Iterator[Sample | SampleError]:
    """Yield one `Sample` or `SampleError` per key of a shard, in tar order.

    `select(key)` (errors: their `keyless_name`) keeps only some keys, and the others are
    never decoded: a sampled estimate pays for the samples it looks at.

    Members of a key must be consecutive: a key seen again later is a 'duplicate' error
    (the first occurrence stands). A corrupt or truncated tar yields one 'corrupt_tar' error
    (the key being read is named; it is not yielded as a sample, its members being
    incomplete) and ends the iteration. A shard that cannot be opened or read (missing file,
    no credentials, network errors: OSError) raises, because a retry may fix it and the
    data is not to blame.
    """
    limits = dict(expected_size=expected_size, max_pixels=max_pixels, allow_convert=allow_convert, min_side=min_side,
                  alpha_masks=alpha_masks)
    seen: set[str] = set()
    with fsspec.open(shard_url, "rb") as f:
        for item in _read_groups(f, shard_url, max_member_bytes):
            if isinstance(item, SampleError):
                if select is None or select(keyless_name(shard_url, item)):
                    yield item
                continue
            key, group, problem = item
            if select is not None and not select(key):
                continue
            if key in seen:
                yield SampleError("duplicate", key, "key appears again, not next to its first members; "
                                                    "the first occurrence is kept", shard_url)
            elif problem is not None:
                seen.add(key)
                yield problem
            else:
                seen.add(key)
                try:
                    yield parse_sample(group, shard_url, **limits)
                except SampleError as exc:
                    yield exc


def _read_groups(f, shard_url: str, max_member_bytes: int) -> Iterator[tuple[str, dict, SampleError | None]
                                                                       | SampleError]:
    """Group consecutive tar members by key; tar-level corruption ends in one 'corrupt_tar' item."""
    key: str | None = None
    group: dict[str, Any] = {}
    problem: SampleError | None = None  # first problem found among a key's members
    try:
        with tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                link = member.issym() or member.islnk()
                if not (member.isfile() or link):
                    continue
                parts = split_member_name(member.name)
                if parts is None:
                    yield SampleError("key", member.name, "tar member name has no <key>.<ext> form", shard_url)
                    continue
                mkey, ext = parts
                if mkey != key:
                    if key is not None:
                        yield key, group, problem
                    key, group, problem = mkey, {"__key__": mkey, "__url__": shard_url}, None
                    reason = unsafe_key_reason(mkey)
                    if reason:
                        problem = SampleError("unsafe_key", mkey, f"key {mkey!r} is refused: {reason}", shard_url)
                if link:
                    problem = problem or SampleError(
                        "link", mkey, f"member {member.name!r} is a {'symbolic' if member.issym() else 'hard'} link; "
                        "links are never followed", shard_url)
                    continue
                if member.size > max_member_bytes:
                    problem = problem or SampleError(
                        "too_large", mkey, f"member .{ext} is {member.size} bytes, limit {max_member_bytes}",
                        shard_url)
                    continue  # the streaming reader skips the unread data
                data = tar.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"member {member.name} truncated")
                if ext in group:
                    problem = problem or SampleError("duplicate", mkey, f"member .{ext} appears twice", shard_url)
                group[ext] = data
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        where = f"while reading key {key!r}" if key is not None else "before the first sample"
        yield SampleError("corrupt_tar", key, f"corrupt or truncated tar {where} ({type(exc).__name__}: {exc})",
                          shard_url)
        return
    if key is not None:
        yield key, group, problem


def _encode_value(key: str, ext: str, value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    if ext == PARAMS_EXT and isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, allow_nan=False).encode("utf-8")
    if hasattr(value, "ndim") and ext.rsplit(".", 1)[-1] == "png":
        return encode_png(value)
    raise ValueError(f"sample {key!r}: cannot encode .{ext} from {type(value).__name__}")


def write_shard(url: str, samples: Iterable[dict[str, Any]]) -> int:
    """Write samples (`__key__` + extension → bytes, str, JSON-able dict, or (3,H,W) tensor for
    .png) to a tar at any fsspec URL; returns the number of samples.

    Bytes are reproducible: members are sorted by extension within a sample, mtime is 0,
    owner is fixed. The file is written in place; committing it atomically is the caller's job.
    """
    count = 0
    with fsspec.open(url, "wb") as f:
        with TarWriter(f, encoder=False, mtime=0, user="flash", group="flash", mode=0o444) as writer:
            for sample in samples:
                key = sample.get("__key__")
                if not isinstance(key, str) or not key or "." in key.rpartition("/")[2]:
                    raise ValueError(f"invalid sample key {key!r} (non-empty, no dot in its last part)")
                encoded = {"__key__": key}
                for ext, value in sample.items():
                    if not ext.startswith("_"):
                        encoded[ext] = _encode_value(key, ext, value)
                writer.write(encoded)
                count += 1
    return count



def make_archive(source: str, n: int, dest: str) -> str:
    """n samples cycled from `source` under fresh keys, 64 per shard, at the folder `dest`:
    a larger archive from a small one (the benchmarks' inputs)."""
    base = [s for shard in list_shards(source) for s in iter_samples(shard) if not isinstance(s, Exception)]
    if not base:
        raise ValueError(f"no valid samples in {source}")
    out = []
    for i in range(n):
        s = base[i % len(base)]
        item = {"__key__": f"b{i:06d}", "png": encode_png(s.image01), "json": s.params}
        if s.clean01 is not None:
            item["clean.png"] = encode_png(s.clean01)
        out.append(item)
    per = 64
    for j in range(0, n, per):
        write_shard(f"{str(dest).rstrip('/')}/bench-{j // per:05d}.tar", out[j:j + per])
    return str(dest)
