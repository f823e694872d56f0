"""``hrvlm data``: list the registered datasets, or download a real one (the only download path).

    hrvlm data list [--profile mini|full] [--root DIR]
    hrvlm data fetch NAME [--root DIR] [--split SPLIT]
    hrvlm data fabricate --root DIR [--per-class K] [--dataset NAME]   (test data: hrvlm.data.fabricate)
"""
from __future__ import annotations

import argparse

from hrvlm.data import fabricate, marker
from hrvlm.data.real import REAL, data_root, fetch
from hrvlm.data.registry import get_spec, list_datasets

# `data list --profile` keeps its two values; a dataset's world is "mini" or "real" (DatasetSpec.world)
LIST_WORLDS = {"mini": "mini", "full": "real"}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="registered datasets, whether real ones are present, and how a download "
                                     "is verified")
    ls.add_argument("--profile", choices=sorted(LIST_WORLDS), default=None,
                    help="only the mini world's datasets (mini) or the real ones (full)")
    ls.add_argument("--root", default=None, help="data root (default $HRVLM_DATA or ~/.cache/hrvlm/datasets)")
    get = sub.add_parser("fetch", help="download a real dataset (md5-checked; archives extract only inside the root)")
    get.add_argument("name", help=f"one of {sorted(REAL)}")
    get.add_argument("--root", default=None, help="data root (default $HRVLM_DATA or ~/.cache/hrvlm/datasets)")
    get.add_argument("--split", action="append", default=None, help="only this split (repeatable); default all")
    fabricate.configure_parser(sub.add_parser(
        "fabricate", help="write every real dataset's file formats and class lists with generated images (test data)"))


def status(name: str, root=None) -> str:
    """``present``/``present (fabricated)``/``missing (splits)`` for a real dataset, ``bundled (package)``
    for one an installed package ships, ``generated`` for the mini world."""
    bundled = get_spec(name).bundled
    if bundled:
        return f"bundled ({bundled})"
    if name not in REAL:
        return "generated"
    info, root = REAL[name], data_root(root)
    missing = [s for s in info.splits if info.missing(root, s)]
    if missing:
        return f"missing {','.join(missing)}"
    return "present (fabricated)" if marker.is_fabricated(root) else "present"


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        print(f"data root: {data_root(args.root)}")
        for name in list_datasets(LIST_WORLDS.get(args.profile)):
            spec = get_spec(name)
            verified = f"[{REAL[name].checksum}] " if name in REAL else ""
            print(f"{name:14s} {spec.world:4s} {','.join(spec.splits):24s} {status(name, args.root):32s} "
                  f"{verified}{spec.description}")
        return 0
    if args.action == "fabricate":
        root = fabricate.fabricate(args.root, per_class=args.per_class, names=args.dataset)
        print(f"fabricated test data (not the real datasets) under {root}: {', '.join(marker.read_marker(root)['datasets'])}")
        return 0
    if args.name not in REAL:
        bundled = args.name in list_datasets() and get_spec(args.name).bundled
        hint = (f" ({args.name} ships with {bundled}: nothing to fetch)" if bundled else
                " (mini-world datasets are generated, not fetched)" if args.name.startswith("mini-") else "")
        raise KeyError(f"unknown real dataset {args.name!r}{hint}; known: {sorted(REAL)}")
    root = fetch(args.name, args.root, splits=args.split)
    print(f"{args.name}: present under {root}")
    return 0
