"""Compressed-row arithmetic on plain ``(indptr, indices, data)`` arrays.

A controller step builds and slices dozens of small sparse matrices (10 to 80,000 entries);
at those sizes scipy's per-call work (index dtype and format checks, fancy-indexing dispatch,
format conversions) costs more than the arithmetic. The compiler and the LP builder therefore
gather, filter and concatenate rows here with a few numpy passes each, and make a scipy matrix
only where one is handed on. Every function keeps a canonical input canonical (indices sorted
within a row, no duplicates, no explicit zeros unless the input had them).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def entry_rows(indptr: np.ndarray) -> np.ndarray:
    """The row of every entry of a compressed matrix with row pointer ``indptr``."""
    return np.repeat(np.arange(indptr.size - 1), np.diff(indptr))


def pointer(counts: np.ndarray) -> np.ndarray:
    """Row pointer (int64) of rows holding ``counts`` entries each."""
    out = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


def take_rows(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(indptr, indices, data)`` of the rows ``rows`` (in that order, repeats allowed)."""
    start = indptr[rows]
    cnt = indptr[rows + 1] - start
    ptr = pointer(cnt)
    pos = np.arange(ptr[-1]) + np.repeat(start - ptr[:-1], cnt)
    return ptr, indices[pos], data[pos]


def keep_entries(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same rows with only the entries ``keep`` (bool per entry)."""
    n = indptr.size - 1
    ptr = pointer(np.bincount(entry_rows(indptr)[keep], minlength=n))
    return ptr, indices[keep], data[keep]


def hstack_rows(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row-wise concatenation of matrices with the same rows: ``parts`` are ``(indptr, indices,
    data, column offset)``, their columns in disjoint ranges ascending with the parts (so sorted
    rows stay sorted)."""
    counts = np.stack([np.diff(p[0]) for p in parts])  # (parts, rows)
    ptr = pointer(counts.sum(axis=0))
    before = np.cumsum(counts, axis=0) - counts  # entries of earlier parts in the row
    dest = [
        np.arange(p[0][-1]) + np.repeat(ptr[:-1] + before[k] - p[0][:-1], counts[k])
        for k, p in enumerate(parts)
    ]
    nnz = int(ptr[-1])
    idx = np.empty(nnz, dtype=np.int64)
    val = np.empty(nnz, dtype=np.result_type(*(p[2] for p in parts)))
    for d, p in zip(dest, parts, strict=True):
        idx[d] = p[1] + p[3]
        val[d] = p[2]
    return ptr, idx, val


def csr(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """A scipy CSR matrix of canonical arrays (marked canonical: scipy need not check)."""
    m = sp.csr_matrix((data, indices, indptr), shape=shape)
    m.has_sorted_indices = True
    return m
