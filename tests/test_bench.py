"""Smoke test for ``python -m bench``: the quick profile runs every section end to end (including a
real uvicorn subprocess) and writes consistent JSON and markdown. Speed is never asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.runtime import ceilings, window_peaks
from bench.server import process_cpu_seconds, uvicorn_server

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "synthetic" / "detector.onnx"   # what `python -m bench` measures by default


def test_quick_bench_runs_every_section(tmp_path, capsys):
    out, md = tmp_path / "r.json", tmp_path / "r.md"
    assert main(["--quick", "--out", str(out), "--md", str(md)]) == 0
    r = json.loads(out.read_text())
    assert r["machine"]["cpu_model"] and r["machine"]["execution_provider"].endswith("ExecutionProvider")
    assert [x["batch"] for x in r["raw"]] == [1, 8] and all(x["images_per_s"] > 0 for x in r["raw"])
    assert set(r["pipeline"]["stages"]) == {"decode", "preprocess", "inference", "postprocess"}
    levels = r["http"]["levels"]
    assert [x["clients"] for x in levels] == [1, 2]
    assert all(x["ok"] > 0 and not x["errors"] for x in levels)
    assert len(r["ratios"]) == 3 and all(v > 0 for v in r["ratios"].values())
    assert [x["boxes"] for x in r["nms"]] == [1000, 10000]
    assert all(x["same_set"] for x in r["nms"]), r["nms"]
    assert "### 5. Per-class NMS" in md.read_text()
    assert "HTTP at 2 clients / raw batch 8" in capsys.readouterr().out
    if (MODEL.parent / "segmenter.onnx").is_file():
        formats = r["http"]["segment"]["formats"]
        assert [f["params"].get("format", "json") for f in formats] == ["json", "json", "png", "png"]
        assert all(f["latency"]["n"] == 2 and f["bytes_mean"] > 0 for f in formats)
        assert "### 8. HTTP `POST /segment`" in md.read_text()
    rt = r["runtime"]
    for mode in ("batched", "unbatched", "batched_one_run", "two_processes"):
        levels = rt[mode]["levels"]
        assert [x["clients"] for x in levels] == [1, 4] and all(x["ok"] > 0 for x in levels)
        assert all(x["mean_batch"] >= 1 for x in levels)
    assert all(x["mean_batch"] == 1 for x in rt["unbatched"]["levels"])        # batching off is off
    assert rt["batched"]["overload"]["sent"] > 0 and len(rt["batched"]["soak"]["samples"]) >= 2
    adaptive = rt["batched"]["overload_adaptive"]      # the default server, adaptive concurrency limit
    assert adaptive["sent"] > 0 and adaptive["unloaded_latency"]["n"] > 0 and "adaptive limit" in md.read_text()
    assert rt["batched"]["overload_strict"]["sent"] > 0
    for key in ("mixed", "mixed_adaptive", "mixed_strict"):          # small and phone photos side by side, light load
        mixed = rt["batched"][key]
        assert mixed["small"]["sent"] > 0 and mixed["phones"]["sent"] > 0 and mixed["phone_bytes_mean"] > 1e6
    assert "light mixed load" in md.read_text()
    assert r["runtime_ratios"]["batched_over_raw"] > 0 and r["runtime_ratios"]["batched_over_one_run"] > 0
    assert r["runtime_ratios"]["two_processes_over_one"] > 0
    for x in rt["raw"]:               # the upper bound is the faster of the two ways to run the model
        assert x["images_per_s"] == max(x["one_run_images_per_s"], x["side_by_side_images_per_s"]) > 0
    assert rt["settings"]["instances"] >= 1 and rt["settings"]["intra_op"] >= 1
    assert "### 9. Serving runtime" in md.read_text() and "### 10. Serving runtime: targets" in md.read_text()
    front, floor = rt["front_cpu_ms"], rt["http_floor"]      # the ceiling's parts, measured
    assert all(front[k] > 0 for k in ("decode", "preprocess", "postprocess"))
    assert floor["ok"] > 0 and floor["server_cpu_ms_per_request"] > 0
    ceiling = r["runtime_ratios"]["ceiling"]
    assert 0 < ceiling["over_raw"] < ceiling["over_raw_vision_only"]
    assert 0 < ceiling["over_unbatched"] < ceiling["over_unbatched_vision_only"]
    assert "### 9b. Serving runtime: where a served photo's CPU goes" in md.read_text()
    assert len(rt["batched"]["soak"]["rss_mb_window_peaks"]) >= 2


def test_soak_reads_the_peaks_so_swings_are_not_growth():
    """RSS swinging between a floor and a peak (the allocator taking and returning batch memory)
    is flat; peaks that climb are a leak."""
    swings = [(t, 786.0 if t % 20 < 10 else 810.0) for t in range(0, 600, 5)]
    peaks = window_peaks(swings, 600.0)
    assert [mb for _, mb in peaks] == [810.0] * 10 and peaks[0][0] == 30.0
    leak = [(t, 700.0 + t / 60 * 5 + (10.0 if t % 20 < 10 else 0.0)) for t in range(0, 600, 5)]  # 5 MB/min
    climbing = [mb for _, mb in window_peaks(leak, 600.0)]
    assert climbing == sorted(climbing) and climbing[-1] - climbing[1] > 35


def test_ceilings_add_the_least_cpu_per_photo():
    """2 cores, the model 8 ms a photo at the batch formed (6 at batch 1), vision 3, HTTP 1: at most
    2000 / 12 = 166.7 images/s at that batch against raw 250 (0.667), 2000 / 10 = 200 against an
    unbatched server's 100 (2.0); the served CPU beyond those parts is the rest."""
    raw1 = {"batch": 1, "least_cpu_ms_per_image": 6.0, "images_per_s": 300.0}
    turns = [{"batch": 4, "least_cpu_ms_per_image": 8.0, "images_per_s": 250.0}] * 2
    rt = {"cores": 2, "raw": [raw1], "raw_turns": turns,
          "front_cpu_ms": {"decode": 2.0, "preprocess": 0.6, "postprocess": 0.4},
          "http_floor": {"server_cpu_ms_per_request": 0.8, "client_cpu_ms_per_request": 0.2}}
    batched = {"images_per_s": 125.0, "server_cpu_cores": 1.5, "client_cpu_cores": 0.25}   # 14 ms a photo
    unbatched = {"images_per_s": 100.0, "server_cpu_cores": 1.6, "client_cpu_cores": 0.2}  # 18 ms
    c = ceilings(rt, batched, unbatched)
    assert c["over_raw"] == pytest.approx(2000 / 12 / 250)
    assert c["over_raw_vision_only"] == pytest.approx(2000 / 11 / 250)
    assert c["over_unbatched"] == pytest.approx(2.0) and c["over_unbatched_vision_only"] == pytest.approx(2000 / 9 / 100)
    assert c["rest_ms"] == pytest.approx(14 - 12) and c["unbatched_rest_ms"] == pytest.approx(18 - 10)


def test_server_is_gone_after_the_bench(tmp_path):
    """The context manager kills the server even when the body raises."""
    with pytest.raises(RuntimeError, match="boom"):
        with uvicorn_server(MODEL.parent) as server:
            pid = server.pid
            raise RuntimeError("boom")
    assert process_cpu_seconds(pid) == 0.0  # /proc/<pid> is gone: the process was reaped
