"""hrvlm.book.claims: the claims file, per-image outcomes from records, and the summary of verdicts."""
from __future__ import annotations

import numpy as np
import pytest

from hrvlm.book import claims, intervals
from hrvlm.results import evidence
from hrvlm.book.experiments import Variant
from hrvlm.evaluation.records import encode_bits


def test_the_shipped_claims_cover_the_papers_replayed_claims_and_resolve_under_smoke_and_mini():
    spec = claims.load_claims()
    by_protocol = {}
    for claim in spec.claims:
        by_protocol.setdefault(claim["protocol"], []).append(claim)
    assert set(by_protocol) == set(spec.protocols)  # every chapter's protocol has claims
    main = {(c["a"], c["b"]) for c in by_protocol["main"]}
    assert {(t, b) for t in ("hrvlm-1tree", "hrvlm-5trees") for b in ("tecoa", "pmg-aft", "fare")} <= main
    superclass = {(c["b"], c["metric"], c["direction"]) for c in by_protocol["superclass"]}
    assert {(b, m, d) for b in ("tecoa", "pmg-aft", "fare") for m, d in (("robust", "greater"), ("transfer", "less"))} \
        == superclass
    assert {c["metric"] for c in by_protocol["perturbation"]} == {"robust", "minutes_per_epoch"}
    for profile in ("smoke", "mini"):
        assert claims.check_claims(spec, profile) == {}


def test_a_variant_the_profile_lacks_is_a_reason_not_an_error():
    """Bad claims files are rows of tests/test_reliability.py; here, what a valid file may lack on a profile."""
    absent = claims.check_claims(claims.load_claims(), "full")  # real data has no rendered properties
    assert list(absent) == ["captions-properties-vs-name"]


def _record(dataset, level, seed, clean, robust, leaf_clean=None, leaf_robust=None, subset="s1"):
    bits = {"clean_correct": encode_bits(clean), "robust_correct": encode_bits(robust),
            "leaf_clean_correct": None if leaf_clean is None else encode_bits(leaf_clean),
            "leaf_robust_correct": None if leaf_robust is None else encode_bits(leaf_robust)}
    return {"key": f"{dataset}-{level}-{seed}", "dataset": dataset, "level": level, "seed": seed, "n": len(clean),
            "subset_ids_hash": subset, **bits}


def test_outcomes_pair_by_image_pool_superclass_levels_and_give_transfer_as_a_ratio():
    rng = np.random.default_rng(0)
    runs = {}
    for seed in (0, 1):
        records = []
        for dataset in ("d1", "d2"):
            records.append(_record(dataset, 0, seed, rng.random(50) < 0.6, rng.random(50) < 0.3))
            leaf_clean = rng.random(50) < 0.5  # the leaf head on clean images: the same at every level
            for level in (1, 2):
                records.append(_record(dataset, level, seed, rng.random(50) < 0.6, rng.random(50) < 0.4,
                                       leaf_clean, rng.random(50) < 0.2))
        runs[seed] = (None, records)
    parts, ids = claims.outcomes(runs, "robust", 0, "average", ["d1", "d2"])
    assert [p.numerator.shape for p in parts] == [(1, 2, 50)] * 2 and ids == (("d1", "s1"), ("d2", "s1"))
    leaf = [r for r in runs[1][1] if r["dataset"] == "d2" and r["level"] == 0][0]
    from hrvlm.evaluation.records import decode_bits
    assert np.array_equal(parts[1].numerator[0, 1], decode_bits(leaf["robust_correct"], 50))
    # superclass: levels 1 and 2 averaged per image, the chapter's mean over levels
    pooled, _ = claims.outcomes(runs, "robust", "superclass", "d1", ["d1", "d2"])
    levels = [decode_bits(r["robust_correct"], 50) for r in runs[0][1] if r["dataset"] == "d1" and r["level"] > 0]
    assert np.allclose(pooled[0].numerator[0, 0], np.mean(levels, axis=0))
    # transfer: right clean at the leaves and wrong on the adversary, over right clean
    transfer, _ = claims.outcomes(runs, "transfer", "superclass", "d1", ["d1", "d2"])
    both = [r for r in runs[0][1] if r["dataset"] == "d1" and r["level"] > 0]
    right = decode_bits(both[0]["leaf_clean_correct"], 50)
    fooled = [right & ~decode_bits(r["leaf_robust_correct"], 50) for r in both]
    assert np.array_equal(transfer[0].denominator[0, 0], right)
    # the ratio of pooled sums is the mean over levels of each level's success rate
    rate = transfer[0].numerator[0, 0].sum() / transfer[0].denominator[0, 0].sum()
    assert rate == pytest.approx(np.mean([f.sum() / right.sum() for f in fooled]))
    assert 0 <= evidence.estimate(transfer, replicates=50).value <= 1


