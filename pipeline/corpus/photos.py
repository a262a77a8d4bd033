"""Where the corpus photos live.

Photo lists name photos as `package:path-inside-package` so that a list stays valid on any
machine that installed the packages (Debian packages put the path under `/`, Python
packages under their site-packages folder). Plain paths and fsspec URLs are accepted too,
so a user can point the corpus tools at their own photos.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
from pathlib import Path

import fsspec

REPO_ROOT = Path(__file__).resolve().parents[2]
PHOTO_LISTS = REPO_ROOT / "data" / "photos"  # inside the clone: the lists travel with the code
SHORTHANDS = {"train": "train_photos.txt", "dev": "dev_photos.txt"}
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class PhotoNotFound(FileNotFoundError):
    """A listed photo is not on this machine (usually: its package is not installed)."""


def _python_package_root(package: str) -> str | None:
    """The folder a Python distribution's files are relative to, or None if not installed."""
    try:
        return str(importlib.metadata.distribution(package).locate_file(""))
    except importlib.metadata.PackageNotFoundError:
        pass
    module = package.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module) if module.isidentifier() else None
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.origin:
        # site-packages/<pkg>/__init__.py -> site-packages
        return str(Path(spec.origin).resolve().parent.parent)
    return None


def _is_url(entry: str) -> bool:
    return "://" in entry


def _split_package(entry: str) -> tuple[str, str] | None:
    """`package:path` -> (package, path); None for plain paths and URLs."""
    if _is_url(entry) or ":" not in entry:
        return None
    package, path = entry.split(":", 1)
    if not _PACKAGE.match(package) or not path:
        return None
    return package, path.lstrip("/")


def resolve_photo(entry: str, *, check: bool = True) -> str:
    """The readable location (local path or fsspec URL) of one photo-list entry.

    A package that is both a Python distribution and a Debian package is looked up as a
    Python distribution first; if the file is not there, the Debian location `/<path>` is used.
    Raises PhotoNotFound naming the entry when `check` and the photo is missing.
    """
    entry = entry.strip()
    split = _split_package(entry)
    if split is None:
        location = entry if _is_url(entry) else os.path.abspath(os.path.expanduser(entry))
        candidates = [location]
    else:
        package, path = split
        candidates = []
        root = _python_package_root(package)
        if root is not None:
            candidates.append(os.path.join(root, path))
        candidates.append("/" + path)
    if not check:
        return candidates[0]
    for c in candidates:
        if _exists(c):
            return c
    hint = ""
    if split is not None:
        hint = (f" (is the package {split[0]!r} installed? run infra/install-photo-packages.sh)")
    raise PhotoNotFound(f"photo {entry!r} not found; looked at {candidates}{hint}")


def _exists(location: str) -> bool:
    if not _is_url(location):
        return os.path.isfile(location)
    fs, path = fsspec.core.url_to_fs(location)
    return fs.isfile(path)


def photo_list_path(path_or_name: str) -> str:
    """`train` / `dev` -> data/photos/{train,dev}_photos.txt; anything else unchanged."""
    if path_or_name in SHORTHANDS:
        return str(PHOTO_LISTS / SHORTHANDS[path_or_name])
    return path_or_name


def read_photo_list(path_or_name: str, *, check: bool = False) -> list[str]:
    """The entries of a photo list (comments and blank lines skipped), in file order.

    With `check`, every entry must resolve (the error names the first missing one).
    """
    location = photo_list_path(path_or_name)
    try:
        with fsspec.open(location, "rt", encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"photo list {path_or_name!r} not found at {location}") from exc
    entries = []
    for line in text.splitlines():
        line = line.strip()  # only whole-line comments: a path may contain '#'
        if line and not line.startswith("#"):
            entries.append(line)
    if check:
        for e in entries:
            resolve_photo(e)
    return entries


def photo_slug(entry: str) -> str:
    """A key-safe, readable, unique name for a photo entry.

    WebDataset splits a key at the first dot of the file name, so the slug has no dots;
    a short hash of the full entry keeps slugs unique (e.g. many `2560x1600.jpg` files).
    """
    split = _split_package(entry)
    path = split[1] if split else entry
    parts = [p for p in re.split(r"[\\/]", path) if p]
    stem = parts[-1].rsplit(".", 1)[0] if parts else "photo"
    if stem in {"2560x1600", "000", "001", "002"} or stem.isdigit() or re.fullmatch(r"\d+x\d+", stem):
        # generic file names: the folder names the photo (plasma wallpapers, hfs examples)
        stem = "-".join(p for p in parts[-4:-1] if p not in {"contents", "images", "data"}) + "-" + stem
    stem = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "photo"
    digest = hashlib.blake2b(entry.encode(), digest_size=3).hexdigest()
    return f"{stem[:40]}-{digest}"
