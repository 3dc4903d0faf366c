"""How the cores are shared out between model runs, ONNX Runtime threads and the worker pool; how a
session is run (plainly, or through IO binding as SIGHTLINE_IO_BINDING asks on CUDA); the CUDA
provider's options; the warm-up before ready."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest

from app import runtime
from app.runtime import (CPU, CUDA, SessionRunner, ThreadPlan, _cuda_usable, available_cores, create_session,
                         fixed_batch_sizes, providers, thread_plan)
from app.settings import Settings
from tests.conftest import BUNDLED_MODELS, SYNTHETIC, wait_ready
from tests.images import jpeg_bytes
from training.synth.scenes import SceneConfig, render_scene


@pytest.mark.parametrize("cores,want", [(1, ThreadPlan(1, 1, 1, 1)), (2, ThreadPlan(2, 1, 2, 2)),
                                        (16, ThreadPlan(16, 1, 16, 16))])
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


@pytest.mark.parametrize("workers,cores,want", [(2, 16, ThreadPlan(8, 1, 8, 8)), (4, 2, ThreadPlan(1, 1, 1, 1))])
def test_several_server_processes_share_the_cores_out(monkeypatch, workers, cores, want):
    """``SIGHTLINE_WORKERS`` processes on one machine: each plans for its share of the cores (at
    least one), so that together they do not oversubscribe them."""
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    assert thread_plan(Settings(device="cpu", workers=workers)) == want


def test_explicit_settings_win():
    plan = thread_plan(Settings(device="cpu", inference_instances=3, intra_op_threads=5, worker_threads=7), 2)
    assert plan == ThreadPlan(3, 5, 7, 5)


def test_the_session_gets_the_plans_thread_count(monkeypatch):
    seen = {}
    real = ort.InferenceSession

    def spy(path, sess_options, providers):
        seen["threads"] = sess_options.intra_op_num_threads
        return real(path, sess_options=sess_options, providers=providers)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    create_session(SYNTHETIC / "detector.onnx", Settings(device="cpu", inference_instances=1, intra_op_threads=2))
    assert seen["threads"] == 2


def test_io_binding_runs_agree_with_plain_runs():
    """The IO-binding path (SIGHTLINE_IO_BINDING on CUDA) exercised on the CPU: every batch shape, more shapes
    than buffers kept, from several threads at once, gives what ``session.run`` gives, and the
    caller's batch is left as it was."""
    session = create_session(SYNTHETIC / "landmarks.onnx", Settings(device="cpu"))
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
    assert thread_plan(Settings(device="cuda"), 2) == ThreadPlan(2, 1, 2, 2)
    with TestClient(create_app(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cuda"))) as c:
        deadline = time.monotonic() + 30
        while (r := c.get("/readyz")).status_code == 503 and "model_load_failed" not in r.text:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r.status_code == 503 and "SIGHTLINE_DEVICE=cuda" in r.json()["error"]["message"]


def test_a_lone_run_takes_the_all_cores_session():
    """The default plan on 2 cores: runs side by side on one thread each, a run alone on both."""
    plan = thread_plan(Settings(device="cpu"), 2)
    assert plan.lone_session and plan.lone == 2
    assert not thread_plan(Settings(device="cpu", inference_instances=1), 2).lone_session
    assert not thread_plan(Settings(device="cpu", lone_run_threads=1), 2).lone_session
    assert thread_plan(Settings(device="cpu", lone_run_threads=3), 2).lone == 3

    path = SYNTHETIC / "landmarks.onnx"
    settings = Settings(device="cpu", inference_instances=2, intra_op_threads=1)
    plain = SessionRunner(create_session(path, settings))
    runner = SessionRunner(create_session(path, settings), lone=create_session(path, settings, intra_op=2))
    assert runner.lone_threads == 2 and plain.lone_threads == 0
    size = runner.session.get_inputs()[0].shape[2]
    batch = np.random.default_rng(1).random((3, 3, size, size), np.float32)
    np.testing.assert_allclose(runner.run(batch), plain.run(batch), rtol=1e-4, atol=1e-5)
    assert runner.lone_runs == 1


def test_a_run_beside_another_takes_the_single_threaded_session():
    """While one run is in flight (held inside the lone session), the next takes the plan's own."""
    import threading

    path = SYNTHETIC / "landmarks.onnx"
    settings = Settings(device="cpu", inference_instances=2, intra_op_threads=1)
    session = create_session(path, settings)
    entered, release = threading.Event(), threading.Event()

    class HeldSession:
        def run(self, outputs, feeds):
            entered.set()
            assert release.wait(10)
            return session.run(outputs, feeds)

        def get_session_options(self):
            return session.get_session_options()

    runner = SessionRunner(session, lone=HeldSession())
    size = session.get_inputs()[0].shape[2]
    batch = np.zeros((1, 3, size, size), np.float32)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(runner.run, batch)
        assert entered.wait(10)
        beside = runner.run(batch)                 # does not wait for the held run
        release.set()
        np.testing.assert_allclose(first.result(10), beside, rtol=1e-5, atol=1e-5)
    assert runner.lone_runs == 1
    runner.run(batch)                              # alone again: the lone session
    assert runner.lone_runs == 2


def test_the_server_loads_lone_sessions_only_when_the_plan_has_them(tmp_path):
    from app.registry import ModelRegistry, load_models

    for lone in (0, 1):             # 0: every core (as many as this machine has), 1: no more than a run's one
        settings = Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cpu", inference_instances=2,
                            lone_run_threads=lone)
        plan = thread_plan(settings)
        want = plan.lone if plan.lone_session else 0
        assert want == (available_cores() if lone == 0 and available_cores() > 1 else 0)
        registry = ModelRegistry()
        load_models(settings, registry)
        models = registry.describe()
        assert models and all(m.runner.lone_threads == want for m in models)
        assert all((m.runner.lone is None) == (want == 0) for m in models)


def test_every_session_allocates_from_the_one_shared_cpu_arena():
    settings = Settings(device="cpu")
    detector = SYNTHETIC / "detector.onnx"
    sessions = [create_session(detector, settings), create_session(SYNTHETIC / "landmarks.onnx", settings)]
    sessions.append(create_session(detector, settings, intra_op=2))   # registered once
    for session in sessions:
        assert session.get_session_options().get_session_config_entry("session.use_env_allocators") == "1"
    size = sessions[1].get_inputs()[0].shape[2]
    out = SessionRunner(sessions[1]).run(np.zeros((2, 3, size, size), np.float32))
    assert out.shape[0] == 2 and np.isfinite(out).all()


def test_the_cuda_provider_is_asked_for_with_the_cudnn_search_setting(monkeypatch):
    monkeypatch.setattr("app.runtime._cuda_usable", lambda device: device != "cpu")
    assert providers(Settings()) == [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU]
    exhaustive = providers(Settings(cuda_conv_algo_search="EXHAUSTIVE"))
    assert exhaustive[0] == (CUDA, {"cudnn_conv_algo_search": "EXHAUSTIVE"})
    assert providers(Settings(device="cpu")) == [CPU]


def _batch_sizes_run(monkeypatch) -> dict[int, list[int]]:
    """Each session's batch sizes run through ``SessionRunner.run`` from now on, by ``id(session)``."""
    seen: dict[int, list[int]] = {}
    real = SessionRunner.run

    def spy(self, batch):
        seen.setdefault(id(self.session), []).append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(SessionRunner, "run", spy)
    return seen


@pytest.mark.parametrize("warmup,warmed", [("on", True), ("auto", False), ("off", False)])
def test_warm_up_runs_every_model_at_every_batch_size_before_ready(tmp_path, monkeypatch, warmup, warmed):
    """On: each model runs once at batch sizes 1..max_batch while loading (before /readyz turns 200);
    auto: only where a model is on CUDA (not here); off: never. IO binding stays off on the CPU
    even when asked for."""
    from app.registry import ModelRegistry, load_models

    seen = _batch_sizes_run(monkeypatch)
    registry = ModelRegistry()
    load_models(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cpu", warmup=warmup, max_batch=3,
                         io_binding=True), registry)
    models = registry.describe()
    assert len(models) == 5 and not any(m.runner.io_binding for m in models)
    for m in models:
        sizes = seen.get(id(m.session), [])
        assert (sizes[-3:] == [1, 2, 3]) == warmed, (m.path.name, sizes)
        assert len(sizes) <= (4 if warmed else 1)      # the detectors' own layout check runs batch 1 once


