"""How the cores are shared out between model runs, ONNX Runtime threads and the worker pool; how a
session is run (plainly, or through IO binding as on CUDA)."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from app.runtime import SessionRunner, ThreadPlan, _cuda_usable, available_cores, create_session, thread_plan
from app.settings import Settings
from tests.conftest import BUNDLED_MODELS


@pytest.mark.parametrize("cores,want", [(1, ThreadPlan(1, 1, 1)), (2, ThreadPlan(2, 1, 2)),
                                        (16, ThreadPlan(16, 1, 16))])
def test_cpu_default_is_one_single_threaded_run_per_core(cores, want):
    assert thread_plan(Settings(device="cpu"), cores) == want


@pytest.mark.parametrize("instances,cores,intra_op", [(1, 2, 2), (2, 8, 4), (3, 2, 1)])
def test_the_cores_are_shared_among_the_instances_asked_for(instances, cores, intra_op):
    plan = thread_plan(Settings(device="cpu", inference_instances=instances), cores)
    assert (plan.instances, plan.intra_op, plan.workers) == (instances, intra_op, cores)


@pytest.mark.parametrize("cpu_max,cap", [("200000 100000\n", 2), ("150000 100000\n", 2), ("50000 100000\n", 1),
                                         ("max 100000\n", None), (None, None), ("garbage\n", None)])
def test_available_cores_follow_a_cgroup_quota(tmp_path, cpu_max, cap):
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    pinned = len(os.sched_getaffinity(0))
    assert available_cores(path) == (pinned if cap is None else min(pinned, cap))


def test_explicit_settings_win():
    plan = thread_plan(Settings(device="cpu", inference_instances=3, intra_op_threads=5, worker_threads=7), 2)
    assert plan == ThreadPlan(3, 5, 7)


def test_the_session_gets_the_plans_thread_count(monkeypatch):
    seen = {}
    real = ort.InferenceSession

    def spy(path, sess_options, providers):
        seen["threads"] = sess_options.intra_op_num_threads
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    create_session(BUNDLED_MODELS / "detector.onnx", Settings(device="cpu", inference_instances=1, intra_op_threads=2))
    assert seen["threads"] == 2


def test_io_binding_runs_agree_with_plain_runs():
    """The IO-binding path (on CUDA by default) exercised on the CPU: every batch shape, more shapes
    than buffers kept, from several threads at once, gives what ``session.run`` gives, and the
    caller's batch is left as it was."""
    session = create_session(BUNDLED_MODELS / "landmarks.onnx", Settings(device="cpu"))
    plain, bound = SessionRunner(session), SessionRunner(session, io_binding=True)
    assert not plain.io_binding and bound.io_binding
    size = session.get_inputs()[0].shape[2]
    rng = np.random.default_rng(0)
    batches = [rng.random((n, 3, size, size), np.float32) for n in (1, 3, 1, 2, 5, 4, 6, 3, 1)]
    want = [plain.run(b) for b in batches]
    copies = [b.copy() for b in batches]

    def run_bound(i):
        return bound.run(batches[i])

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(run_bound, range(len(batches)))) + [bound.run(b) for b in batches]
    for g, w in zip(got, want + want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
    for b, c in zip(batches, copies):
        np.testing.assert_array_equal(b, c)
    assert len(bound._thread_state()[1]) <= SessionRunner.BUFFERS


def test_cuda_demanded_without_one_is_reported_not_a_crash(tmp_path, monkeypatch):
    """SIGHTLINE_DEVICE=cuda on a machine without CUDA (no driver, as here, or made so): the thread
    plan does not raise (the server starts), and /readyz says why the models are not served."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    monkeypatch.setattr("app.runtime._cuda_driver_present", lambda: False)
    assert not _cuda_usable("cuda")
    assert thread_plan(Settings(device="cuda"), 2) == ThreadPlan(2, 1, 2)
    with TestClient(create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cuda"))) as c:
        deadline = time.monotonic() + 30
        while (r := c.get("/readyz")).status_code == 503 and "model_load_failed" not in r.text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 503 and "SIGHTLINE_DEVICE=cuda" in r.json()["error"]["message"]
