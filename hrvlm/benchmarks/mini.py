"""``hrvlm bench mini``: the mini world's targets, printed.

* pretraining cost of the tiny CLIP (from its record: wall time, CPU time, steps/s; a fresh run if the
  cache has none) against the 5-minute target;
* clean zero-shot top-1 per mini dataset and the zero-shot average (targets ≥ 80 % on the
  fine-tuning set's style, ≥ 50 % on average);
* the ε calibration: robust top-1 under PGD-10 (:mod:`hrvlm.attacks`, through :func:`hrvlm.evaluate.evaluate`)
  for ε ∈ {1, 2, 3, 4, 6, 8}/255, and the smallest ε that takes the average to ≤ 20 % (the mini world's
  analogue of 1/255 for CLIP ViT-B/32, recorded as ``eps_unit`` in ``resources/profiles.json``).
"""
from __future__ import annotations

import argparse

import numpy as np

EPS_GRID = (1, 2, 3, 4, 6, 8)      # in 1/255
TARGET_ROBUST = 0.20               # CLIP ViT-B/32 falls to 7.2 % at 1/255 (PGD-20); we ask ≤ 20 %


def calibration(model, tokenizer, datasets, eps_grid=EPS_GRID, n: int | None = None, dataset_options=None,
                steps: int = 10, progress: bool = False) -> dict[int, dict[str, float]]:
    """``{k: {dataset: robust top-1 under PGD-steps at k/255, ..., "average": ...}}``."""
    from ..attacks import build_attack
    from ..evaluate import evaluate

    table = {}
    for k in eps_grid:
        attack = build_attack("pgd", eps=k / 255, steps=steps)
        row = {name: evaluate(model, tokenizer, name, attacks=[attack], n=n, dataset_options=dataset_options,
                              batch_size=250, progress=progress)[0]["robust_acc"] for name in datasets}
        row["average"] = float(np.mean(list(row.values())))
        table[k] = row
    return table


def choose_eps(table: dict[int, dict[str, float]], target: float = TARGET_ROBUST) -> int | None:
    """The smallest k (in 1/255) whose average robust accuracy is ≤ ``target``; None if none is."""
    return next((k for k in sorted(table) if table[k]["average"] <= target), None)


def main(argv=None) -> int:
    from ..models import load_clip
    from ..pretrain import PretrainConfig, ensure_pretrained, load_record
    from ..profiles import get_profile

    parser = argparse.ArgumentParser(prog="hrvlm bench mini", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mini", choices=["smoke", "mini"])
    parser.add_argument("--n", type=int, default=None, help="images per dataset for the ε sweep "
                        "(default: the profile's eval_n)")
    parser.add_argument("--eps", default=",".join(map(str, EPS_GRID)), help="ε grid in 1/255, comma-separated")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    prof = get_profile(args.profile)
    config = PretrainConfig.profile(args.profile, model=prof.model)
    ensure_pretrained(prof.model, args.profile)
    record = load_record(config)
    minutes = record["wall_time_s"] / 60
    print(f"pretraining {prof.model} ({args.profile}, {config.steps} steps × batch {config.batch_size}, "
          f"{config.corpus_size} pairs, {record['torch_threads']} threads)")
    print(f"  wall time {record['wall_time_s']:.0f} s ({minutes:.2f} min; target ≤ 5 min: "
          f"{'met' if minutes <= 5 else 'NOT met'}), CPU time {record.get('cpu_time_s', float('nan')):.0f} s, "
          f"{record['steps_per_s']:.2f} steps/s")
    acc = record["zeroshot_top1"]
    print("clean zero-shot top-1")
    for name, value in acc.items():
        print(f"  {name:<20} {100 * value:5.1f} %")
    print(f"  targets: {prof.train_dataset} ≥ 80 % ({'met' if acc[prof.train_dataset] >= 0.8 else 'NOT met'}), "
          f"zero-shot average ≥ 50 % ({'met' if acc['zero-shot average'] >= 0.5 else 'NOT met'})")

    model, _, tokenizer = load_clip(prof.model, pretrained=prof.pretrained)
    grid = [int(k) for k in args.eps.split(",")]
    n = args.n if args.n is not None else prof.eval_n
    table = calibration(model, tokenizer, prof.eval_datasets, grid, n, prof.dataset_options)
    print(f"robust top-1 under PGD-10 (step ε/4, random start), {n} images per dataset")
    print("  ε/255 " + " ".join(f"{d.removeprefix('mini-'):>9}" for d in prof.eval_datasets) + "   average")
    for k, row in table.items():
        print(f"  {k:>5} " + " ".join(f"{100 * row[d]:8.1f}%" for d in prof.eval_datasets)
              + f" {100 * row['average']:8.1f}%")
    chosen = choose_eps(table)
    print(f"smallest ε with average robust top-1 ≤ {100 * TARGET_ROBUST:.0f} %: "
          f"{'none in the grid' if chosen is None else f'{chosen}/255'}; "
          f"profile {prof.name!r} uses eps_unit = {round(prof.eps_unit * 255, 3)}/255")
    if args.json:
        from ..storage import atomic_write_json

        atomic_write_json(args.json, {"record": record, "calibration": table, "chosen_eps_255": chosen,
                                      "n": n, "profile": prof.name})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
