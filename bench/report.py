"""The figures as a readable text report and as markdown tables, both built from the same rows."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def _f(x: float, digits: int = 1) -> str:
    return f"{x:.{digits}f}"


def header_lines(r: dict) -> list[str]:
    m, model, img = r["machine"], r["model"], r["images"]
    return [
        f"Machine: {m['cpu_model']}, {m['cores']} cores ({m['usable_cores']} usable); load average "
        f"{' '.join(map(str, m['load_average_start']))} at start, {' '.join(map(str, r['load_average_end']))} at end",
        *([f"GPU: {m['gpu']}"] if m.get("gpu") else []),
        f"Python {m['python']}, onnxruntime {m['onnxruntime']} on {m['execution_provider']} "
        f"(server: {r['http'].get('provider', 'n/a')}), numpy {m['numpy']}, OpenCV {m['opencv']}",
        f"Model: {model['name']} {model['version']}, input {model['input_size']}x{model['input_size']}, "
        f"{len(model['class_names'])} classes, {model['path']} ({model['bytes'] / 1e6:.1f} MB, sha256 {model['sha256_12']})",
        f"Images: {img['count']} JPEGs {img['size']} quality {img['quality']} from {img['source']}, "
        f"mean {img['bytes_mean'] / 1000:.0f} kB; profile {r['profile']}, run took {r['elapsed_s']:.0f} s",
    ]


def raw_table(r: dict) -> Table:
    binding = "raw_other_binding" in r      # on CUDA: with and without the inputs kept on the device
    rows = [[str(x["batch"]), *(["yes" if x["io_binding"] else "no"] if binding else []), str(x["n"]),
             _f(x["median_ms"], 2), _f(x["p90_ms"], 2), _f(x["images_per_s"])]
            for key in ("raw", "raw_other_binding") for x in r.get(key, [])]
    return Table("1. Raw ONNX Runtime (`detector.run` on preprocessed tensors)",
                 ["batch", *(["IO binding"] if binding else []), "calls", "median ms/batch", "p90 ms/batch",
                  "images/s"], rows,
                 "one run at a time on all cores (SIGHTLINE_INFERENCE_INSTANCES=1), as in section 2; section 9 "
                 "also measures runs side by side, as the server makes them"
                 + ("; IO binding (SIGHTLINE_IO_BINDING): each batch copied into an input tensor kept on the GPU "
                    "between runs, or (no) handed to ONNX Runtime as a numpy array; the first rows as the server "
                    "runs" if binding else ""))


def detectors_table(r: dict) -> Table:
    rows = [[d["model"]["name"], d["family"], str(d["model"]["input_size"]), str(len(d["model"]["class_names"])),
             _f(d["model"]["bytes"] / 1e6, 1),
             _f(d["raw_batch1"]["median_ms"], 2), _f(d["pipeline"]["total"]["median_ms"], 2),
             _f(d["pipeline"]["images_per_s"])] for d in r["detectors"]]
    return Table("1b. The served detector beside the project's own (batch 1, one run at a time, all cores)",
                 ["model", "family", "input px", "classes", "MB", "raw median ms", "pipeline median ms",
                  "pipeline images/s"], rows,
                 "the same 640x480 JPEGs through each model's own decode, letterbox and decoding; the first row is "
                 "the detector sections 1-3 and 9 measure")


def pipeline_table(r: dict) -> Table:
    p = r["pipeline"]
    rows = [[name, _f(s["median_ms"], 2), _f(s["p90_ms"], 2)] for name, s in p["stages"].items()]
    rows.append(["total", _f(p["total"]["median_ms"], 2), _f(p["total"]["p90_ms"], 2)])
    note = (f"{p['iterations']} images, one thread: {_f(p['images_per_s'])} images/s from the median total; "
            f"{_f(p['detections_per_image_mean'])} detections/image on average (conf {p['params']['conf']})")
    return Table("2. In-process pipeline per 640x480 JPEG", ["stage", "median ms", "p90 ms"], rows, note)


def large_photo_table(r: dict) -> Table:
    x = r["large_photo"]
    rows = [[name, _f(x["shrunk"]["stages_ms"][name], 1), _f(x["full"]["stages_ms"][name], 1)]
            for name in x["shrunk"]["stages_ms"]]
    rows.append(["total", _f(x["shrunk"]["total_ms"], 1), _f(x["full"]["total_ms"], 1)])
    rows.append(["detections", str(x["shrunk"]["detections"]), str(x["full"]["detections"])])
    return Table(f"2b. One {x['size']} JPEG (a phone photo's size, {x['jpeg_bytes'] / 1e6:.1f} MB)",
                 ["stage", "decoded shrunk in the DCT (as served), ms", "decoded at full size, ms"], rows,
                 f"median of {x['iterations']} runs, one thread; the full-size decode is shrunk by the letterbox "
                 "(preprocess) instead")


def http_table(r: dict) -> Table:
    rows = []
    for x in r["http"]["levels"]:
        errors = sum(x["errors"].values())
        rows.append([str(x["clients"]), str(x["ok"]), str(errors), _f(x["latency"]["median_ms"]),
                     _f(x["latency"]["p99_ms"]), _f(x["images_per_s"]),
                     _f(x["server_median_stage_ms"].get("inference", float("nan")), 2),
                     _f(x["server_cpu_cores"], 2), _f(x["client_cpu_cores"], 2)])
    h = r["http"]
    note = (f"uvicorn subprocess on 127.0.0.1, {h['seconds']:g} s per level after {h['warmup_s']:g} s warm-up; "
            "the clients (httpx, one process) share the machine with the server; a fixed concurrency limit "
            "(SIGHTLINE_LATENCY_TOLERANCE=0)")
    return Table("3. HTTP `POST /detect` over loopback",
                 ["clients", "ok", "errors", "p50 ms", "p99 ms", "images/s", "server inference median ms",
                  "server CPU cores", "client CPU cores"], rows, note)


def ratio_table(r: dict) -> Table:
    rows = [[name, _f(value, 3)] for name, value in r["ratios"].items()]
    return Table("4. Ratios (same run)", ["ratio", "value"], rows)


def _nms_verdict(x: dict) -> str:
    ratio = x["numpy_over_opencv"]
    speed = f"OpenCV {ratio:.1f}x faster" if ratio > 1 else f"numpy {1 / ratio:.1f}x faster"
    return f"{x['boxes']} boxes: {speed}"


def nms_table(r: dict) -> Table:
    rows = []
    for x in r["nms"]:
        rows.append([str(x["boxes"]), _f(x["numpy"]["median_ms"], 2), _f(x["opencv"]["median_ms"], 2),
                     _f(x["numpy_over_opencv"], 2), x["faster"], f"{x['kept_numpy']}/{x['kept_opencv']}",
                     "yes" if x["same_order"] else ("same set" if x["same_set"] else "NO")])
    return Table("5. Per-class NMS, IoU 0.45, 3 classes, clustered boxes",
                 ["boxes", "numpy ms", "OpenCV ms", "numpy/OpenCV", "faster", "kept numpy/OpenCV", "same boxes"],
                 rows, "; ".join(map(_nms_verdict, r["nms"])) + ". numpy = app.vision.boxes.nms_per_class_numpy (reference), "
                 "OpenCV = app.vision.boxes.nms_per_class (cv2.dnn.NMSBoxesBatched, served)")


def gallery_table(r: dict) -> Table:
    g = r["gallery"]
    rows = []
    for size in g["sizes"]:
        for x in size["indexes"]:
            recall = ((_f(x["recall_at_1"], 3), _f(x["recall_at_10"], 3)) if "recall_at_1" in x
                      else ("reference", "reference"))
            rows.append([f"{size['faces']:,}", x["index"], _f(x["build_s"], 2), _f(x["bytes"] / 1e6),
                         _f(x["single"]["median_ms"], 3), _f(x["single"]["p90_ms"], 3),
                         _f(x["batch"]["median_ms"], 2), _f(x["batch"]["queries_per_s"], 0), *recall])
    speedups = "; ".join(f"{s['faces']:,} faces: exact/HNSW median latency {s['hnsw_speedup_single']:.1f} "
                         f"(1 query), {s['hnsw_speedup_batch']:.1f} (batch {g['batch']}), exact top-1 is the "
                         f"query's source face for {100 * s['exact_top1_is_source']:.1f}% of queries"
                         for s in g["sizes"])
    note = (f"{g['dim']}-d unit vectors, identities of {g['faces_per_identity']} faces (noise {g['spread']}), queries "
            f"= gallery faces + noise {g['query_noise']}; top-{g['k']}; recall of HNSW against exact over "
            f"{g['sizes'][0]['queries']} queries; bytes = serialised index; faiss {g['faiss']}, "
            f"{g['faiss_threads']} OpenMP threads; section took {g['elapsed_s']:.0f} s. {speedups}. "
            "The gallery serves exact IndexFlatIP.")
    return Table("6. Face-gallery search, exact against HNSW (faiss)",
                 ["faces", "index", "build s", "MB", "1 query median ms", "1 query p90 ms",
                  f"batch {g['batch']} median ms", "queries/s (batch)", "recall@1", f"recall@{g['k']}"], rows, note)


def faces_table(r: dict) -> Table:
    f = r["http"]["faces"]
    rows = []
    for name, runs in (("enroll (POST /subjects/{id}/faces)", [f["enroll"]]), ("POST /verify", f["verify"]),
                       ("POST /identify, a portrait", f["identify"]),
                       ("POST /identify, the group photo (29 faces)", [f["identify_group"]])):
        for x in runs:
            lat = x["latency"]
            rows.append([name, str(x["clients"]), f"{x['ok']}/{x['requests']}", _f(lat.get("median_ms", 0.0)),
                         _f(lat.get("p99_ms", 0.0)), _f(x["per_s"])])
    phone = f.get("verify_phone")
    if phone:
        lat = phone["latency"]
        rows.append(["POST /verify, two 12 MP photos", "1", f"{phone['ok']}/{phone['pairs']}",
                     _f(lat.get("median_ms", 0.0)), _f(lat.get("p99_ms", 0.0)),
                     _f(1000 / lat["median_ms"] if lat.get("median_ms") else 0.0)])
    note = (f"The served real face models on real photos (training/pretrained/realphotos.py): {f['people']} people "
            f"enrolled from one photo each; /verify sends every pair of {f['photographs']} portraits (626 to 2333 px "
            "a side) and runs the face pipeline on both; /identify each portrait, and the 3000x2171 group photo. "
            "Same uvicorn server as section 3."
            + (f" The 12 MP row: two photos of Barack Obama, each enlarged to 4032x3024 "
               f"({phone['jpeg_bytes'] / 1e6:.1f} MB JPEG), {phone['verified']} of {phone['ok']} pairs verified; "
               "requests/s is 1000 / p50." if phone else ""))
    return Table("7. Faces over HTTP (real models, real photos)", ["request", "clients", "ok", "p50 ms", "p99 ms",
                                                                   "requests/s"], rows, note)


def segment_table(r: dict) -> Table:
    s = r["http"]["segment"]
    rows = [[x["format"], str(x["latency"]["n"]), _f(x["latency"]["median_ms"]), _f(x["latency"]["p99_ms"]),
             _f(x["bytes_mean"] / 1000, 1), _f(x["bytes_max"] / 1000, 1)] for x in s["formats"]]
    note = (f"one client, {s['requests']} requests per format after 3 untimed, 640x480 JPEGs of synthetic scenes; "
            "the mask is at the photo's resolution. Same uvicorn server as section 3.")
    return Table("8. HTTP `POST /segment`: latency and response size per format",
                 ["format", "requests", "p50 ms", "p99 ms", "response kB (mean)", "response kB (max)"], rows, note)


def _raw_turns(rt: dict) -> str:
    """The raw bound's turns, e.g. ``batch 5: 137, 141, 129, 135 images/s``."""
    turns, ips = rt["raw_turns"], [t["images_per_s"] for t in rt["raw_turns"]]
    return (f"batch {', '.join(str(t['batch']) for t in turns)}: {', '.join(_f(x) for x in ips)} images/s, "
            f"mean {_f(sum(ips) / len(ips))}")


