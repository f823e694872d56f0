"""Build time of the forests of the 16 real datasets and the mini world, after WordNet is loaded.

Target (issue 4): at most 30 s for all of them.  Run: ``hrvlm bench hierarchy``.
"""
from __future__ import annotations

import argparse
import time

from hrvlm.hierarchy import trees as hierarchy
from hrvlm.hierarchy.wordnet import get_wordnet

MINI = ("mini-pretrain", "mini-colours")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="hrvlm bench hierarchy", description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--max-trees", type=int, default=5)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    get_wordnet().ensure_loaded()
    print(f"WordNet load: {time.perf_counter() - start:.2f} s")
    start = time.perf_counter()
    for name in hierarchy.REAL_DATASETS + MINI:
        t0 = time.perf_counter()
        forest = hierarchy.forest_for_dataset(name, args.depth, args.max_trees)
        print(f"  {name:15s} {len(forest.leaves):5d} leaves  {len(forest)} trees  {time.perf_counter() - t0:6.3f} s")
    total = time.perf_counter() - start
    print(f"all {len(hierarchy.REAL_DATASETS) + len(MINI)} forests: {total:.2f} s (target <= 30 s)")
    return 0 if total <= 30 else 1
