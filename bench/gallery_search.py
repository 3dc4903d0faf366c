"""Face-gallery search: exact ``IndexFlatIP`` (what the gallery serves) against ``IndexHNSWFlat`` on
synthetic 128-d unit embeddings in identity clusters; latency, build time, index bytes and HNSW's
recall against exact. ``python -m bench.gallery_search [--quick]`` runs this section alone."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import faiss
import numpy as np

from bench.stats import summarize_ms, time_calls

DIM = 128
FACES_PER_IDENTITY = 10
SPREAD = 0.6  # within-identity noise: two faces of one identity have cosine ~1 / (1 + SPREAD^2) = 0.74
QUERY_NOISE = 0.3  # a query is a gallery face + noise: cosine ~0.96 with it, ~0.70 with its siblings
HNSW_M, EF_CONSTRUCTION, EF_SEARCH = 32, 40, 64
BATCH = 32
RECALL_QUERIES, RECALL_K = 1000, 10
DEFAULT_RUNS = ((10_000, 200, 50), (1_000_000, 100, 20))  # (faces, 1-query calls, batch calls)
QUICK_RUNS = ((10_000, 50, 10), (100_000, 20, 5))


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered_embeddings(rng: np.random.Generator, n: int, chunk: int = 100_000) -> np.ndarray:
    """``(n, DIM)`` float32 unit vectors: ``n / FACES_PER_IDENTITY`` random identity directions, each
    face its identity's direction plus isotropic noise of norm ~``SPREAD``, so that faces of one
    identity are mutual near neighbours and the nearest neighbour is meaningful."""
    centres = _unit(rng.standard_normal((max(1, n // FACES_PER_IDENTITY), DIM), dtype=np.float32))
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        noise = rng.standard_normal((stop - start, DIM), dtype=np.float32) * (SPREAD / np.sqrt(DIM))
        out[start:stop] = _unit(centres[np.arange(start, stop) % len(centres)] + noise)
    return out


def perturbed_queries(rng: np.random.Generator, gallery: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` queries, each a random gallery face plus noise of norm ~``QUERY_NOISE``; and their sources."""
    source = rng.choice(len(gallery), n, replace=False)
    noise = rng.standard_normal((n, DIM), dtype=np.float32) * (QUERY_NOISE / np.sqrt(DIM))
    return _unit(gallery[source] + noise), source


def exact_index(x: np.ndarray) -> faiss.Index:
    index = faiss.IndexFlatIP(DIM)
    index.add(x)
    return index


def hnsw_index(x: np.ndarray) -> faiss.Index:
    index = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = EF_CONSTRUCTION
    index.add(x)
    index.hnsw.efSearch = EF_SEARCH
    return index


def _latency(index: faiss.Index, queries: np.ndarray, batch: int, calls: int, warmup: int) -> dict:
    """Median etc. ms per ``index.search`` of ``batch`` queries, cycling through ``queries``."""
    starts = itertools.cycle(range(0, len(queries) - batch + 1, batch))

    def search_next() -> None:
        start = next(starts)
        index.search(queries[start:start + batch], RECALL_K)

    t = summarize_ms(time_calls(search_next, calls, warmup))
    return {**t, "batch": batch, "queries_per_s": batch * 1000.0 / t["median_ms"]}


def _measure(name: str, build, x: np.ndarray, queries: np.ndarray, calls: tuple[int, int]) -> tuple[dict, np.ndarray]:
    t0 = time.perf_counter()
    index = build(x)
    build_s = time.perf_counter() - t0
    _, ids = index.search(queries, RECALL_K)
    out = {"index": name, "build_s": build_s, "bytes": int(faiss.serialize_index(index).nbytes),
           "single": _latency(index, queries, 1, calls[0], min(10, calls[0])),
           "batch": _latency(index, queries, BATCH, calls[1], min(3, calls[1]))}
    del index
    return out, ids


def bench_gallery_size(n: int, single_calls: int, batch_calls: int, seed: int) -> dict:
    """Exact and HNSW on the same ``n`` faces and the same queries; HNSW's recall against exact."""
    rng = np.random.default_rng([seed, n])
    x = clustered_embeddings(rng, n)
    queries, source = perturbed_queries(rng, x, min(RECALL_QUERIES, n))
    exact, exact_ids = _measure("exact IndexFlatIP", exact_index, x, queries, (single_calls, batch_calls))
    hnsw, hnsw_ids = _measure(f"HNSW M={HNSW_M} efC={EF_CONSTRUCTION} efS={EF_SEARCH}", hnsw_index, x, queries,
                              (single_calls, batch_calls))
    hnsw["recall_at_1"] = float(np.mean(hnsw_ids[:, 0] == exact_ids[:, 0]))
    hnsw["recall_at_10"] = float(np.mean([len(set(a) & set(b)) / RECALL_K for a, b in zip(hnsw_ids, exact_ids)]))
    return {"faces": n, "queries": len(queries), "exact_top1_is_source": float(np.mean(exact_ids[:, 0] == source)),
            "indexes": [exact, hnsw],
            "hnsw_speedup_single": exact["single"]["median_ms"] / hnsw["single"]["median_ms"],
            "hnsw_speedup_batch": exact["batch"]["median_ms"] / hnsw["batch"]["median_ms"]}


def bench_gallery_search(runs: tuple[tuple[int, int, int], ...], seed: int) -> dict:
    """Every ``(faces, 1-query calls, batch calls)`` run, with the parameters that produced it."""
    t0 = time.perf_counter()
    sizes = [bench_gallery_size(n, single, batch, seed) for n, single, batch in runs]
    return {"dim": DIM, "faces_per_identity": FACES_PER_IDENTITY, "spread": SPREAD, "query_noise": QUERY_NOISE,
            "hnsw": {"M": HNSW_M, "efConstruction": EF_CONSTRUCTION, "efSearch": EF_SEARCH}, "batch": BATCH,
            "k": RECALL_K, "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
            "sizes": sizes, "elapsed_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    from bench.report import gallery_table, markdown_table

    ap = argparse.ArgumentParser(prog="python -m bench.gallery_search", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="10k and 100k faces instead of 10k and 1M")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    r = {"gallery": bench_gallery_search(QUICK_RUNS if args.quick else DEFAULT_RUNS, args.seed)}
    print(markdown_table(gallery_table(r)))
    if args.json:
        args.json.write_text(json.dumps(r["gallery"], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
