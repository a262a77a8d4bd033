"""Shared test setup. Fixtures: a real S3 API server on loopback (moto) for object-storage
tests, and a local Ray per test module (`ray_local`).

`s3_server` starts moto's ThreadedMotoServer once per session, sets fake AWS credentials,
region and `AWS_ENDPOINT_URL` (botocore, boto3 and s3fs all honour it), and yields the
endpoint URL. `s3_bucket` creates a fresh, empty bucket per test and yields its name, so
tests write to `f"s3://{s3_bucket}/..."` with the same code as production.
"""
from __future__ import annotations

import uuid

import pytest
import torch

# The test box has 2 cores shared by several jobs: one intra-op thread is many times faster
# than two oversubscribed ones for these tiny models.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Back to one thread for every test module (a training run may have set more)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def s3_server():
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", endpoint)
        mp.delenv("AWS_PROFILE", raising=False)
        mp.delenv("AWS_SESSION_TOKEN", raising=False)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    boto3 = pytest.importorskip("boto3")
    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    try:
        import s3fs
        s3fs.S3FileSystem.clear_instance_cache()  # fresh listings for the new bucket
    except ImportError:
        pass
    yield name


@pytest.fixture(scope="module")
def ray_local(s3_server):
    """A local Ray for one test module. It starts after the moto server so the actors inherit
    its endpoint and fake credentials."""
    import shutil
    import tempfile

    ray = pytest.importorskip("ray")
    temp = tempfile.mkdtemp(prefix="fr", dir="/tmp")  # short: Ray's socket paths have a length limit
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp, log_to_driver=False)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny random model set (tests.helpers.model_set), one per test module."""
    from tests.helpers import model_set

    return model_set(tmp_path_factory.mktemp("models"))
