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
# # The mini world
#
# The paper's pipeline needs a pretrained CLIP, ImageNet and 14 zero-shot datasets. The **mini world** is
# a small replica of that pipeline that runs offline on a laptop: procedurally rendered letters, digits,
# punctuation marks and plane figures whose classes are real WordNet 3.0 synsets, a tiny CLIP pretrained on
# image–caption pairs of them, a fine-tuning set (the ImageNet analogue) and zero-shot sets that differ from
# it in label space or domain. Every later chapter runs through the same code in the `mini` profile as in
# the `full` one; only the model, the weights and the dataset names change.

# %% tags=["parameters"]
profile = "mini"
samples_per_dataset = 8
calibration_n = 250  # images per dataset for the ε sweep and the target table (at most the profile's size)
seed = 0

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
import pandas as pd
from IPython.display import Markdown, display

from hrvlm.benchmarks.mini import (EPS_GRID, MIN_CLASSES, TARGET_ABOVE_MAJORITY, TARGET_ROBUST, calibration,
                                   choose_eps, leaf_table, level_table)
from hrvlm.evaluation.records import default_store
from hrvlm.hierarchy.draw import draw_tree
from hrvlm.hierarchy.trees import depth_rules, forest_for_dataset
from hrvlm.miniworld.captions import QUALITIES, gloss, superclasses
from hrvlm.miniworld.datasets import MiniWorldDataset, definition, split_size
from hrvlm.miniworld.render import world
from hrvlm.models.clip import load_clip
from hrvlm.training.pretrain import PretrainConfig, ensure_pretrained, load_record
from hrvlm.profiles import get_profile

# The mini world exists in the smoke and mini profiles; the full profile's data are the real datasets,
# so under it this chapter shows the mini world of the book's mini replicas (its `book.mini_world`).
prof = get_profile(get_profile(profile).book["mini_world"])
if prof.name != profile:
    display(Markdown(f"*The `{profile}` profile uses real datasets, not the mini world: this chapter shows the "
                     f"mini world at the `{prof.name}` profile's sizes.*"))
mini_size = prof.dataset_options["size"]  # the mini world's size option: smoke or mini
datasets = ["mini-pretrain", *prof.eval_datasets]
n_eval = min(calibration_n, prof.eval_n)

# %% [markdown]
# ## The datasets
#
# Each image is drawn from a seed derived from (dataset, split, index) alone, so item *i* is the same on
# every machine and in every order. The table lists what each dataset is for and its size in this profile.

# %%
rows = []
for name in datasets:
    d = definition(name)
    split = "train" if name == "mini-pretrain" else "test"
    ds = MiniWorldDataset(name, split, size=mini_size)
    rows.append({"dataset": name, "split": split, "items": split_size(name, split, mini_size),
                 "classes": len(ds.classnames), "labels": d["labels"], "what": d["description"]})
pd.DataFrame(rows).set_index("dataset")

# %%
fig, axes = plt.subplots(len(datasets), samples_per_dataset,
                         figsize=(1.4 * samples_per_dataset, 1.5 * len(datasets)))
for row, name in zip(axes, datasets):
    ds = MiniWorldDataset(name, "train" if name == "mini-pretrain" else "test", size=mini_size)
    for k, ax in enumerate(row):
        i = (k * 7 + seed) % len(ds)
        ax.imshow(ds.image_uint8(i), interpolation="nearest")
        ax.set_title(ds.classnames[ds.label(i)], fontsize=8)
        ax.set_xticks([]), ax.set_yticks([])
    row[0].set_ylabel(name.removeprefix("mini-"), fontsize=9)
fig.tight_layout()

