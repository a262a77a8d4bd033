"""report-models rewrites docs/models.md but keeps the sections it does not write (a hand-written measurement)."""
from __future__ import annotations

from pipeline.model_report.figures import write_docs


def report(date: str) -> dict:
    return {"figures": {}, "date": date, "machine": "test box", "device": "cpu", "command": "report-models",
            "models": {"autoencoder": {"path": "models/autoencoder", "fingerprint": "abc", "training_steps": 1}}}


def test_write_docs_keeps_foreign_sections(tmp_path):
    doc = tmp_path / "models.md"
    write_docs(report("day 1"), doc)
    mine = "## Varying blur\n\nσ̂² against the mean corner severity: 0.9.\n"
    doc.write_text(doc.read_text() + "\n" + mine)
    write_docs(report("day 2"), doc)
    text = doc.read_text()
    assert "day 2" in text and "day 1" not in text
    assert text.count("## Models") == 1 and text.count("## Varying blur") == 1
    assert text.endswith(mine) and text.index("## Models") < text.index("## Varying blur")
    write_docs(report("day 2"), doc)
    assert doc.read_text() == text    # a rerun with the same report changes nothing
