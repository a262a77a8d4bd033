"""Redo only what needs it, and view several runs as one: selection, lineage, merge rules.

`plan_reprocess` selects rows of a finished output with a predicate (`pipeline.execution.predicates`)
and returns what a new job needs: the shards to read, the keys to restore, and per key the
lineage columns its new row carries (source output, source row, config diff, source model
hash). `merge_rows` picks exactly one row per key across outputs, by rule:

* `newest`: the row committed last (its part's commit time in the manifest);
* `best`: ok before error, then the lowest `residual_z` (the no-reference signal every
  ok row has), then newest.
"""
from __future__ import annotations

import json

import pyarrow as pa

from pipeline.execution.config import WHOLE, RestoreConfig, load_config
from pipeline.io.outputs import OutputStore
from pipeline.execution.predicates import select
from pipeline.execution.typed_config import flatten

RULES = ("best", "newest")


def config_diff(old: RestoreConfig, new: RestoreConfig) -> dict:
    """{dotted key: [old, new]} over what changes outputs (execution settings left out)."""
    a, b = flatten(old.to_dict(), WHOLE), flatten(new.to_dict(), WHOLE)
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b))
            if not k.startswith("execution.") and a.get(k) != b.get(k)}


def source_config(source: str) -> RestoreConfig:
    store = OutputStore(source)
    if store.read_manifest() is None:
        raise ValueError(f"{source} holds no flash-restore output (no _manifest.json)")
    if not store.fs.exists(store.path("_config.yaml")):
        raise ValueError(f"{source} has no _config.yaml: its job's config is unknown")
    return load_config(store.public_url("_config.yaml"))


def plan_reprocess(source: str, where: str, cfg: RestoreConfig) -> tuple[list[str], set[str], dict[str, dict]]:
    """(shards, keys, lineage) for re-running the rows of `source` matching `where` with `cfg`."""
    old = source_config(source)
    rows = select(OutputStore(source).read_metrics(), where).to_pylist()
    if not rows:
        raise ValueError(f"--where {where!r} selects no rows of {source}")
    diff = json.dumps(config_diff(old, cfg), sort_keys=True, default=str)
    lineage = {r["key"]: {"lineage_source": source, "lineage_row": f"{r['part']}#{r['key']}",
                          "lineage_config_diff": diff, "lineage_model_hash": r.get("model_hash")} for r in rows}
    unsharded = [r["key"] for r in rows if not r.get("shard") or "#" in r["key"]]
    if unsharded:
        raise ValueError(f"rows {unsharded[:3]} name no readable shard (shard-level errors); fix the shard and "
                         "rerun the original job instead")
    return sorted({r["shard"] for r in rows}), set(lineage), lineage


def merge_rows(outputs: list[str], rule: str) -> pa.Table:
    """One row per key across `outputs`, chosen by `rule`, with a `view_source` column."""
    if rule not in RULES:
        raise ValueError(f"--rule must be one of {RULES}, got {rule!r}")
    chosen: dict[str, tuple] = {}
    for order, url in enumerate(outputs):
        store = OutputStore(url)
        manifest = store.read_manifest()
        if manifest is None:
            raise ValueError(f"{url} holds no flash-restore output (no _manifest.json)")
        committed = {name: info.get("committed", 0.0) for name, info in manifest["parts"].items()}
        for row in store.read_metrics().to_pylist():
            when = (committed.get(row["part"], 0.0), order)
            quality = (row["status"] == "ok", -(row["residual_z"] if row.get("residual_z") is not None else 1e30))
            score = when if rule == "newest" else (*quality, *when)
            if row["key"] not in chosen or score > chosen[row["key"]][0]:
                chosen[row["key"]] = (score, {**row, "view_source": url})
    rows = [chosen[k][1] for k in sorted(chosen)]
    return pa.Table.from_pylist(rows)