# %% [markdown]
# **The fine-tuning set's distribution shift.** ImageNet is not CLIP's web data, and CLIP is far from
# saturated on it; that gap is where a robust method's clean-accuracy cost shows. The mini world's
# fine-tuning set draws its objects turned further than the web corpus does (up to ±45° against the
# corpus' ±30°), an axis that none of the zero-shot sets uses, so they stay shifted from it in class, style,
# resolution or task as before. Measured with this pretraining on the set's 1,000 test images, clean leaf
# top-1 falls with the angle: ±30° 97.8 %, ±40° 94.7 %, ±45° 89.1 %, ±60° 74.0 %, ±90° 56.7 %. We took ±45°,
# the round angle that puts leaf top-1 well inside the 75–95 % band we aim for (±40° sits at its edge,
# ±60° below it) while every superclass level with at least four classes stays at least 40 points above
# its majority baseline (the table below). Two other shifts we measured overlap the zero-shot sets and were not used: filled
# shapes on every background (93.7 %) and any fill on every background (92.4 %).

# %% [markdown]
# ## The classes
#
# **Why these classes.** A superclass attack needs superclasses with several members each, at several
# levels, that a small model can see. Plane figures alone gave 16 classes and shallow, tangled WordNet
# paths; WordNet also holds the letters of the Roman alphabet (`a.n.06`, … "the 1st letter of the Roman
# alphabet"), the digits (`one.n.01`, …), punctuation and other marks (`question_mark.n.01`,
# `check_mark.n.01`, `arrow.n.01`, …): things that can be drawn at 32 pixels and that web text names both
# by themselves ("the letter b") and by their kind ("a digit", "a punctuation mark"). Glyphs are typeset
# with the DejaVu Sans Bold font that matplotlib ships, so no system font is involved and the pixels are
# the same on every machine (tested across processes). Every class's synset was chosen by its gloss (many
# names have other senses) and is checked by `tests/test_miniworld.py`. The fine-tuning set holds 56
# classes; 13 (four letters, a digit, four marks, four figures) are held out for zero-shot evaluation.

# %%
finetune = set(MiniWorldDataset("mini-finetune", "test", n=1).classnames)
pd.DataFrame([{"class": name, "synset": entry["synset"], "drawn as": entry.get("glyph", "polygon"),
               "set": "fine-tuning" if name in finetune else "held out",
               "superclasses (nearest first)": " < ".join(superclasses(name)), "gloss": gloss(entry["synset"])}
              for name, entry in world()["shapes"].items()]).set_index("class")

# %% [markdown]
# ## Nuisance factors and captions
#
# Every image records the factors it was drawn with. Captions come at four qualities (QT-AFT's
# caption-quality axis): the class name alone, a prompt template, a detailed caption naming the object's
# properties, and the class name with its WordNet gloss. The pretraining corpus mixes them, like web text,
# and also names a class by one of its superclasses ("a photo of a vowel."), with the names the trees use.

# %%
corpus = MiniWorldDataset("mini-pretrain", "train", size=mini_size)
pd.DataFrame([{**corpus.factors(i).as_dict(), "pretraining caption": corpus.caption(i, "pretrain")}
              for i in range(6)])

# %%
pd.DataFrame({q: [corpus.caption(i, q) for i in range(3)] for q in QUALITIES})

# %% [markdown]
# ## Class hierarchies
#
# WordNet's own paths do not make a usable testbed here: a letter is five steps below "symbol", a circle
# three below "plane figure", so WordNet trees put unrelated depths on one level and the same node at two
# levels. The mini world therefore has a **curated tree** (`hrvlm/resources/trees/mini-world.json`, format
# `hrvlm-tree/1`, with its provenance), the analogue of the paper's ChatGPT-4o trees for its zero-shot sets:
# every class is five steps below the root, through a typographic or geometric family (round consonant,
# looped even digit, quadrilateral, …), a kind (consonant, even digit, punctuation mark, polygon, …) and a
# category (letter, digit, mark, plane figure). Every mini dataset gets this tree restricted to its classes,
# first in its forest; the WordNet trees (derived by `hrvlm.hierarchy.trees`, in one order in every process) follow.
#
# WordNet gives the mini world only two distinct trees, and HRVLM sums its loss over up to five (the paper's
# extra trees were written by an LLM). Two **further curated trees** over the same classes, each a different
# way a person would group them, complete the forest after the WordNet trees (same depth rules, provenance in
# each file):
#
# | tree | file | grouping, root to leaf |
# |---|---|---|
# | `mini-world-function` | `mini-world-function.json` | what a symbol is *for*: writing / mathematical / pictorial symbol < letter, punctuation, numeral, operator sign, geometric shape, emblem, indicator < vowel or consonant letter, prime or non-prime numeral, arithmetic operator, … < the sound a letter stands for (stop, fricative, sonorant consonant; open, front, back vowel), perfect-square numeral, multiplicative operator (`*`, `/`), … |
# | `mini-world-strokes` | `mini-world-strokes.json` | how the shape is *drawn*: straight edges only / curves only / both < closed (encloses a region) or open < mirror-symmetric or not < visual family (triangular, ring, hooked, winding, …) |
#
# Pretraining captions name only the superclasses of the first tree (the file `miniworld.json` names), so
# adding trees does not change the pretrained model or its cache key.
# The colour set has WordNet trees only (11 colours have no three-level structure).

