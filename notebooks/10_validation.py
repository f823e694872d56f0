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
# # Validation: checks a reader can rerun, and real handwriting
#
# Every number in this book comes from the library's own attacks, geometry and class lists. This
# chapter puts them beside independent implementations, each comparison a row with its tolerance,
# fixed before measuring, and its verdict; **a failing row fails the build** (the last cell of the
# first part raises). Then it leaves the mini world: zero-shot accuracy, clean and under attack, on
# 1,797 real handwritten digits.
#
# * **Attacks** beside [torchattacks](https://github.com/Harry24k/adversarial-attacks-pytorch) on the
#   same classifier and images: PGD with no random start and from the *same* random start (share of
#   identical adversarial images, robust accuracy of each), and our own APGD-CE and APGD-DLR, the
#   components of AutoAttack's TeCoA version, beside torchattacks' APGD (robust accuracy within
#   sampling noise, since their random starts differ).
# * **Geometry** beside [geoopt](https://github.com/geoopt/geoopt)'s κ-stereographic functions
#   (κ = −c): errors in float32 and float64 against geoopt in float64, and what happens at and past
#   the ball's boundary.
# * **Theorem 1**'s quantities against their closed forms and limits.
# * **Class lists** against the metadata torchvision ships in its package.
#
# The logic is `hrvlm/book/validation.py`; this chapter only calls and shows it.

# %% tags=["parameters"]
profile = "mini"  # "smoke" (CI), "mini" (default), "full" (GPU, real data)
n = None  # digits per evaluation (fixed subset); None: the profile's book.eval_n
eps_multiple = 1  # ε of the transfer's PGD as a multiple of the profile's ε unit
attack_steps = 20  # PGD steps of the transfer evaluation (the main table's)
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
from IPython.display import Markdown, display

from hrvlm.book import experiments as ex
from hrvlm.book import validation
from hrvlm.data import get_dataset, get_spec
from hrvlm.data.digits import border
from hrvlm.profiles import get_profile

prof = get_profile(profile)
rows = validation.validation_rows(profile, n=n, seed=seed)
table = validation.rows_frame(rows)
counts = table["status"].value_counts()
Markdown(f"Profile `{profile}`: **{counts.get('pass', 0)} rows pass, {counts.get('FAIL', 0)} fail, "
         f"{counts.get('skipped', 0)} skipped** (a skipped row says why its reference is not available here).")

# %% [markdown]
# ## Attacks beside torchattacks
#
# The classifier is the profile's pretrained CLIP with the cosine zero-shot head on the handwritten
# digits below (the mini templates), at ε = 1 unit of the profile; PGD takes 10 steps of ε/4, APGD the
# book's AutoAttack iterations. "Identical" means every pixel within 1e-6.

# %%
table[table["area"] == "attacks"].drop(columns="area")

# %% [markdown]
# ## Geometry beside geoopt
#
# Relative errors $|x - x_\mathrm{geoopt}| / (1 + |x_\mathrm{geoopt}|)$ of 256 random points with
# tangent norms log-spread over [0.01, 2] at c = 1, against geoopt in float64 (the projection, whose
# radius $(1-\epsilon)/\sqrt c$ depends on the dtype by design, against geoopt in the same dtype).
# At and past the boundary (radii 0.999 to 2): values and gradients must stay finite and projected
# points strictly inside.

# %%
table[table["area"] == "geometry"].drop(columns="area")

# %% [markdown]
# ## Theorem 1 and class lists

# %%
table[table["area"].isin(["theory", "class names"])]

# %%
validation.require_pass(rows)  # a failing row stops the build here, naming the rows
Markdown("Every checked row passed.")

# %% [markdown]
# ## Real handwriting: the UCI digits
#
# scikit-learn ships the UCI *Optical Recognition of Handwritten Digits* test set (Alpaydin & Kaynak,
# 1998; CC BY 4.0): 1,797 scans reduced to 8×8 grey levels, 10 balanced classes, nothing to download.
# It is registered as `uci-digits` (`hrvlm data list`). Each image is drawn as dark ink on white
# paper, upscaled bilinearly to the model's resolution less a white border of 1/16 of the side
# (`hrvlm/data/digits.py`). The mini world's tiny CLIP has seen digits only as rendered glyphs, so
# its zero-shot accuracy here says how far the mini world carries to real images; under `full`
# the same images are upscaled to 224 px.

# %%
spec = get_spec("uci-digits")
Markdown(f"{spec.description}. Classes: {', '.join(spec.classnames)}; template set `{spec.templates}`; "
         f"border {border(32)} px at 32 px, {border(224)} px at 224 px.")

# %%
import matplotlib.pyplot as plt

shown = get_dataset("uci-digits", image_size=32)
fig, axes = plt.subplots(1, 10, figsize=(10, 1.3))
for digit, ax in enumerate(axes):
    index = int((shown.labels == digit).nonzero()[0])
    ax.imshow(shown[index][0].permute(1, 2, 0).numpy())
    ax.set_title(shown.classnames[digit], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# Each method's run is the book's cached run (the main table's, `hrvlm/book/experiments.py`): nothing is
# trained anew if the earlier chapters ran. Clean accuracy and PGD accuracy (the main table's
# attack) on the same fixed subset of digits, with 95 % Wilson intervals, beside the majority
# baseline of the evaluated labels and chance.

# %%
setting = ex.chapter_setting(profile, datasets=["uci-digits"], n=n, seeds=[seed])
runs = ex.train_variants(setting)
pgd = ex.attack("pgd", profile, eps_multiple, steps=attack_steps)
results = {v.label: records for v, records in
           ex.evaluate_runs(runs, profile, [pgd], ["uci-digits"], n=setting.n).items()}
transfer = validation.digits_transfer(results)
transfer.round(1) if not transfer.empty else Markdown(setting.absent("Nothing was evaluated"))

# %%
if not transfer.empty:
    pretrained, fine_tuned = transfer.iloc[0], transfer.iloc[1:]
    display(Markdown(
        f"On {int(pretrained['n'])} real digits the pretrained model ({transfer.index[0]}) reads "
        f"{pretrained['clean (%)']:.1f} % clean (95 % interval {pretrained['clean 95 % interval']}) against a "
        f"majority baseline of {pretrained['majority (%)']:.1f} % and chance {pretrained['chance (%)']:.0f} %, and "
        f"{pretrained['robust (%)']:.1f} % under PGD ({pretrained['robust 95 % interval']}). "
        + (f"Among the fine-tuned models the best clean accuracy is {fine_tuned['clean (%)'].idxmax()}'s, "
           f"{fine_tuned['clean (%)'].max():.1f} %, and the best robust accuracy "
           f"{fine_tuned['robust (%)'].idxmax()}'s, {fine_tuned['robust (%)'].max():.1f} %; intervals that "
           "overlap do not separate two methods." if len(fine_tuned) else "")))
