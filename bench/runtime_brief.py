"""``python -m bench.runtime_brief SECONDS OUT.json``: the serving runtime's figures in a few minutes,
for a machine lent for a short while (a GPU): a fresh session's first run at each batch size, then
runs at sizes it has seen, in turn (does a session keep what it planned for a shape once another
comes?), raw ONNX Runtime with and without IO binding, the batched and the unbatched server at 1, 4,
16 and 64 clients (section 9's code, one turn each; on CUDA a batched server with two runs in flight
too), the same servers under random arrivals at 0.8 times the unbatched server's 16-client rate,
each server's start-up to ready (the warm-up on CUDA) and its models' providers (``/models``), and
an overload at twice the batched server's 16-client rate on the fixed-limit server and on one with
the default adaptive limit that has first served one client alone. The figures are written to OUT
after every step, and the run stops taking new steps near the deadline, so a run cut short still
leaves what it measured. Run it with the environment the server should see (``SIGHTLINE_DEVICE=cuda``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx

from app.settings import Settings
from bench.images import make_jpegs
from bench.inference import bench_raw_bound, make_batch
from bench.machine import describe_machine
from bench.runtime import MODES, RawBound, learnt_overload, measure_levels, overload, random_arrivals
from bench.server import ROOT, uvicorn_server

CLIENTS = (1, 4, 16, 64)
BATCHES = (1, 4, 8, 16)
MODELS = ROOT / "models" / "synthetic"            # the project's own detector, segmenter and face models
READY_TIMEOUT_S = 300.0                           # the warm-up on a GPU: every model at each batch size it runs at


@contextmanager
def started(r: dict, name: str, settings: dict[str, str] | None):
    """A server with ``settings``; its seconds to ready and each model's provider go into ``r``."""
    t = time.monotonic()
    with uvicorn_server(MODELS, ready_timeout=READY_TIMEOUT_S, settings=settings) as server:
        models = httpx.get(f"{server.base_url}/models", timeout=10.0).json()
        r.setdefault("servers", {})[name] = {
            "ready_s": time.monotonic() - t,
            "models": {m["name"]: {k: m.get(k) for k in ("execution_provider", "io_binding", "batch_sizes")}
                       for m in models.get("models", [])}}
        yield server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.runtime_brief", description=__doc__)
    ap.add_argument("seconds", type=float, help="deadline: no new step starts within 20 s of it")
    ap.add_argument("out", type=Path, help="JSON figures, rewritten after every step")
    ap.add_argument("--level-seconds", type=float, default=6.0, help="per server and level, after 2 s warm-up")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    deadline = t0 + args.seconds
    r: dict = {"level_seconds": args.level_seconds}

    def save(what: str) -> None:
        args.out.write_text(json.dumps(r, indent=1) + "\n")
        print(f"[{time.monotonic() - t0:6.1f} s] {what}", file=sys.stderr, flush=True)

    jpegs, _ = make_jpegs(24, 0)
    settings = Settings()
    raw = RawBound(MODELS / "detector.onnx", settings, jpegs)
    r["machine"] = describe_machine(raw.whole.provider)
    r["settings"] = settings.model_dump(include={"device", "cuda_conv_algo_search", "io_binding", "warmup",
                                                 "fixed_batch_sizes", "max_batch", "max_delay_ms", "max_in_flight"})
    def run_ms(b: int) -> float:
        x = make_batch(raw.tensors, b)
        start = time.perf_counter()
        raw.whole.run(x)
        return (time.perf_counter() - start) * 1000

    # the session has run batch 1 once, in its layout check
    r["first_call_ms"] = {b: run_ms(b) for b in (1, 2, 4, 8, 16)}
    save(f"first run at each batch size, ms: {({b: round(v) for b, v in r['first_call_ms'].items()})}")
    r["switch_ms"] = [[b, run_ms(b)] for b in (1, 2, 1, 2, 16, 1, 1)]   # sizes seen before: only the last kept?
    save(f"sizes seen before, in turn, ms: {[(b, round(v)) for b, v in r['switch_ms']]}")
    r["raw"] = []
    for bound in (True, False):
        r["raw"] += [bench_raw_bound(raw.whole, raw.tensors, b, 200, 10, bound) for b in BATCHES]
        save(f"raw, IO binding {bound}: " + ", ".join(f"batch {x['batch']} {x['images_per_s']:.0f}/s"
                                                       for x in r["raw"] if x["io_binding"] == bound))
    with ExitStack() as stack:
        modes = {m: MODES[m] for m in ("batched", "unbatched")}
        if raw.plan.instances == 1:         # CUDA: does a second run in flight (copies beside kernels) pay?
            modes["batched_two_runs"] = {**MODES["batched"], "SIGHTLINE_INFERENCE_INSTANCES": "2"}
            # one process is bound near 350 images/s by its Python (H200): do four behind one port pay?
            modes["four_processes"] = {**MODES["batched"], "SIGHTLINE_WORKERS": "4"}
        servers = {m: stack.enter_context(started(r, m, env)) for m, env in modes.items()}
        save("servers ready: " + ", ".join(f"{m} {v['ready_s']:.1f} s" for m, v in r["servers"].items()))
        r["levels"] = []
        for c in CLIENTS:
            if time.monotonic() > deadline - 20:
                save(f"deadline: no level at {c} clients")
                break
            levels, turns = measure_levels(servers, jpegs, (c,), args.level_seconds, 2.0, 1, raw, c)
            r["levels"].append({"clients": c, **{m: levels[m][0] for m in levels}, "raw_turn": turns[0]})
            save(f"{c} clients: " + ", ".join(f"{m} {levels[m][0]['images_per_s']:.0f}/s p99 "
                                             f"{levels[m][0]['latency']['p99_ms']:.0f} ms" for m in levels)
                 + f", raw {turns[0]['images_per_s']:.0f}/s at batch {turns[0]['batch']}")
        top = next((x for x in r["levels"] if x["clients"] == 16), None)
        if top and time.monotonic() < deadline - 25 - 10 * len(servers):
            rate = 0.8 * top["unbatched"]["images_per_s"]
            r["random_arrivals"] = {m: random_arrivals(server, jpegs, rate, 8.0) for m, server in servers.items()}
            save(f"random arrivals at {rate:.0f}/s: " + ", ".join(
                f"{m} {x['ok']} answered p50 {x['admitted_latency'].get('median_ms', 0):.0f} ms p99 "
                f"{x['admitted_latency'].get('p99_ms', 0):.0f} ms on {x['server_cpu_cores']:.1f} cores"
                for m, x in r["random_arrivals"].items()))
        if top and time.monotonic() < deadline - 25:
            r["overload"] = overload(servers["batched"], jpegs, 2 * top["batched"]["images_per_s"], 10.0)
            save(f"overload: {r['overload']['ok']} admitted, {r['overload']['refused']} refused")
    if top and time.monotonic() < deadline - 40:
        with started(r, "adaptive", None) as server:        # the defaults
            r["overload_adaptive"] = learnt_overload(server, jpegs, 2 * top["batched"]["images_per_s"], 10.0, 4.0)
        save(f"overload, adaptive limit: {r['overload_adaptive']['ok']} admitted, "
             f"{r['overload_adaptive']['refused']} refused")
    save("done")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