def test_records_of_different_subsets_are_not_paired():
    runs = {0: (None, [_record("d1", 0, 0, [1, 0], [0, 0], subset="a")]),
            1: (None, [_record("d1", 0, 1, [1, 0], [0, 0], subset="b")])}
    with pytest.raises(ValueError, match="different image subsets"):
        claims.outcomes(runs, "clean", 0, "average", ["d1"])
    two_attacks = {0: (None, [_record("d1", 0, 0, [1, 0], [0, 0]), _record("d1", 0, 0, [1, 0], [1, 0])])}
    with pytest.raises(ValueError, match="several records of d1 per level"):
        claims.outcomes(two_attacks, "robust", 0, "average", ["d1"])


def test_compare_tests_the_claim_on_the_gathered_records():
    rng = np.random.default_rng(1)
    a, b = Variant.of("A", "hrvlm"), Variant.of("B", "tecoa")
    protocol = claims.load_claims().protocols["superclass"]  # smoke: one focus set, mini-finetune
    gathered = {v: {s: (None, [_record("mini-finetune", 0, s, rng.random(400) < p, rng.random(400) < p - 0.2)])
                    for s in (0, 1, 2)} for v, p in ((a, 0.9), (b, 0.5))}
    claim = {"id": "x", "a": "A", "b": "B", "metric": "robust", "level": 0, "over": "average", "direction": "greater"}
    result = claims.compare(claim, protocol, gathered, [a, b], "smoke", replicates=300)
    assert result.verdict == "agrees" and result.labels == ("A", "B")
    assert "PGD-20 @" in claims._where(result)  # the attack as it ran: the protocol leaves steps to the profile
    assert result.outcome.effect.value == pytest.approx(0.4, abs=0.05) and result.outcome.effect.seeds == 3
    again = claims.compare({**claim, "direction": "less"}, protocol, gathered, [a, b], "smoke", replicates=300)
    assert again.verdict == "disagrees"


def test_a_profile_that_cannot_run_lists_every_claim_as_not_run_with_links():
    results = claims.evaluate_claims("full")  # no ImageNet here: nothing trains
    table = claims.summary_table(results)
    assert len(table) == len(claims.load_claims().claims) and set(table["verdict"]) == {"not run"}
    assert table.loc["main-hrvlm-1tree-vs-tecoa", "chapter"] == '<a href="04_main_table.html">04</a>'
    assert table["note"].str.len().min() > 0
    assert '<a href="07_ablations.html">07</a>' in claims.summary_html(results)
    assert claims.verdict_counts(results).startswith(f"Of {len(results)} claims: {len(results)} not run.")


def test_average_intervals_give_each_variant_its_mean_and_interval():
    rng = np.random.default_rng(2)
    a, b = Variant.of("A", "hrvlm"), Variant.of("B", "tecoa")
    results = {v: [_record(d, 0, 0, rng.random(200) < p, rng.random(200) < p / 2) for d in ("d1", "d2")]
               for v, p in ((a, 0.8), (b, 0.4))}
    table = intervals.as_points(intervals.average_estimates(results, ["d1", "d2"], replicates=200))
    assert list(table.index) == ["A", "B"] and list(table.columns) == ["clean accuracy", "robust accuracy"]
    value, low, high = (float(x) for x in table.loc["A", "clean accuracy"].replace("[", "").replace(",", "")
                        .replace("]", "").split())
    assert low < value < high and value == pytest.approx(80, abs=5)


def test_dataset_estimates_give_every_cell_the_mean_over_seeds_and_an_interval_that_widens_with_seed_spread():
    from hrvlm.results.tables import AVERAGE

    rng = np.random.default_rng(3)
    a = Variant.of("A", "hrvlm")
    image = rng.random(400)  # the same images for every seed: only training (the seed) moves the outcomes

    def results(spread):
        return {a: [_record(d, 0, seed, image < 0.5 + spread * (seed - 1), image < 0.3) for d in ("d1", "d2")
                    for seed in (0, 1, 2)]}

    calm, wild = (intervals.dataset_estimates(results(s), ["d1", "d2"], "clean", replicates=300) for s in (0.0, 0.2))
    assert list(calm.index) == ["A"] and list(calm.columns) == ["d1", "d2", AVERAGE]
    assert calm.loc["A", "d1"].value == pytest.approx(np.mean(image < 0.5))  # mean over seeds, fractions
    assert wild.loc["A", AVERAGE].value == pytest.approx(np.mean([np.mean(image < p) for p in (0.3, 0.5, 0.7)]))
    width = {name: t.loc["A", "d1"].high - t.loc["A", "d1"].low for name, t in (("calm", calm), ("wild", wild))}
    assert width["wild"] > 2 * width["calm"]  # seeds that disagree widen the interval
    assert intervals.dataset_estimates(results(0.0), ["d1", "d2"], "robust", replicates=100).loc["A", "d2"].value == \
        pytest.approx(np.mean(image < 0.3))


