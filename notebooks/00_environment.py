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
# This chapter records where the book was executed and checks the two pieces every later chapter
# builds on: a CLIP model that takes images in $[0, 1]$ pixel space, and a zero-shot classifier.

# %% tags=["parameters"]
profile = "mini"
model_name = "hrvlm-tiny"
seed = 0

# %%
import matplotlib.pyplot as plt
import pandas as pd
import torch

from hrvlm import environment
from hrvlm.models import load_clip
from hrvlm.zeroshot import ZeroShotClassifier, load_templates

torch.manual_seed(seed)
pd.Series(environment.report(), name="value").to_frame()

# %% [markdown]
# ## The model sees pixels in $[0, 1]$
#
# `load_clip` wraps an open_clip model so that CLIP's normalisation
# $\tilde x = (x - \mu) / \sigma$ happens inside the model. Attacks therefore perturb raw pixels, and an
# $\ell_\infty$ budget of $\epsilon = 1/255$ means one grey level. With `pretrained=None` no weights are
# downloaded: this chapter's model is randomly initialised, so its predictions are chance-level by design.

# %%
model, preprocess, tokenizer = load_clip(model_name, pretrained=None)
n_params = sum(p.numel() for p in model.parameters())
print(f"{model_name}: {n_params / 1e6:.2f} M parameters, input {model.image_size}x{model.image_size} px")

# %% [markdown]
# ## Zero-shot logits
#
# Each class $c$ gets the normalised mean of its prompt embeddings over templates,
# $w_c = \frac{\bar g_c}{\|\bar g_c\|}$ with $\bar g_c = \frac{1}{T}\sum_{t} \frac{g(t(c))}{\|g(t(c))\|}$,
# and the logits are $\lambda \cos(f(x), w_c)$.

# %%
classnames = ["circle", "square", "triangle", "star", "heart"]
classifier = ZeroShotClassifier.from_classnames(model, tokenizer, classnames, load_templates("simple"))
images = torch.rand(4, 3, model.image_size, model.image_size)
with torch.no_grad():
    probs = classifier(images).softmax(dim=-1)
frame = pd.DataFrame(probs.numpy(), columns=classnames).round(3)
frame

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), gridspec_kw={"width_ratios": [1, 2]})
axes[0].imshow(images[0].permute(1, 2, 0).numpy())
axes[0].set_title("input (random pixels)")
axes[0].axis("off")
axes[1].bar(classnames, probs[0].numpy(), color="tab:blue")
axes[1].set_ylabel("zero-shot probability")
axes[1].set_title(f"{model_name}, random init")
fig.tight_layout()