# %%
rows = []
for name in prof.eval_datasets:
    for tree in forest_for_dataset(name):
        rows.append({"dataset": name, "tree": tree.name.split("/", 1)[1],
                     "classes per level": "-".join(str(len(level)) for level in tree.nodes),
                     "depth rules": "; ".join(depth_rules(tree)) or "pass"})
pd.DataFrame(rows).set_index(["dataset", "tree"])

# %%
first = forest_for_dataset(prof.train_dataset)[0]
fig, ax = plt.subplots(figsize=(18, 6))
draw_tree(first, ax, fontsize=6)
fig.tight_layout()

# %% [markdown]
# ## The tiny CLIP
#
# `hrvlm pretrain --profile mini` trains the tiny open_clip model with CLIP's symmetric contrastive loss
# on the corpus, on two torch threads with a channels-last image tower (a fixed count, so the weights are
# the same on every machine; 0.080 s per step against 0.187 s on one thread); the checkpoint and its record
# are cached under a hash of the configuration and of what the corpus is made of (its definition, the
# world's vocabulary and caption mixtures, the tree its captions name, the font), so this cell trains only
# the first time, and changing a fine-tuning or evaluation set does not retrain.

# %% [markdown]
# **Two choices of ours, and why** (measured on 2 CPU cores while building this companion):
#
# - *The image tower is a small VGG-style CNN* (`hrvlm-tiny-cnn`: three stages of 3×3 convolutions that
#   downsample late). Trained supervised on the shapes, it reached 84 % after 300 steps where timm's
#   stride-4 test ResNet reached 63 % after 400 and a 2-layer ViT stayed near chance.
# - *A caption curriculum.* With the web-like captions from the start (colour named in about half of
#   them), the colours alone tell most captions of a batch apart: the model learns them first and the
#   classes stay near chance. So the first half of pretraining uses the `shapes-first` mixture (captions
#   that name the class, never the colour or a superclass) and the second half the `web` mixture (both in
#   `hrvlm/resources/miniworld.json`); the loss is CLIP's, unchanged. With 69 classes this matters more
#   than with the 16 plane figures of the first mini world: with colour and superclass captions in the
#   first phase too, the fine-tuning set stayed at chance (3 %) after 1,400 of 1,600 steps; without them
#   it reached 43 % after 500. The web mixture names superclasses of the curated tree in one caption of
#   five, as web text says "a mammal" as well as "a cat": without them the tiny CLIP cannot classify
#   superclasses zero-shot, and the superclass attacks of later chapters would have nothing to attack.
# - *3,000 steps.* Measured on one thread, on 1,000 fixed test images per set, with the fine-tuning set
#   then drawn at the corpus' ±30°: after 1,800 steps the fine-tuning set scored 93.7 %, the zero-shot
#   average 68.2 % and the 8-class superclass level 69.6 % (majority 30.6 %); after 3,000 steps 97.7 %,
#   73.9 % and 77.2 %. A testbed for superclass attacks needs superclasses the model reads, so we keep
#   3,000 steps; two threads and a channels-last image tower bring them inside our 6-minute aim on two
#   idle cores (the record below: wall time of rendering the corpus and training).

