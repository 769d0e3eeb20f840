"""Face search at scale: build and query time, memory and recall of ``FaceIndex`` on random unit embeddings.

    python benchmarks/benchmark_search.py                                  # 10k, 100k and 1M faces
    python benchmarks/benchmark_search.py --sizes 10000 --queries 200 --threads 2

Per gallery size: the exact FAISS index ("Flat"), an IVF index (``--ivf``, ``nprobe`` from ``--nprobe``) and the
exact numpy fallback (faiss absent), each built through ``FaceIndex.from_embeddings``. Reported: build seconds,
milliseconds per single query (batch of 1, the interactive case) and per query in a batch of ``--queries``,
resident memory added by the index (RSS), and recall@10 of IVF against the exact top 10. numpy is the baseline
for the ratios. Random unit vectors have no clusters, the hardest case for IVF, so recall on real face embeddings
is at least this.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def unit(rng, count, dim) -> np.ndarray:
    rows = rng.standard_normal((count, dim), dtype=np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows


def identity_faces(rng, count, queries, dim, per_identity=10, spread=0.9):
    """Unit embeddings grouped by identity, as a face-recognition model gives them: ``count / per_identity``
    random identity centers with exactly ``per_identity`` faces each, a face being its center plus isotropic noise
    of ``spread`` times its norm (cosine to its center about 0.74, between two faces of one identity about 0.55,
    across identities about 0 +- 0.045). Returns (gallery faces, query faces: new faces of random gallery
    identities, whose exact top 10 are then the 10 gallery faces of their identity)."""
    centers = unit(rng, max(1, count // per_identity), dim)

    def faces(identities):
        rows = centers[identities] + spread * unit(rng, len(identities), dim)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    gallery_identities = rng.permutation(np.repeat(np.arange(len(centers)), per_identity))[:count]
    return faces(gallery_identities), faces(rng.integers(0, len(centers), size=queries))


def time_queries(index, queries, k) -> tuple[float, float, np.ndarray]:
    """(ms per single query, ms per query in one batch, rows of the batch)."""
    singles = queries[:50]
    index.nearest(singles[:1], k)  # warm up
    start = time.perf_counter()
    for query in singles:
        index.nearest(query[None], k)
    single_ms = (time.perf_counter() - start) / len(singles) * 1000
    start = time.perf_counter()
    _, rows = index.nearest(queries, k)
    batch_ms = (time.perf_counter() - start) / len(queries) * 1000
    return single_ms, batch_ms, rows


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--ivf", default=None, help="index_factory of the IVF run; default IVF{4*sqrt(N)},Flat")
    parser.add_argument("--nprobe", type=int, nargs="+", default=None,
                        help="IVF lists searched, one row each (the index is trained once); default nlist/16")
    parser.add_argument("--backends", nargs="+", default=["numpy", "flat", "ivf"], choices=["numpy", "flat", "ivf"],
                        help="which indexes to measure; recall is against the first exact one, or exact numpy "
                             "top-k computed outside the timing when only ivf runs")
    parser.add_argument("--threads", type=int, default=None, help="FAISS / BLAS threads (default: all cores)")
    parser.add_argument("--distribution", nargs="+", default=["uniform", "identities"],
                        choices=["uniform", "identities"],
                        help="uniform random unit vectors (no structure: IVF's worst case), and/or faces of random "
                             "identities (10 per identity; queries are new faces of gallery identities)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()

    import datasets
    import faiss

    from faceptor_hf.search import FaceIndex

    datasets.disable_progress_bars()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    results = []
    print(f"cores: {os.cpu_count()}, faiss threads: {faiss.omp_get_max_threads()}, dim {args.dim}, k {args.k}")
    print(f"{'faces':>9s} {'distribution':12s} {'backend':32s} {'build s':>8s} {'ms/query':>9s} {'ms/q batch':>10s} "
          f"{'+RSS MB':>8s} {'recall@10':>9s}")
    for size, distribution in ((size, name) for size in args.sizes for name in args.distribution):
        if distribution == "uniform":
            gallery, queries = unit(rng, size, args.dim), unit(rng, args.queries, args.dim)
        else:
            gallery, queries = identity_faces(rng, size, args.queries, args.dim)
        nlist = int(4 * np.sqrt(size))
        nlist = 1 << int(np.round(np.log2(nlist)))
        factory = args.ivf or f"IVF{nlist},Flat"
        nprobes = args.nprobe or [max(1, nlist // 16)]
        exact_rows = None
        if args.backends == ["ivf"]:
            from faceptor_hf.search import exact_top_k

            exact_rows = exact_top_k(gallery, queries, args.k)[1]
        runs = {"numpy": ("numpy (exact)", {"backend": "numpy"}), "flat": ("faiss Flat (exact)", {"backend": "faiss"}),
                "ivf": (f"faiss {factory}", {"backend": "faiss", "index_factory": factory,
                                             "search_parameters": {"nprobe": nprobes[0]}})}
        for label, options in (runs[name] for name in args.backends):
            gc.collect()
            before = rss_mb()
            start = time.perf_counter()
            index = FaceIndex.from_embeddings(gallery, **options)
            if options["backend"] == "numpy":
                index.embedding_matrix()  # numpy reads the matrix out of the dataset once
            build = time.perf_counter() - start
            memory = rss_mb() - before
            for nprobe in nprobes if "index_factory" in options else [None]:
                if nprobe is not None:
                    index.set_search_parameters({"nprobe": nprobe})
                    label = f"faiss {factory} nprobe={nprobe}"
                single_ms, batch_ms, rows = time_queries(index, queries, args.k)
                if exact_rows is None:
                    exact_rows = rows
                found_recall = recall(rows, exact_rows)
                print(f"{size:9d} {distribution:12s} {label:32s} {build:8.2f} {single_ms:9.2f} {batch_ms:10.3f} "
                      f"{memory:8.0f} {found_recall:9.4f}", flush=True)
                results.append({"faces": size, "distribution": distribution, "backend": label,
                                "build_s": round(build, 3),
                                "ms_per_query": round(single_ms, 3), "ms_per_query_batched": round(batch_ms, 4),
                                "rss_mb": round(memory), "recall_at_10": round(found_recall, 4)})
            del index
        del gallery
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
