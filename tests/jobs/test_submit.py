"""Submitting restore jobs to a real Ray cluster through the Jobs API: a Ray head started on
loopback (`ray start --head`, its own temp dir and token), `flash-restore submit` followed to
success with the job running the Ray engine on that cluster, and plain `ray job submit`."""
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipeline.io.outputs import OutputStore
from tests.helpers import build_tiny_models, write_archive

pytest.importorskip("ray.job_submission")
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    temp = tempfile.mkdtemp(prefix="frh", dir="/tmp")  # short: Ray's socket paths have a length limit
    token = Path(temp) / "token"
    token.write_text(secrets.token_hex(32))
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    port, dash = free_port(), free_port()
    subprocess.run([str(BIN / "ray"), "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                    "--dashboard-host", "127.0.0.1",
                    "--dashboard-port", str(dash), "--include-dashboard", "true", "--temp-dir", temp,
                    "--num-cpus", "2", "--disable-usage-stats"], env=env, check=True, capture_output=True)
    yield f"http://127.0.0.1:{dash}", env
    subprocess.run([str(BIN / "ray"), "stop", "--force"], env=env, capture_output=True)
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def job_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("submit")
    models = build_tiny_models(root / "models")
    return write_archive(root / "archive", n=6, shards=2), [a for o in models["overrides"] for a in ("--set", o)]


def restore_args(archive, sets, out, engine):
    return ["restore", "--input", archive, "--output", str(out), "--engine", engine, "--batch-size", "2", *sets]


def check_outputs(out, n):
    rows = OutputStore(str(out)).read_metrics().to_pylist()
    assert len(rows) == n and all(r["status"] == "ok" for r in rows) and len({r["key"] for r in rows}) == n


def test_flash_restore_submit_follows_a_ray_engine_job_to_success(cluster, job_inputs, tmp_path):
    url, env = cluster
    archive, sets = job_inputs
    out = tmp_path / "out"
    res = subprocess.run([str(BIN / "flash-restore"), "submit", "--address", url, "--job-id", "fr-test-1", "--",
                          *restore_args(archive, sets, out, "ray")], env=env, capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "submitted job fr-test-1" in res.stdout and "SUCCEEDED" in res.stdout
    assert "restored" in res.stdout  # the job's own summary table, streamed back
    check_outputs(out, 6)
    status = subprocess.run([str(BIN / "flash-restore"), "job", "status", "fr-test-1", "--address", url], env=env,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.strip() == "SUCCEEDED"
    bad = subprocess.run([str(BIN / "flash-restore"), "submit", "--address", url, "--", "rm", "-rf", "/"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "error:" in bad.stdout  # only flash-restore commands are submitted


def test_plain_ray_job_submit_runs_the_same_command(cluster, job_inputs, tmp_path):
    url, env = cluster
    archive, sets = job_inputs
    out = tmp_path / "out"
    res = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", ".",
                          "--runtime-env-json", '{"excludes": [".git", "data/corpus"]}', "--", "flash-restore",
                          *restore_args(archive, sets, out, "local")], env=env, capture_output=True, text=True,
                         cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "succeeded" in (res.stdout + res.stderr).lower()
    check_outputs(out, 6)
