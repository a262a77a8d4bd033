"""Sample schema: decoding, validation and the error kinds a reader reports."""
import io
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.io.samples import SampleError, decode_image, encode_png, parse_sample


def png_bytes(mode="RGB", size=(8, 6), fill=None):
    """PNG of `mode`, size (W, H)."""
    if mode == "RGB":
        arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
    else:
        img = Image.new(mode, size, fill if fill is not None else 0)
    buf = io.BytesIO()
    img.save(buf, format="TIFF" if mode in ("I", "F") else "PNG")  # PNG cannot hold 32-bit modes
    return buf.getvalue()


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def png16_rgb(w=4, h=3) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL cannot write one): PIL reads it as 8-bit 'RGB'."""
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(range(6)) * w for _ in range(h))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def png_header_only(w, h) -> bytes:
    """A PNG claiming w×h with a few bytes of pixel data: costs nothing to build."""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(bytes(16))) + _chunk(b"IEND", b""))


def kind_of(data, key="k1", **kw):
    with pytest.raises(SampleError) as info:
        decode_image(data, key, **kw)
    assert key in str(info.value) and info.value.key == key
    return info.value.kind


def test_decode_rgb_roundtrip():
    x = torch.rand(3, 5, 7)
    y = decode_image(encode_png(x), "a")
    assert y.shape == (3, 5, 7) and y.dtype == torch.float32
    assert torch.allclose(y, (x * 255).round() / 255, atol=1e-6)


def test_decode_rejects_bad_bytes():
    good = png_bytes()
    assert kind_of(b"") == "empty"
    assert kind_of(b"not an image at all") == "undecodable"
    assert kind_of(good[: len(good) // 2]) == "undecodable"
    assert kind_of(good, expected_size=(5, 8)) == "size"
    decode_image(good, "ok", expected_size=(6, 8))


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "I", "F"])
def test_decode_rejects_non_rgb_modes(mode):
    assert kind_of(png_bytes(mode)) == "mode"


def test_16bit_never_truncated():
    assert kind_of(png16_rgb()) == "mode"
    assert kind_of(png16_rgb(), allow_convert=True) == "mode"
    assert kind_of(png_bytes("I;16"), allow_convert=True) == "mode"


def test_allow_convert():
    grey = decode_image(png_bytes("L", fill=128), "g", allow_convert=True)
    assert grey.shape == (3, 6, 8) and torch.allclose(grey, torch.full_like(grey, 128 / 255))
    opaque = decode_image(png_bytes("RGBA", fill=(10, 20, 30, 255)), "o", allow_convert=True)
    assert torch.allclose(opaque[:, 0, 0] * 255, torch.tensor([10.0, 20.0, 30.0]))
    assert kind_of(png_bytes("RGBA", fill=(10, 20, 30, 128)), allow_convert=True) == "mode"
    decode_image(png_bytes("P"), "p", allow_convert=True)


def test_pixel_bomb_refused_before_decoding():
    assert kind_of(png_bytes(), max_pixels=20) == "pixel_bomb"
    # A header claiming 5000×5000 (over the default limit, under PIL's): refused on the header.
    assert kind_of(png_header_only(5000, 5000)) == "pixel_bomb"
    # 20000×20000 is beyond PIL's own limit: the open itself refuses; still a pixel_bomb.
    assert kind_of(png_header_only(20000, 20000), max_pixels=10**10) == "pixel_bomb"
    # The same small header under a generous limit is merely undecodable (truncated data).
    assert kind_of(png_header_only(64, 64)) == "undecodable"


def test_parse_sample_full():
    clean = torch.rand(3, 6, 8)
    raw = {"__key__": "s/0001", "png": png_bytes(), "clean.png": encode_png(clean),
           "json": b'{"operator": "blur", "severity": 0.5, "seed": 3}'}
    s = parse_sample(raw, "shard-0.tar")
    assert s.key == "s/0001" and s.shard == "shard-0.tar"
    assert s.image01.shape == (3, 6, 8) and s.clean01.shape == (3, 6, 8)
    assert s.params == {"operator": "blur", "severity": 0.5, "seed": 3}
    assert len(s.image_sha256) == 64
    bare = parse_sample({"__key__": "b", "jpg": _jpeg()}, "x")
    assert bare.clean01 is None and bare.params is None


def _jpeg():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (50, 100, 150)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("raw,kind", [
    ({"json": b"{}"}, "missing_image"),
    ({"png": png_bytes(), "jpg": _jpeg()}, "duplicate"),
    ({"png": png_bytes(), "json": b'{"severity": NaN}'}, "nan"),
    ({"png": png_bytes(), "json": b'{"a": {"b": [1, 1e999]}}'}, "nan"),
    ({"png": png_bytes(), "json": b'{"a": -Infinity}'}, "nan"),
    ({"png": png_bytes(), "json": b"[1, 2]"}, "params"),
    ({"png": png_bytes(), "json": b"{oops"}, "params"),
    ({"png": png_bytes(), "clean.png": png_bytes(size=(4, 4))}, "size"),
    ({"png": png_bytes(), "clean.png": b""}, "empty"),
])
def test_parse_sample_errors_name_the_key(raw, kind):
    with pytest.raises(SampleError) as info:
        parse_sample({"__key__": "bad-7", **raw}, "shard-3.tar")
    err = info.value
    assert err.kind == kind and err.key == "bad-7" and err.shard == "shard-3.tar"
    assert "bad-7" in str(err)
    assert isinstance(err, ValueError)


@pytest.mark.parametrize("depth", [33, 200_000])
def test_deeply_nested_json_is_a_params_error_naming_the_key(depth):
    from pipeline.io.samples import parse_params

    with pytest.raises(SampleError) as err:
        parse_params(("[" * depth + "]" * depth).encode(), "deep-key")
    assert err.value.kind == "params" and "deep-key" in str(err.value) and "nests" in str(err.value)
    ok = parse_params(b'{"operator": "noise", "a": {"b": [1, "[[[[", {"c": 2}]}}', "fine")
    assert ok["a"]["b"][1] == "[[[["
