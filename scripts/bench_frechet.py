"""Fréchet distance of 2,048-d (Inception-sized) features: ptsbench.tasks.frechet vs the naive
``scipy.linalg.sqrtm(S1 @ S2)`` of pytorch-fid, on the same statistics, in the same run.

    python scripts/bench_frechet.py [--dim 2048] [--generated 1000] [--reference 5000]

Generated sets smaller than the dimension (the usual PTS budget) take the n x n eigen-problem;
the result must agree with the naive one to 1e-6 relative.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ptsbench.tasks.frechet import feature_stats, frechet_distance  # noqa: E402


def naive(mu1, s1, mu2, s2) -> float:
    from scipy.linalg import sqrtm

    covmean = sqrtm(s1 @ s2)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(np.real(covmean)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--generated", type=int, default=1000)
    ap.add_argument("--reference", type=int, default=5000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(args.dim, args.dim)) / np.sqrt(args.dim)
    gen = rng.normal(size=(args.generated, args.dim)) @ mix + 0.1
    ref = rng.normal(size=(args.reference, args.dim)) @ mix
    mu_g, s_g = feature_stats(gen)
    mu_r, s_r = feature_stats(ref)
    t0 = time.perf_counter()
    ours = frechet_distance(mu_g, s_g, mu_r, s_r, centered1=gen - mu_g)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref_value = naive(mu_g, s_g, mu_r, s_r)
    t_naive = time.perf_counter() - t0
    print(f"dim {args.dim}, {args.generated} generated vs {args.reference} reference features")
    print(f"  ptsbench : {ours:.6f} in {t_ours:.2f}s")
    print(f"  scipy    : {ref_value:.6f} in {t_naive:.2f}s")
    print(f"  speed-up x{t_naive / t_ours:.1f}, relative difference {abs(ours - ref_value) / abs(ref_value):.1e}")


if __name__ == "__main__":
    main()
