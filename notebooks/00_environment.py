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
# # Environment and a first zero-shot forward pass
#
# This chapter records where the book was executed, which profile it ran, and checks the two pieces
# every later chapter builds on: a CLIP model that takes images in $[0, 1]$ pixel space, and a zero-shot
# classifier.

# %% tags=["parameters"]
profile = "mini"  # "smoke", "mini" or "full": which model architecture and dataset this chapter uses
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
from dataclasses import asdict

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown, display

from hrvlm import doctor
from hrvlm.book import provenance
from hrvlm.data import get_spec
from hrvlm.data.templates import load_templates
from hrvlm.heads.zeroshot import ZeroShotClassifier
from hrvlm.models.clip import load_clip
from hrvlm.profiles import get_profile

torch.manual_seed(seed)
prof = get_profile(profile)
pd.Series(provenance.environment_report(), name="value").to_frame()

# %% [markdown]
# ## Can this machine run the profile?
#
# The checks of `hrvlm doctor --profile <profile>`, the command a Colab or cluster user runs first: library
# versions against the ranges of `pyproject.toml`, the accelerator and its precision policy, the profile's
# weights, each dataset (checked with its loader's own file list), free disk and memory against the
# estimates of `hrvlm/resources/requirements.json`, and WordNet. Nothing is downloaded; each failing line
# carries the command that fixes it.

# %%
checks = doctor.diagnose(profile)
display(Markdown(f"The `{profile}` profile on this machine: {doctor.summary(checks)}"
                 + ("." if all(c.ok for c in checks) else "; the column `fix` says what to do.")))
pd.DataFrame([asdict(c) for c in checks]).set_index(["area", "name"])

# %% [markdown]
# ## The profile
#
# A profile names the model, its weights, the datasets, the $\epsilon$ unit and the sizes; the code path
# is the same in all three (`hrvlm/resources/profiles.json`).

# %%
pd.Series({
    "profile": prof.name, "model": prof.model, "pretrained weights": prof.pretrained,
    "fine-tuning set": prof.train_dataset, "zero-shot sets": ", ".join(prof.zeroshot_datasets),
    "ε unit (the analogue of 1/255)": f"{prof.eps_unit:.5f} = {prof.eps_unit * 255:g}/255",
    "images per evaluation set": prof.eval_n,
}, name="value").to_frame()

# %% [markdown]
# ## The model sees pixels in $[0, 1]$
#
# `load_clip` wraps an open_clip model so that CLIP's normalisation
# $\tilde x = (x - \mu) / \sigma$ happens inside the model. Attacks therefore perturb raw pixels, and an
# $\ell_\infty$ budget of $\epsilon = 1/255$ means one grey level. This chapter builds the profile's
# architecture with `pretrained=None`: no weights are loaded or downloaded, so its predictions are
# chance-level by design (the trained weights enter in the next chapters).

# %%
model, preprocess, tokenizer = load_clip(prof.model, pretrained=None)
model.eval()
n_params = sum(p.numel() for p in model.parameters())
print(f"{prof.model}: {n_params / 1e6:.2f} M parameters, input {model.image_size}x{model.image_size} px")

# %% [markdown]
# ## Zero-shot logits
#
# Each class $c$ gets the normalised mean of its prompt embeddings over templates,
# $w_c = \frac{\bar g_c}{\|\bar g_c\|}$ with $\bar g_c = \frac{1}{T}\sum_{t} \frac{g(t(c))}{\|g(t(c))\|}$,
# and the logits are $\lambda \cos(f(x), w_c)$. The classes are the first five of the profile's first
# zero-shot set, with that dataset's default template set.

# %%
spec = get_spec(prof.zeroshot_datasets[0])
classnames = list(spec.classnames)[:5]
templates = load_templates(spec.templates)
classifier = ZeroShotClassifier.from_classnames(model, tokenizer, classnames, templates)
images = torch.rand(4, 3, model.image_size, model.image_size)
with torch.no_grad():
    probs = classifier(images).softmax(dim=-1)
Markdown(f"Dataset `{spec.name}`, template set `{spec.templates}`: " + "; ".join(f"“{t}”" for t in templates[:3])
         + (" …" if len(templates) > 3 else ""))

# %%
pd.DataFrame(probs.numpy(), columns=classnames).round(3)

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [1, 2]})
axes[0].imshow(images[0].permute(1, 2, 0).numpy())
axes[0].set_title("input (random pixels)")
axes[0].axis("off")
axes[1].bar(classnames, probs[0].numpy(), color="tab:blue")
axes[1].set_ylabel("zero-shot probability")
axes[1].set_title(f"{prof.model}, random init")
axes[1].tick_params(axis="x", labelrotation=20)
fig.tight_layout()