# %%
config = PretrainConfig.profile(prof.name, model=prof.model)
ensure_pretrained(prof.model, prof.name)  # its progress bar goes to the builder's terminal, not the page
record = load_record(config)
{k: record[k] for k in ("steps", "wall_time_s", "cpu_time_s", "steps_per_s", "torch_threads")}

# %% [markdown]
# ## The targets, level by level
#
# Clean zero-shot top-1 per dataset, then per level of the fine-tuning set's first tree, each beside the
# majority baseline (always guessing the largest class) and its binomial standard error on the fixed test
# images. A superclass level is *read* by the model when it beats its majority baseline by at least
# 40 points; robust accuracy is under PGD-10 at the profile's ε (superclass attacks above level 0), and
# *transfer* is the share of the leaf classifier's correct decisions those superclass adversaries flip.
# `hrvlm bench mini` prints the same figures on the profile's full evaluation size.

# %%
model, _, tokenizer = load_clip(prof.model, pretrained=prof.pretrained)
store = default_store()  # the book's records: a rebuild reuses these evaluations
leaves = pd.DataFrame(leaf_table(model, tokenizer, prof.eval_datasets, n_eval, mini_size, store=store))
leaves = leaves.set_index("dataset")
leaves[["majority", "clean", "se"]] = leaves[["majority", "clean", "se"]].mul(100).round(1)
leaves

# %%
levels = pd.DataFrame(level_table(model, tokenizer, prof.train_dataset, prof.eps_unit, n_eval, mini_size,
                                  store=store))
levels["read (≥ majority + 40)"] = [
    "" if row.level == 0 or row.classes < MIN_CLASSES else ("yes" if row.clean >= row.majority + TARGET_ABOVE_MAJORITY
                                                            else "no") for row in levels.itertuples()]
cols = ["majority", "clean", "clean_se", "robust", "robust_se", "transfer"]
levels[cols] = levels[cols].astype(float).mul(100).round(1)
levels.drop(columns="tree").set_index("level")

# %% [markdown]
# ## How fragile is it? Choosing the mini ε
#
# Real CLIP ViT-B/32 drops from 64.9 % to 7.2 % zero-shot accuracy under PGD-20 at ε = 1/255. We look for
# the ε (L∞) at which PGD-10 takes the tiny CLIP's average accuracy to at most 20 %; later chapters use it
# as the analogue of 1/255, and 2× and 4× it as the analogues of 2/255 and 4/255. The profile's ε was
# chosen by this rule on 1,000 images per set (`hrvlm bench mini`; the figures are in the source note of
# `hrvlm/resources/profiles.json`): 20.1 % at 2/255, just above the line, so 3/255. This chapter's sweep
# uses fewer images, and where an average sits within a point of 20 % its answer can land one grid step
# away from the profile's (a set's figure has a binomial standard error of up to 3 points at 250 images,
# their average of about 1).

# %%
table = calibration(model, tokenizer, prof.eval_datasets, EPS_GRID, n_eval, prof.dataset_options, store=store)
curve = pd.DataFrame(table).T.mul(100).round(1)
curve.index.name = "ε × 255"
curve

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for name in prof.eval_datasets:
    ax.plot(curve.index, curve[name], marker=".", alpha=0.5, label=name.removeprefix("mini-"))
ax.plot(curve.index, curve["average"], "k-o", lw=2, label="average")
ax.axhline(100 * TARGET_ROBUST, color="gray", ls="--")
ax.axvline(prof.eps_unit * 255, color="red", ls=":", label=f"mini ε = {prof.eps_unit * 255:g}/255")
ax.set_xlabel("ε × 255 (L∞)"), ax.set_ylabel("robust top-1 (%)"), ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
print(f"smallest ε with average ≤ {100 * TARGET_ROBUST:.0f} %: {choose_eps(table)}/255; "
      f"the profile uses {prof.eps_unit * 255:g}/255")