def _raw_ways(rt: dict) -> str:
    """Both raw figures per batch size, e.g. ``batch 8: 110 one run, 150 side by side``."""
    return "; ".join(f"batch {x['batch']}: {_f(x['one_run_images_per_s'])} one run, "
                     f"{_f(x['side_by_side_images_per_s'])} with {x['runs_side_by_side']} side by side "
                     f"at {_f(x['side_by_side_cpu_ms_per_image'], 1)} CPU ms/image"
                     for x in rt["raw"] if "one_run_images_per_s" in x) or "one way measured"


def cpu_table(rt: dict, clients: int, c: dict) -> Table:
    """Section 9b: the CPU one served photo costs, the least any server needs against what it took."""
    f, h = rt["front_cpu_ms"], rt["http_floor"]
    batches = ", ".join(sorted({str(t["batch"]) for t in rt["raw_turns"]}))
    rows = [[f"the model's run at batch {batches} (raw ONNX Runtime, the cheaper way)", _f(c["model_ms_at_batch"], 2)],
            ["decoding the JPEG", _f(f["decode"], 2)],
            ["letterbox into the input tensor", _f(f["preprocess"], 2)],
            ["boxes from the model's rows (NMS included)", _f(f["postprocess"], 2)],
            ["HTTP floor, server: FastAPI on uvicorn reading the upload, a small JSON back (bench/floor_app.py)",
             _f(h["server_cpu_ms_per_request"], 2)],
            ["HTTP floor, clients (bench/rawhttp.py, on the same cores)", _f(h["client_cpu_ms_per_request"], 2)],
            ["least in all", _f(c["model_ms_at_batch"] + c["vision_ms"] + c["http_ms"], 2)],
            [f"the batched server and its clients at {clients} clients (section 9)", _f(c["served_ms"], 2)],
            ["the rest: batching, routing, middleware, the detections' JSON, scheduling", _f(c["rest_ms"], 2)]]
    if "unbatched_served_ms" in c:
        rows += [[f"the unbatched server and its clients at {clients} clients (section 9)",
                  _f(c["unbatched_served_ms"], 2)],
                 [f"its rest, beside the model's run at batch 1 ({_f(c['model_ms_batch_1'], 2)} ms) and the same "
                  "vision work and HTTP floor", _f(c["unbatched_rest_ms"], 2)]]
    note = (f"CPU ms per photo: the model's run from the raw turns of section 9; the vision work on one thread, "
            f"mean of {f['images']} photos as the server does it; the HTTP floor under {h['clients']} closed-loop "
            f"clients for {h['seconds']:.0f} s ({_f(h['requests_per_s'])} requests/s). On {c['cores']} cores no server "
            f"can serve more than {c['cores']} x 1000 / the least in all = {_f(c['most_images_per_s_at_batch'])} "
            f"images/s at that batch ({_f(c['most_images_per_s_cheapest'])} with the model at its cheapest, "
            f"{_f(c['model_ms_cheapest'], 2)} ms): the ceilings of section 10.")
    return Table("9b. Serving runtime: where a served photo's CPU goes", ["CPU per photo", "ms"], rows, note)