def test_level_and_attack_estimates_give_each_level_and_attack_its_interval():
    from hrvlm.profiles import get_profile

    rng = np.random.default_rng(4)
    a = Variant.of("A", "hrvlm")
    image = rng.random(300)
    levels = [_record("d1", level, seed, image < 0.8, image < 0.6 - 0.2 * level, leaf_clean=image < 0.8,
                      leaf_robust=image < 0.8 - 0.1 * level) for level in (0, 1, 2) for seed in (0, 1, 2)]
    robust = intervals.level_estimates({a: levels}, "robust", replicates=100)
    assert list(robust.columns) == [("d1", 0), ("d1", 1), ("d1", 2)]
    assert robust.loc["A", ("d1", 2)].value == pytest.approx(np.mean(image < 0.2))
    transfer = intervals.level_estimates({a: levels}, "transfer", replicates=100)
    assert list(transfer.columns) == [("d1", 1), ("d1", 2)]  # no transfer at the leaves
    plain = [{**r, "leaf_clean_correct": None, "leaf_robust_correct": None} if r["level"] == 0 else r for r in levels]
    leaf = intervals.level_estimates({a: plain}, "leaf_robust", replicates=100)  # level 0 records carry no leaf bits
    assert list(leaf.columns) == [("d1", 1), ("d1", 2)] and leaf.loc["A", ("d1", 2)].value == pytest.approx(np.mean(image < 0.6))
    assert transfer.loc["A", ("d1", 1)].value == pytest.approx(np.mean((image >= 0.7) & (image < 0.8)) / np.mean(image < 0.8))

    unit = get_profile("mini").eps_unit
    pgd = [{**_record(d, 0, s, image < 0.8, image < 0.5), "attack": {"name": "pgd", "steps": 20, "eps": unit}}
           for d in ("d1", "d2") for s in (0, 1)]
    auto = [{**_record(d, 0, s, image < 0.8, image < 0.3), "attack": {"name": "autoattack", "eps": 4 * unit}}
            for d in ("d1", "d2") for s in (0, 1)]
    table = intervals.attack_estimates({a: pgd + auto}, ["d1", "d2"], "mini", replicates=100)
    assert list(table.columns) == ["clean", "PGD-20 @ 1×", "AutoAttack @ 4×"]
    assert table.loc["A", "AutoAttack @ 4×"].value == pytest.approx(np.mean(image < 0.3))
    assert intervals.as_points(table).loc["A", "clean"].startswith(f"{100 * np.mean(image < 0.8):.1f} [")
    with pytest.raises(ValueError, match="unknown per-image metric"):
        intervals.per_image(pgd[0], "accuracy")


def test_the_verdict_counts_read_as_a_sentence():
    rng = np.random.default_rng(0)
    high, low = (evidence.Part.of((rng.random((1, 3, 400)) < p).astype(float)) for p in (0.9, 0.1))
    agree = claims.ClaimResult({}, {}, outcome=evidence.paired(high, low, "greater", replicates=200))
    disagree = claims.ClaimResult({}, {}, outcome=evidence.paired(low, high, "greater", replicates=200))
    assert (agree.verdict, disagree.verdict) == ("agrees", "disagrees")
    text = claims.verdict_counts([agree, agree, disagree, claims.ClaimResult({}, {}, note="absent")])
    assert text.startswith("Of 4 claims: 2 agree, 1 disagrees, 1 not run. Tests rest on 3 seed(s)")


@pytest.mark.parametrize("profile, steps, ablation_sets", [("mini", 20, 6), ("rehearsal", 1, 2)])
def test_a_protocol_attacks_as_its_chapter_does_so_its_records_are_the_chapters(profile, steps, ablation_sets):
    """PGD's steps are the profile's book.pgd_steps, as the chapters run it: the rehearsal's chapter 11 once
    ran PGD-20 against every run its chapters had attacked with PGD-1, 14 of its 29 minutes.  An ablation's
    sets are its chapter's (book.ablation_datasets), the main table's every evaluation set."""
    from hrvlm.book import ablations
    from hrvlm.book.experiments import book_settings, chapter_setting

    book = book_settings(profile)
    assert book["pgd_steps"] == steps and len(ablations.datasets(profile)) == ablation_sets
    for name, protocol in claims.load_claims().protocols.items():
        spec = protocol["attack"]
        chapter = ablations.attacks([spec["name"]], profile, spec.get("eps", 1), book["pgd_steps"],
                                    book["autoattack_steps"])[0]
        datasets, n, attack, _ = claims.protocol_setting(protocol, profile)
        assert attack.config() == chapter.config(), name
        ablation = protocol["chapter"] == "07_ablations" or protocol["variants"] == "ablation:captions"
        sets = ablations.datasets(profile) if ablation else chapter_setting(profile, focus=name == "superclass").datasets
        assert datasets == sets and n == (book["focus_eval_n"] if name == "superclass" else book["eval_n"]), name


def test_the_ablation_sets_are_the_profiles_evaluation_sets_or_a_one_line_error(monkeypatch):
    from hrvlm.book import ablations
    from hrvlm.profiles import get_profile

    assert ablations.datasets("full") == get_profile("full").eval_datasets  # null: the paper's 15
    assert ablations.datasets("rehearsal") == ("imagenet", "cifar10")
    real = ablations.sizes
    for bad in ([], "all", ["imagenet", "mnist"]):
        monkeypatch.setattr(ablations, "sizes", lambda profile, bad=bad: {**real(profile), "ablation_datasets": bad})
        with pytest.raises(ValueError, match="book.ablation_datasets must be null or a list of its evaluation sets"):
            ablations.datasets("rehearsal")

