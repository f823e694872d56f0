"""``hrvlm hierarchy``: show, export, draw and check class trees, and WordNet coverage per dataset."""
from __future__ import annotations

import argparse
from pathlib import Path

from hrvlm.hierarchy.draw import draw_forest, require_plotting
from hrvlm.hierarchy.trees import (REAL_DATASETS, Forest, coverage_table, dataset_leaves, forest_for_dataset,
                                   load_tree_file)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="print a dataset's forest level by level")
    show.add_argument("dataset")
    show.add_argument("--level", type=int, default=None, help="print only this level")
    show.add_argument("--tree", type=int, default=None, help="print only this tree (index)")
    cov = sub.add_parser("coverage", help="WordNet coverage and depth statistics of the datasets")
    cov.add_argument("datasets", nargs="*", help=f"default: {' '.join(REAL_DATASETS)}")
    export = sub.add_parser("export", help="write a dataset's built forest as JSON")
    export.add_argument("dataset")
    export.add_argument("--out", required=True)
    draw = sub.add_parser("draw", help="draw a dataset's forest to an image file")
    draw.add_argument("dataset")
    draw.add_argument("--out", required=True)
    draw.add_argument("--leaves", type=int, default=30, help="draw the first N leaves")
    check = sub.add_parser("check", help="validate a tree file (format hrvlm-tree/1)")
    check.add_argument("path")
    check.add_argument("--dataset", default=None, help="also check its leaves against this dataset's classes")
    for p in (show, cov, export, draw, check):
        p.add_argument("--depth", type=int, default=5)
        p.add_argument("--max-trees", type=int, default=5)


def _check_show(forest: Forest, tree: int | None, level: int | None) -> None:
    """``hierarchy show --tree/--level`` must name a tree and a level the forest has."""
    if tree is not None and not 0 <= tree < len(forest):
        raise ValueError(f"--tree {tree}: {forest.name} has {len(forest)} trees, give 0..{len(forest) - 1}")
    if level is not None and not 0 <= level <= forest.depth:
        raise ValueError(f"--level {level}: the trees of {forest.name} have levels 0..{forest.depth}")


def run(args: argparse.Namespace) -> int:
    from hrvlm.core.storage import atomic_write_bytes, atomic_write_json, check_writable_folder

    if args.action == "coverage":
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(coverage_table(args.datasets or None, args.depth, args.max_trees))
        return 0
    if args.action == "check":
        leaves = dataset_leaves(args.dataset)[1] if args.dataset else None
        tree = load_tree_file(args.path, args.depth, leaves)
        print(f"ok: {tree!r}")
        return 0
    if args.action in ("export", "draw") and Path(args.out).is_dir():
        raise IsADirectoryError(f"--out {args.out} is a folder; give a file name, e.g. {Path(args.out) / 'forest.json'}")
    if args.action in ("export", "draw"):  # a file on the way or a read-only folder: one line, before the forest
        check_writable_folder(Path(args.out).parent, "--out folder", "; give a file in a writable folder")
    if args.action == "draw" and args.leaves < 1:
        raise ValueError(f"--leaves {args.leaves}: draw at least one leaf")
    if args.action == "draw":
        require_plotting()
    forest = forest_for_dataset(args.dataset, args.depth, args.max_trees)
    if args.action == "show":
        _check_show(forest, args.tree, args.level)
    if args.action == "export":
        print(f"wrote {atomic_write_json(args.out, forest.to_json())}")
    elif args.action == "draw":
        fig = draw_forest(forest, list(range(min(args.leaves, len(forest.leaves)))))
        import io

        buf = io.BytesIO()  # rendered in memory, then written atomically like every other file
        fig.savefig(buf, dpi=120, format=Path(args.out).suffix.lstrip(".") or "png")
        atomic_write_bytes(args.out, buf.getvalue())
        print(f"wrote {args.out}")
    else:
        for t, tree in enumerate(forest):
            if args.tree is not None and t != args.tree:
                continue
            print(f"{tree!r}  provenance: {tree.provenance.get('source', '')}")
            for level in range(tree.depth + 1) if args.level is None else [args.level]:
                groups = [f"{tree.names[level][j]} ({int((tree.ancestor[level] == j).sum())})"
                          for j in range(len(tree.nodes[level]))]
                print(f"  level {level} [{len(groups)}]: " + ", ".join(groups[:40]) + (" ..." if len(groups) > 40 else ""))
    return 0