def runtime_tables(r: dict) -> list[Table]:
    rt = r["runtime"]
    rows = []
    modes = [m for m in ("batched", "unbatched", "batched_one_run", "two_processes") if m in rt]
    for mode in modes:
        for x in rt[mode]["levels"]:
            errors = sum(x["errors"].values())
            raw = x.get("raw_images_per_s_at_mean_batch")
            cpu_ms = x["server_cpu_cores"] * 1000 / x["images_per_s"] if x["images_per_s"] else 0.0
            rows.append([mode, str(x["clients"]), str(x["ok"]), str(errors), _f(x["images_per_s"]),
                         _f(x["latency"]["median_ms"]), _f(x["latency"]["p99_ms"]), _f(x["mean_batch"], 2),
                         _f(cpu_ms, 1), _f(raw) if raw else "", _f(x["images_per_s"] / raw, 2) if raw else ""])
    s = rt["settings"]
    note = (f"batched: SIGHTLINE_MAX_BATCH={s['max_batch']}, MAX_DELAY_MS={s['max_delay_ms']:g}, "
            f"MAX_QUEUE={s['max_queue']}, {s.get('instances', 1)} run(s) of the model side by side on "
            f"{s.get('intra_op', 'all')} ONNX Runtime thread(s) each; unbatched: MAX_BATCH=1; "
            + ("batched_one_run: INFERENCE_INSTANCES=1 (one run at a time, on all cores); "
               if "batched_one_run" in modes else "")
            + ("two_processes: WORKERS=2 (two server processes behind one port, each planning for half the cores; "
               "server CPU of both); " if "two_processes" in modes else "")
            + "all with a fixed concurrency limit "
            f"(LATENCY_TOLERANCE=0, MAX_IN_FLIGHT={s.get('max_in_flight', 24)}). Closed-loop clients, each on one kept-alive "
            f"connection (bench/rawhttp.py). {rt['seconds']:g} s per level after {rt['warmup_s']:g} s warm-up, "
            + (f"in {rt['rounds']} turns each: the {len(modes)} servers ran at once and took turns in a rotating "
               "order, so that the host's drift fell on all alike; " if rt.get("rounds", 1) > 1 else "")
            + "mean batch from /metrics; raw = the detector alone in this process at that batch size, the faster of "
            f"the server's runs side by side and one run on all cores ({_raw_ways(rt)})"
            + (f"; at {rt['raw_turns_clients']} clients raw took a turn after each round, at the batch the batched "
               f"server formed in it ({_raw_turns(rt)})" if rt.get("raw_turns") else "")
            + ". Same machine, one run.")
    out = [Table("9. Serving runtime: dynamic batching against batching off and raw ONNX Runtime (`POST /detect`)",
                 ["server", "clients", "ok", "errors", "images/s", "p50 ms", "p99 ms", "mean batch",
                  "server CPU ms/image", "raw ORT images/s at that batch", "server / raw"], rows, note)]
    ratios = r["runtime_ratios"]
    ceiling = ratios.get("ceiling")
    if ceiling:
        out.append(cpu_table(rt, ratios["clients"], ceiling))
    rows = [[f"batched / raw ONNX Runtime at {ratios['clients']} clients", _f(ratios["batched_over_raw"], 3), "0.8"]]
    if ceiling:
        rows += [["ceiling on these cores, batched / raw: the least CPU per photo (9b, model to HTTP floor)",
                  _f(ceiling["over_raw"], 3), "0.8"],
                 ["the same, the vision work alone (HTTP and the clients free)",
                  _f(ceiling["over_raw_vision_only"], 3), "0.8"]]
    rows.append([f"batched / unbatched at {ratios['clients']} clients", _f(ratios["batched_over_unbatched"], 3), "1.5"])
    if ceiling:
        rows += [["ceiling on these cores, batched / unbatched: 9b's least CPU per photo, the model at its "
                  "cheapest batch", _f(ceiling["over_unbatched"], 3), "1.5"],
                 ["the same, the vision work alone (HTTP and the clients free)",
                  _f(ceiling["over_unbatched_vision_only"], 3), "1.5"]]
    if "batched_over_one_run" in ratios:
        rows.append([f"batched, runs side by side / one run at a time, at {ratios['clients']} clients",
                     _f(ratios["batched_over_one_run"], 3), ""])
    if "two_processes_over_one" in ratios:
        rows.append([f"batched, two server processes / one, at {ratios['clients']} clients",
                     _f(ratios["two_processes_over_one"], 3), ""])
    fixed = f"fixed limit {s.get('max_in_flight', 24)}"
    adaptive = f"adaptive limit, tolerance {s.get('latency_tolerance', 2.0):g}"
    strict_env = rt.get("strict_settings", {})
    strict = f"adaptive limit, tolerance {strict_env.get('SIGHTLINE_LATENCY_TOLERANCE', '?')}, " + ", ".join(
        f"{k}={v}" for k, v in strict_env.items() if k != "SIGHTLINE_LATENCY_TOLERANCE")
    for key, how in (("overload", fixed), ("overload_adaptive", adaptive), ("overload_strict", strict)):
        o = rt["batched"].get(key)
        if not o:
            continue
        unloaded = o.get("unloaded_latency", rt["batched"]["levels"][0]["latency"])["p99_ms"]
        adm, ref = o["admitted_latency"], o["refused_latency"]
        rows.append([f"overload {o['rate_per_s']:.0f}/s for {o['seconds']:g} s, {how}: admitted p99 / unloaded "
                     f"p99 ({_f(adm.get('p99_ms', 0.0))} / {_f(unloaded)} ms; {o['ok']} of {o['sent']} admitted)",
                     _f(adm.get("p99_ms", 0.0) / unloaded, 2), "<= 2"])
        rows.append([f"overload, {how}: p99 ms to refuse ({o['refused']} refused with 503, {o['other']} other)",
                     _f(ref.get("p99_ms", 0.0), 1) if ref.get("n") else "none refused", "<= 10"])
    for key, how in (("mixed", fixed), ("mixed_adaptive", adaptive), ("mixed_strict", strict)):
        m = rt["batched"].get(key)
        if not m:
            continue
        rows.append([f"light mixed load ({m['rate_per_s']:.0f}/s 640x480 and {m['phone_rate_per_s']:.1f}/s 12 MP phone "
                     f"photos for {m['seconds']:g} s), {how}: refused small / phone photos",
                     f"{m['small']['refused']} of {m['small']['sent']} / {m['phones']['refused']} of "
                     f"{m['phones']['sent']}", "none"])
    k = rt["batched"].get("soak")
    if k:
        rows.append([f"soak {k['seconds']:g} s at {k['clients']} clients: RSS MB start / after 1 min / end / max",
                     f"{k['rss_mb_start']:.0f} / {k['rss_mb_after_first_minute']:.0f} / {k['rss_mb_end']:.0f} / "
                     f"{k['rss_mb_max']:.0f}", "flat"])
        if "rss_peak_mb_per_min" in k:
            rows.append(["soak: RSS peak of each tenth of it, MB",
                         " / ".join(f"{mb:.0f}" for _, mb in k["rss_mb_window_peaks"]), "flat"])
            rows.append(["soak: growth of those peaks after the first tenth, MB per minute",
                         _f(k["rss_peak_mb_per_min"], 2), "~0"])
        else:
            rows.append(["soak: RSS growth over the second half, MB per minute",
                         _f(k["rss_mb_per_min_second_half"], 2), "~0"])
    out.append(Table("10. Serving runtime: targets", ["figure", "value", "target"], rows,
                     "overload: open-loop arrivals on POST /detect, each on a fresh connection, at the rate given (a "
                     "multiple of the batched server's images/s at 16 clients); unloaded p99: one client alone on "
                     "the same server just before"
                     + ("; light mixed load: open-loop arrivals of 640x480 photos at a share of the same images/s, "
                        "and of phone photos (4032x3024 JPEGs), each about three times as long to serve alone, beside "
                        "them; the adaptive server fresh, after one client alone for a few seconds"
                        if rt["batched"].get("mixed") else "")))
    return out


