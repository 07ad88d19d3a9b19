"""Near-copy search: one matrix product of +-1 hash bits vs XOR and a popcount table, and what near costs.

At the shared data's sizes (3,600 held-out faces against 28,000 training faces), in one process:
- the Hamming search alone, every pair within `NEAR_HASH_BITS`: ours is
  `fer_model.split_overlap.hashes_within` (float32 +-1 hashes, one matrix product a chunk of
  queries); the baseline XORs packed uint8 hashes and sums a 256-entry popcount table, the way
  `experiments/real_faces/near_copies.py` first searched. Both must return the same pairs;
- `overlap_counts` of a whole dataset with near copies against exact copies only (the baseline):
  what `fer-mtl prepare --near-copies` adds, hashing and detail correlation included.
The faces are generated: each one of `--layouts` smooth coarse layouts (default: as many as training
faces) plus fine detail of its own, so the hash finds candidates as on real faces (at full size 1.5
a held-out face; 1.1 on the shared data) and the detail test turns nearly all of them down.

Run: python benchmarks/bench_near_copies.py [--quick] [--pool 28000] [--queries 3600]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
from _machine import Figure, Run

from fer_model.records import SPLIT_CODES
from fer_model.split_overlap import NEAR_HASH_BITS, hashes_within, overlap_counts, perceptual_hashes

_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_CHUNK = 512


def make_faces(n: int, *, layouts: int, seed: int) -> np.ndarray:
    """`n` 50x50 faces, each a random one of `layouts` smooth layouts plus fine detail of its own."""
    rng = np.random.default_rng(seed)
    bases = [cv2.resize(rng.uniform(0, 200, size=(5, 5)).astype(np.float32), (50, 50),
                        interpolation=cv2.INTER_CUBIC) for _ in range(layouts)]
    faces = np.empty((n, 50, 50), dtype=np.uint8)
    for i in range(n):
        fine = cv2.resize(rng.normal(0, 12, size=(25, 25)).astype(np.float32), (50, 50))
        faces[i] = np.clip(bases[rng.integers(layouts)] + fine - cv2.GaussianBlur(fine, (0, 0), 3), 0, 255)
    return faces


def popcount_pairs(queries: np.ndarray, pool: np.ndarray, bits: int) -> set[tuple[int, int]]:
    """The baseline: packed uint8 hashes, XOR, popcount table, chunk by chunk."""
    packed_q = np.packbits(queries > 0, axis=1)
    packed_p = np.packbits(pool > 0, axis=1)
    found: set[tuple[int, int]] = set()
    for start in range(0, len(packed_q), 128):
        apart = _POPCOUNT[np.bitwise_xor(packed_q[start:start + 128, None, :], packed_p[None])].sum(axis=2)
        found.update((start + int(q), int(p)) for q, p in zip(*np.nonzero(apart <= bits), strict=True))
    return found


def matmul_pairs(queries: np.ndarray, pool: np.ndarray, bits: int) -> set[tuple[int, int]]:
    found: set[tuple[int, int]] = set()
    for start in range(0, len(queries), _CHUNK):
        q, p = hashes_within(queries[start:start + _CHUNK], pool, bits)
        found.update((start + int(a), int(b)) for a, b in zip(q, p, strict=True))
    return found


def _seconds(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5,000 training faces, 700 held out")
    parser.add_argument("--pool", type=int, default=28000, help="training faces (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=3600, help="held-out faces (default: %(default)s)")
    parser.add_argument("--layouts", type=int, default=None, help="coarse layouts (default: one a training face)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.pool, args.queries = 5000, 700

    args.layouts = args.layouts or args.pool
    run = Run("near_copies_quick" if args.quick else "near_copies", vars(args))
    faces = make_faces(args.pool + args.queries, layouts=args.layouts, seed=args.seed)
    hashes = perceptual_hashes(faces)
    pool, queries = hashes[:args.pool], hashes[args.pool:]
    base_s, base = _seconds(popcount_pairs, queries, pool, NEAR_HASH_BITS)
    ours_s, ours = _seconds(matmul_pairs, queries, pool, NEAR_HASH_BITS)
    if ours != base:
        raise SystemExit(f"the two searches found different pairs: {len(ours)} against {len(base)}")
    print(f"{args.queries} x {args.pool} hashes: {len(ours)} pairs within {NEAR_HASH_BITS} bits, both ways")
    run.add(Figure(f"Hamming search {args.queries:,} x {args.pool:,} hashes", ours_s, "s",
                   baseline="XOR + popcount table", baseline_value=base_s, higher_is_better=False))

    split = np.full(len(faces), SPLIT_CODES["train"], dtype=np.uint8)
    split[args.pool:] = SPLIT_CODES["validation"]
    split[args.pool + args.queries // 2:] = SPLIT_CODES["test"]
    exact_s, _ = _seconds(overlap_counts, faces, split, near=False)
    near_s, counts = _seconds(overlap_counts, faces, split, near=True)
    print(f"overlap_counts: {counts}")
    run.add(Figure(f"overlap_counts near too, {len(faces):,} faces", near_s, "s",
                   baseline="exact copies only", baseline_value=exact_s, higher_is_better=False))
    run.write()


if __name__ == "__main__":
    main()
