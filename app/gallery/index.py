"""Exact nearest-neighbour search over unit-length face embeddings, keyed by face id (FAISS).

``IndexIDMap2(IndexFlatIP(dim))``: on unit vectors the inner product is the cosine similarity, and
an exact flat index answers a 100k-face gallery in milliseconds (see ``bench/gallery_search.py`` for
HNSW against exact). The index lives in memory only and is rebuilt from SQLite at start-up.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import faiss
import numpy as np


@dataclass(frozen=True)
class Hits:
    """Per query, the ``k`` best faces, best first: ``similarities (Q, k) float32``, ``ids (Q, k) int64``.
    ``k = min(requested, total)``; ``total`` is the number of faces searched."""

    similarities: np.ndarray
    ids: np.ndarray
    total: int

    @property
    def exhaustive(self) -> bool:
        """True when every indexed face is in the answer (asking for more would add nothing)."""
        return self.ids.shape[1] >= self.total


class FaceIndex:
    """Thread-safe (one lock around every FAISS call) flat inner-product index with int64 ids."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"embedding dimension must be positive, got {dim}")
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Add ``(n,) int64`` ids with their ``(n, dim)`` unit-length float32 vectors."""
        ids = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if ids.shape[0] != vectors.shape[0]:
            raise ValueError(f"{ids.shape[0]} ids for {vectors.shape[0]} vectors")
        with self._lock:
            self._index.add_with_ids(vectors, ids)

    def remove(self, ids: Sequence[int]) -> int:
        """Remove these ids (absent ones are ignored); how many were removed."""
        if not len(ids):
            return 0
        with self._lock:
            return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def search(self, queries: np.ndarray, k: int) -> Hits:
        """The ``min(k, total)`` most similar faces to each of the ``(Q, dim)`` unit-length queries."""
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with self._lock:
            total = int(self._index.ntotal)
            k = min(k, total)
            if k == 0 or queries.shape[0] == 0:
                return Hits(np.empty((queries.shape[0], 0), np.float32), np.empty((queries.shape[0], 0), np.int64),
                            total)
            similarities, ids = self._index.search(queries, k)
        return Hits(similarities, ids, total)