@pytest.mark.parametrize("max_batch,sizes", [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (12, [1, 2, 4, 8, 12]),
                                             (16, [1, 2, 4, 8, 16])])
def test_fixed_batch_sizes_are_powers_of_two_then_max_batch(max_batch, sizes):
    assert fixed_batch_sizes(max_batch) == sizes


class ShapeLog:
    """A session that records the batch sizes it is run at (plain runs; bound runs pass through)."""

    def __init__(self, session):
        self.session, self.sizes = session, []

    def run(self, outputs, feeds):
        self.sizes.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)

    def io_binding(self):
        return self.session.io_binding()

    def run_with_iobinding(self, binding):
        return self.session.run_with_iobinding(binding)


@pytest.mark.parametrize("io_binding", [False, True])
def test_fixed_batch_sizes_pad_each_batch_and_keep_one_shape_per_session(io_binding):
    """With fixed sizes 1, 2, 4 a batch of 3 runs padded to 4 on the size-4 session, 5 rows as 4 + 1;
    every session sees one batch size only, and each row's output is what the model gives it unpadded."""
    path = SYNTHETIC / "landmarks.onnx"
    settings = Settings(device="cpu", inference_instances=1, intra_op_threads=1)
    plain = SessionRunner(create_session(path, settings))
    logs = {s: ShapeLog(create_session(path, settings)) for s in (1, 2, 4)}
    runner = SessionRunner(create_session(path, settings), io_binding=io_binding)
    runner.use_batch_sizes(logs)
    assert runner.batch_sizes == [1, 2, 4]
    size = plain.session.get_inputs()[0].shape[2]
    rng = np.random.default_rng(2)
    for n in (3, 1, 2, 5, 4, 1, 3):
        batch = rng.random((n, 3, size, size), np.float32)
        copy = batch.copy()
        got = runner.run(batch)
        assert got.shape[0] == n
        np.testing.assert_allclose(got, plain.run(batch), rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(batch, copy)
    if not io_binding:
        assert {s: set(log.sizes) for s, log in logs.items()} == {1: {1}, 2: {2}, 4: {4}}
        assert [len(log.sizes) for log in logs.values()] == [3, 1, 4]     # 1, 1, 5->4+1 | 2 | 3, 5->4, 4, 3
    parts = [rng.random((1, 3, size, size), np.float32), rng.random((2, 3, size, size), np.float32)]
    stacked = runner.stack(parts)                  # the batcher's one copy: padded to 4 already
    assert stacked.shape[0] == 4 and not stacked[3].any()
    np.testing.assert_array_equal(stacked[:3], np.concatenate(parts))
    assert runner.stack(parts[1:]) is parts[1] and plain.stack(parts).shape[0] == 3


@pytest.mark.parametrize("fixed,sizes", [("on", [1, 2, 4, 5]), ("auto", None), ("off", None)])
def test_the_server_runs_fixed_batch_sizes_where_asked_and_warms_each(tmp_path, monkeypatch, fixed, sizes):
    """SIGHTLINE_FIXED_BATCH_SIZES=on: every model gets one session per size (1, 2, 4, max_batch 5),
    the first the session it was loaded with; the warm-up runs each size once; /models reports them.
    auto: only on CUDA (not here); off: never."""
    from fastapi.testclient import TestClient

    from app.main import create_app

    seen = _batch_sizes_run(monkeypatch)
    settings = Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cpu", warmup="on", max_batch=5,
                        fixed_batch_sizes=fixed)
    rng = np.random.default_rng(4)
    photos = [jpeg_bytes(render_scene(rng, SceneConfig()).image) for _ in range(3)]
    with TestClient(create_app(settings)) as c:
        wait_ready(c)
        listed = c.get("/models").json()["models"]
        models = c.app.state.registry.describe()
        warmed = {k: list(v) for k, v in seen.items()}
        together = c.post("/detect", files=[("image", (f"{i}.jpg", p, "image/jpeg")) for i, p in enumerate(photos)])
        alone = [c.post("/detect", files={"image": ("a.jpg", p, "image/jpeg")}) for p in photos]
    # three rows in one run (padded to 4 when sizes are fixed) answer as each alone
    assert together.status_code == 200 and sum(len(r["detections"]) for r in together.json()["results"]) > 0
    for got, want in zip(together.json()["results"], alone):
        assert [d["label"] for d in got["detections"]] == [d["label"] for d in want.json()["detections"]]
        for d, w in zip(got["detections"], want.json()["detections"]):
            np.testing.assert_allclose(list(d["box"].values()), list(w["box"].values()), atol=0.05)
    assert len(listed) == 5 and all(m["batch_sizes"] == sizes for m in listed)
    for m in models:
        assert m.runner.batch_sizes == (sizes or [])
        assert warmed[id(m.session)][-(len(sizes or range(5))):] == (sizes or [1, 2, 3, 4, 5])
        if sizes:
            assert m.runner.sized[1] is m.session and len({id(s) for s in m.runner.sized.values()}) == len(sizes)


def test_on_cuda_fixed_batch_sizes_and_the_warm_up_are_the_default(tmp_path, monkeypatch):
    """The defaults (``auto``) where a session runs on CUDA, the device faked on this CPU machine:
    every model gets its fixed sizes and is warmed at each of them before the models are served."""
    from app.registry import ModelRegistry, load_models

    real_init = SessionRunner.__init__

    def on_cuda(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.device = "cuda"

    monkeypatch.setattr(SessionRunner, "__init__", on_cuda)
    seen = _batch_sizes_run(monkeypatch)
    registry = ModelRegistry()
    load_models(Settings(models_dir=BUNDLED_MODELS, data_dir=tmp_path, device="cpu", max_batch=8), registry)
    for m in registry.describe():
        assert m.runner.batch_sizes == [1, 2, 4, 8] and len(m.runner.sized) == 4
        assert seen[id(m.session)][-4:] == [1, 2, 4, 8]
