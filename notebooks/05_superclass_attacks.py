# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Superclass attacks and their transfer to the leaf classifier
#
# HRVLM's motivating observation (its Fig. 1a and 1b): an attacker need not target the leaf class. A
# *superclass attack* perturbs the image against the zero-shot classifier of a higher level of the
# class tree (*mammal* rather than *kit fox*), with that level's labels.
#
# * **Fig. 1a** — robust accuracy at the attacked level: for TeCoA, PMG-AFT and FARE, which are trained
#   on leaf classes only, it "collapses" at the superclass levels.
# * **Fig. 1b** — transfer: the superclass adversaries also fool the *leaf* classifier. The success rate
#   is the fraction of images the leaf classifier gets right clean but wrong on the superclass adversary.
#
# The paper's figure gives no recoverable numbers, only the qualitative claims above, and that HRVLM
# raises superclass robust accuracy and lowers the transfer success rate. This chapter measures both
# for every method, at every level of the fine-tuning set's first tree that has two classes or more,
# with the runs of the main-table chapter (cached, not retrained).

# %% tags=["parameters"]
profile = "mini"  # "smoke" (CI), "mini" (default), "full" (GPU, real data)
n = None  # images per set; None: the profile's book.focus_eval_n
datasets = None  # None: the profile's book.focus_datasets (the fine-tuning set's test split)
eps_multiple = 1  # ε as a multiple of the profile's ε unit
attack_steps = None  # PGD steps; None: the profile's book.pgd_steps (the paper: 20)
methods = None  # None: every main row; else a list of row labels
trees = 5  # HRVLM's larger forest, as in the main table
templates = None  # a template set for every dataset (e.g. "tecoa"); None: each dataset's own
seeds = None  # the seeds every row is trained and evaluated with; None: the profile's book.seeds

# %% tags=["colab"]
# On Colab only (elsewhere this cell does nothing): install hrvlm keeping Colab's torch, then check the
# runtime with `hrvlm doctor`; the book's introduction explains each line.
import sys

if "google.colab" in sys.modules:
    print("Colab: installing hrvlm (Colab's torch is kept) and checking this runtime", flush=True)
    # !pip list --format=freeze | grep -iE '^(torch|torchvision)==' > /tmp/keep-torch.txt
    # !pip install -q -c /tmp/keep-torch.txt "hrvlm[book] @ git+https://github.com/hrvlm/hrvlm"
    # !hrvlm wordnet download
    # !hrvlm doctor --profile {profile}

# %%
import matplotlib.pyplot as plt
from IPython.display import Markdown

from hrvlm.book import experiments as ex
from hrvlm.book import findings

setting = ex.chapter_setting(profile, trees=trees, methods=methods, datasets=datasets, n=n, focus=True, seeds=seeds)
attack_steps = attack_steps or ex.book_settings(profile)["pgd_steps"]
Markdown(setting.note())

# %% [markdown]
# ## The levels
#
# Level 0 is the dataset's own classes; level $l$ groups them by their WordNet ancestors $l$ steps up
# (the first tree of the dataset's forest, depth 5). A level with a single class (the root) cannot be
# attacked and is left out.

# %%
levels = {d: ex.attackable_levels(d) for d in setting.datasets}
ex.level_classes(setting.datasets)

# %% [markdown]
# ## Attacking each level
#
# PGD with the level's labels against the level's zero-shot head (white-box, each model's own head);
# the same adversarial images then go to the leaf head for the transfer numbers.

# %%
runs = ex.train_variants(setting)
pgd = ex.attack("pgd", profile, eps_multiple, steps=attack_steps)
by_set = [ex.evaluate_runs(runs, profile, [pgd], [d], levels=levels[d], n=setting.n, templates=templates)
          for d in setting.datasets]
results = {v: [r for records in by_set for r in records[v]] for v in runs}
frame = ex.results_frame(results)
long = ex.long_results(frame, profile)
Markdown(ex.templates_note(frame))

# %% [markdown]
# ## Robust accuracy at the attacked level (Fig. 1a)
#
# Clean and robust accuracy of each level's classifier, attacked with that level's labels (%): in every cell
# the mean over the seeds and its 95 % seed × image interval (`hrvlm.book.intervals`).

# %%
from hrvlm.book import intervals

nothing = Markdown(setting.absent("Nothing was evaluated"))
intervals.as_points(intervals.level_estimates(results, "clean")) if not long.empty else nothing

# %%
intervals.as_points(intervals.level_estimates(results, "robust")) if not long.empty else nothing

# %% [markdown]
# ## Transfer of superclass adversaries to the leaf classifier (Fig. 1b)
#
# For each attacked level $l \ge 1$: the leaf classifier's accuracy on the level-$l$ adversaries, and the
# success rate (leaf right on the clean image, wrong on the adversary, over the images it gets right clean).

# %%
intervals.as_points(intervals.level_estimates(results, "leaf_robust")) if not long.empty else nothing

# %%
intervals.as_points(intervals.level_estimates(results, "transfer")) if not long.empty else nothing

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
ex.plot_against(axes[0], long, "level", "robust", "attacked level (0 = leaf)",
                "robust accuracy at the attacked level (%)")
ex.plot_against(axes[1], long[long["level"] > 0], "level", "transfer_success", "attacked level",
                "transfer success on the leaf classifier (%)")
axes[0].set_title("Fig. 1a analogue: accuracy against attacked level")
axes[1].set_title("Fig. 1b analogue: superclass adversaries against the leaf head")
fig.tight_layout()

# %% [markdown]
# ## What this build shows
#
# Computed from the tables above (averages over the evaluated sets); the paper's claims are qualitative.

# %%
Markdown(findings.superclass_attacks(long, setting))
