"""``hrvlm bench train``: every registered method fine-tuned in the mini world under one budget, printed.

For each method registered when it runs (:data:`hrvlm.methods.METHODS`) that the profile has settings
for, the same training budget (the profile's ``train`` steps and batch size, whatever a method's own
``loop`` entry says), then, next to the un-fine-tuned model:

* wall time of the fine-tuning (from the run record; the issue's target is ≤ 3 min on 2 cores, mini);
* clean and robust accuracy (PGD-10 at the profile's ε unit, the mini ε) on the fine-tuning set's test
  split at every level of its class tree (levels with ≥ 2 classes), on each method's own head;
* the zero-shot average (clean and robust) over the other evaluation sets;
* the clean-accuracy cost: clean accuracy minus the un-fine-tuned model's, on both.

Runs (``<out>/<method>``) and evaluation records (``<out>/records.jsonl``) are resumable: re-running
reuses what is done.  Numbers are mini-world replicas, never the paper's.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REFERENCE = "pretrained"


def tree_levels(dataset: str, depth: int = 5) -> list[int]:
    """Levels of the dataset's first tree that have at least two classes (the root cannot be attacked)."""
    from hrvlm.data.registry import get_spec
    from hrvlm.hierarchy.trees import forest_for_dataset

    spec = get_spec(dataset)
    if spec.hierarchy is None:
        return [0]
    tree = forest_for_dataset(spec.hierarchy, depth=depth).trees[0]
    return [level for level in range(tree.depth + 1) if len(tree.names[level]) >= 2]


def scores(model, tokenizer, profile, attack, n: int | None, store: Path, method: str) -> dict:
    """Clean/robust accuracy per level on the fine-tuning set, and per zero-shot set at level 0."""
    from hrvlm.evaluation.evaluate import EvalRequest, evaluate

    out = {"levels": {}, "zeroshot": {}}
    settings = {"method": method, "dataset_options": profile.dataset_options, "batch_size": 250}
    train_set = EvalRequest(profile.train_dataset, [attack], tree_levels(profile.train_dataset), n, **settings)
    for record in evaluate(model, tokenizer, train_set, store=store, progress=False):
        out["levels"][record["level"]] = (record["clean_acc"], record["robust_acc"])
    for name in profile.zeroshot_datasets:
        record, = evaluate(model, tokenizer, EvalRequest(name, [attack], (0,), n, **settings), store=store,
                           progress=False)
        out["zeroshot"][name] = (record["clean_acc"], record["robust_acc"])
    clean, robust = zip(*out["zeroshot"].values()) if out["zeroshot"] else ((np.nan,), (np.nan,))
    out["zeroshot_average"] = (float(np.mean(clean)), float(np.mean(robust)))
    return out


def main(argv=None) -> int:
    from hrvlm.attacks import build_attack
    from hrvlm.methods import METHODS
    from hrvlm.models.clip import load_clip
    from hrvlm.profiles import get_profile, profile_names
    from hrvlm.models.runs import read_record
    from hrvlm.core.storage import cache_dir
    from hrvlm.training.train import config_from_profile, train

    parser = argparse.ArgumentParser(prog="hrvlm bench train", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini", choices=profile_names())
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: every registered one)")
    parser.add_argument("--steps", type=int, default=None, help="override the profile's training steps (all methods)")
    parser.add_argument("--n", type=int, default=None, help="images per evaluation set (default: the profile's eval_n)")
    parser.add_argument("--out", default=None, help="folder of runs and records (default <cache>/bench-train/<profile>)")
    args = parser.parse_args(argv)

    prof = get_profile(args.profile)
    names = args.methods.split(",") if args.methods else sorted(METHODS)
    unknown = [m for m in names if m not in METHODS]
    if unknown:
        raise SystemExit(f"hrvlm bench train: unknown method(s) {unknown}; registered: {sorted(METHODS)}")
    out = Path(args.out) if args.out else cache_dir("bench-train", args.profile)
    store = out / "records.jsonl"
    n = args.n if args.n is not None else prof.eval_n
    budget = {"steps": args.steps or prof.train["steps"], "batch_size": prof.train["batch_size"]}
    attack = build_attack("pgd", prof.eps(1), steps=10)
    print(f"hrvlm bench train — profile {prof.name} (mini-world replicas), budget {budget['steps']} steps × "
          f"batch {budget['batch_size']}, robust = PGD-10 at ε = {prof.eps_unit * 255:g}/255, {n} images per set")

    reference, _, tokenizer = load_clip(prof.model, pretrained=prof.pretrained)
    rows = {REFERENCE: {"wall_s": 0.0, **scores(reference, tokenizer, prof, attack, n, store, "clip")}}
    for name in names:
        if name not in (prof.methods or {}):
            print(f"  {name}: skipped, profile {prof.name!r} has no settings for it")
            continue
        run = train(config_from_profile(name, prof.name, **budget), out / name, progress=False)
        record = read_record(run)
        model, _, _ = load_clip(record["model"], pretrained=str(run))
        rows[name] = {"wall_s": record["train_time_s"], **scores(model, tokenizer, prof, attack, n, store, name)}

    levels = sorted(rows[REFERENCE]["levels"])
    ref_clean, ref_zs = rows[REFERENCE]["levels"][0][0], rows[REFERENCE]["zeroshot_average"][0]
    print(f"\n{'method':<12}{'train s':>9}{'ft clean':>10}{'ft robust':>10}{'zs clean':>10}{'zs robust':>10}"
          f"{'Δclean ft':>11}{'Δclean zs':>11}")
    for name, row in rows.items():
        (clean, robust), (zs_clean, zs_robust) = row["levels"][0], row["zeroshot_average"]
        print(f"{name:<12}{row['wall_s']:>9.1f}{100 * clean:>9.1f}%{100 * robust:>9.1f}%{100 * zs_clean:>9.1f}%"
              f"{100 * zs_robust:>9.1f}%{100 * (clean - ref_clean):>+10.1f}%{100 * (zs_clean - ref_zs):>+10.1f}%")
    print(f"\n{prof.train_dataset} per tree level, clean / robust (%)")
    print(f"{'method':<12}" + "".join(f"{'L' + str(level):>14}" for level in levels))
    for name, row in rows.items():
        print(f"{name:<12}" + "".join(f"{100 * row['levels'][lv][0]:>7.1f}/{100 * row['levels'][lv][1]:<5.1f}"
                                      for lv in levels))
    print(f"\nruns and records: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