def tables(r: dict) -> list[Table]:
    gallery = [gallery_table(r)] if "gallery" in r else []  # results recorded before section 6 existed
    faces = [faces_table(r)] if r.get("http", {}).get("faces") else []
    segment = [segment_table(r)] if r.get("http", {}).get("segment") else []
    runtime = runtime_tables(r) if r.get("runtime") else []
    large = [large_photo_table(r)] if "large_photo" in r else []
    return [raw_table(r), *([detectors_table(r)] if r.get("detectors") else []), pipeline_table(r), *large, http_table(r), ratio_table(r), nms_table(r), *gallery, *faces, *segment,
            *runtime]


def markdown_table(t: Table) -> str:
    return "\n".join(_md_table(t)) + "\n"


def _text_table(t: Table) -> list[str]:
    widths = [max(len(row[i]) for row in [t.headers, *t.rows]) for i in range(len(t.headers))]
    lines = [t.title]
    for row in [t.headers, *t.rows]:
        lines.append("  " + "  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    return lines + ([f"  {t.note}"] if t.note else [])


def _md_table(t: Table) -> list[str]:
    lines = [f"### {t.title}", "", "| " + " | ".join(t.headers) + " |", "|---|" + "---:|" * (len(t.headers) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in t.rows]
    return lines + (["", t.note] if t.note else [])


def format_text(r: dict) -> str:
    blocks = [header_lines(r)] + [_text_table(t) for t in tables(r)]
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"


def format_markdown(r: dict) -> str:
    head = ["## Benchmark (`make bench`)", "", *[f"- {line}" for line in header_lines(r)]]
    blocks = [head] + [_md_table(t) for t in tables(r)]
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"
