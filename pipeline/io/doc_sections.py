"""Markdown reports kept up to date one `## ` section at a time.

Why sections: each measuring command (a benchmark, a tuning run, a model report) owns its
section of a shared document and rewrites only that one, so reruns of one command keep
what the others measured, and a rerun with the same figures changes nothing.
"""
from __future__ import annotations

import re
from pathlib import Path


def replace_section(text: str, body: str, heading: str) -> str:
    """`text` with the `heading` section set to `body` (replaced if present, else appended).

    Idempotent: the section runs from its heading to the next `## ` heading or the end.
    """
    block = f"{heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\s*$.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: block + "\n", text, count=1).rstrip() + "\n"
    return text.rstrip() + "\n\n" + block


def sections_except(text: str, headings) -> list[str]:
    """The `## ` sections of `text` whose heading is not in `headings`, verbatim, in order: what a command that
    rewrites its whole document keeps of the sections others wrote (a person's notes, another measurement)."""
    parts = re.split(r"(?m)^(?=## )", text)[1:]
    return [p.rstrip() + "\n" for p in parts if p.splitlines()[0].strip() not in set(headings)]


def write_section(path: str | Path, heading: str, body: str, preamble: str) -> Path:
    """Set one section of the markdown file at `path` (started with `preamble` if new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = path.read_text() if path.exists() else preamble
    path.write_text(replace_section(text, body, heading))
    return path
