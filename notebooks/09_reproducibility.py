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
# # Reproducibility: where every number comes from
#
# Every accuracy in this book is a record of the records store (`hrvlm/evaluation/records.py`), written by
# `hrvlm.evaluation.evaluate` with the configuration that produced it; every fine-tuned model is a run folder
# (`hrvlm/models/runs.py`) whose `run.json` holds its training configuration. This appendix reads both and lists
# them: nothing below is typed in by hand. It ends with how to reproduce the `full` profile on Colab, on a
# cluster with ImageNet and on several GPUs.

# %% tags=["parameters"]
profile = "mini"  # "smoke", "mini" (default), "full": whose runs and records are listed
store = None  # a records store; None: `hrvlm eval`'s default, the book's (hrvlm.evaluation.records.default_store())
max_rows = 60  # records listed in full (the summary counts all of them)

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
import pandas as pd
from IPython.display import Markdown, display

from hrvlm.book import provenance
from hrvlm.profiles import get_profile
from hrvlm.evaluation.records import default_store, load_table, verify

prof = get_profile(profile)
store = store or default_store()
pd.set_option("display.max_columns", None)  # provenance tables are shown whole
pd.Series(provenance.environment_report(), name="value").to_frame()

# %% [markdown]
# ## The environment
#
# Above: where this chapter ran (code commit, Python, platform, device, library versions). Each record and
# each run also carries the environment *it* ran in, since chapters may have been executed elsewhere
# (a run trained on a GPU, evaluated later on another machine); those are the `git` and `device` columns
# below. The environment is recorded, not part of a record's key: a new commit does not invalidate stored
# numbers, a changed configuration does.

# %% [markdown]
# ## Fine-tuning runs
#
# Every finished run of the profile: its folder name is `<method>-<profile>-s<seed>-<hash of the training
# configuration>`, so equal configurations share one run (how chapters 03–08 reuse each other's training).
# *Start weights* names the pretrained weights and the digest of their values (`hrvlm.models.weights.state_digest`);
# *weights digest* is the digest of the fine-tuned values, which every record of those weights carries as
# its `weights_digest`; *head* is the classifier the weights are evaluated with (cosine, or HRVLM's Poincaré head
# with its learned scales, in `run.json`).

# %%
runs = provenance.profile_runs(profile)
runs_frame = provenance.run_table(runs)
display(Markdown(f"{len(runs)} finished run(s) of the `{profile}` profile." if runs else
                 f"No finished run of the `{profile}` profile on this machine (see the chapters' notes)."))
runs_frame

# %% [markdown]
# ## Evaluation records
#
# One record per (weights, dataset, split, level, attack): the fixed image subset (`n` and the hash of its
# ids, the same on every machine), the class tree, the template set with the hash of its prompts, the attack's
# full configuration (ε in pixel units, steps, step size, restarts, seed), the evaluation seed, and the
# per-image outcomes as bitmaps (not shown). `hrvlm records verify` checks every record's checksum.

# %%
frame = provenance.profile_records(load_table(store) if store.is_file() else pd.DataFrame(), profile)
checked = verify(store) if store.is_file() else {"records": 0, "unverified": 0, "problems": []}
display(Markdown(f"Store `{store.name}`: {checked['records']} record(s) in all, {len(checked['problems'])} problem(s); "
                 f"{len(frame)} belong to the `{profile}` profile."))
records = provenance.record_table(frame, runs)
if not records.empty:
    summary = records.groupby(["weights", "method"], dropna=False).agg(
        records=("dataset", "size"), datasets=("dataset", "nunique"), attacks=("attack", lambda a: ", ".join(sorted(set(map(str, a))))),
        templates=("templates", lambda t: ", ".join(sorted(set(t)))), seeds=("seed", lambda s: ", ".join(map(str, sorted(set(s))))))
    display(summary)
records.head(max_rows)

# %% [markdown]
# ## Class trees and template sets
#
# The trees of the fine-tuning set's forest (HRVLM's runs use its first `trees` of them) and of every dataset
# whose records name a tree, each with a hash of its content. Template sets are named in the records with the
# hash of their prompts; their files (`hrvlm/resources/templates/`) say where each comes from.

# %%
tree_datasets = [prof.train_dataset] + (sorted(frame.dropna(subset=["tree"])["dataset"].unique())
                                        if "tree" in frame else [])
provenance.tree_table(tree_datasets)

# %% [markdown]
# ## Running the `full` profile
#
# The `full` profile is the paper's setting: OpenAI's CLIP ViT-B/32, fine-tuned on ImageNet at
# $\epsilon = 1/255$, evaluated on ImageNet and 14 zero-shot datasets. Nothing downloads implicitly: weights
# come from open_clip's hub on first use, datasets through `hrvlm data fetch NAME` (or by hand where the
# licence requires it; the error message of a missing dataset says how). The same chapters run, with the same
# code; only the profile changes.
#
# **On Colab.** Open a chapter from the README's badges with a GPU runtime, set `profile = "full"` in the
# chapter's parameters cell and run it: the next cell installs hrvlm (Colab's torch is kept) and runs
# `hrvlm doctor --profile full`, which lists what the runtime lacks, each with the command that gets it. Colab has no ImageNet:
# chapters that fine-tune say so in one sentence unless `$HRVLM_DATA` points at a copy (e.g. a mounted
# drive). Evaluation of an existing run (`hrvlm eval --pretrained RUN`) works on the zero-shot sets that
# `hrvlm data fetch` can download.
#
# **On a cluster with ImageNet.** Install once (`pip install -e ".[book]"` in a clone), point the data root
# at the datasets and the cache at a shared disk, then train, evaluate and build:
#
# ```bash
# export HRVLM_DATA=/datasets          # ImageNet as /datasets/imagenet/{train,val}/<wnid>/*.JPEG
# export HRVLM_CACHE=/scratch/hrvlm    # runs, records and pretrained weights (shared by every job)
# hrvlm doctor --profile full         # what this machine lacks (weights, datasets, disk), with the commands
# for d in cifar10 cifar100 stl10; do hrvlm data fetch $d; done   # sets that download (others: see the error)
# hrvlm train --method hrvlm --profile full --set trees=5
# hrvlm eval --pretrained <run printed above> --datasets imagenet,cifar10 --attack pgd --steps 20 --eps 1/255
# hrvlm book --profile full            # reuses every finished run and stored record
# ```
#
# Training resumes where it stopped if the job is killed (re-run the same command); evaluation skips stored
# chunks. A job array can train the methods in parallel: the run folders and the records store are safe
# to share (atomic writes, a locked store).
#
# **On several GPUs (torchrun).** Training runs under PyTorch DDP: each process takes its slice of every
# global batch, so the run is the same configuration (same folder) as a single-GPU one. Evaluation splits the
# datasets across the processes, each writing its records to the shared store; rank 0 then prints the table:
#
# ```bash
# torchrun --nproc_per_node 4 -m hrvlm.cli train --method hrvlm --profile full
# torchrun --nproc_per_node 4 -m hrvlm.cli eval --pretrained <run> --datasets imagenet,cifar10,cifar100,dtd \
#     --attack pgd --steps 20 --eps 1/255 --num-images 1000
# ```
#
# (`--num-images` rather than `--n` under torchrun, whose own option parser would take `--n` for an
# abbreviation of one of its options.) The book's result chapters then find these runs and records: a run is
# found by its configuration, a record by its key, whichever process or machine wrote them.
