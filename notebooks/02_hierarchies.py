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
# # Building the hierarchies
#
# The paper aligns images with text at **every level of a class tree** — WordNet truncated to depth
# $L = 5$ for ImageNet, LLM-made trees for the 14 zero-shot sets — and over up to **5 trees** that share
# the same leaves. This chapter builds those trees with `hrvlm.hierarchy.trees` for the mini world and the 15
# datasets of the protocol (plus TinyImageNet, the `full` profile's training set). Class lists are data
# shipped with the library, so everything here runs offline, without a single image.
#
# **Level rule.** Level 0 is the class; level $l$ is its $l$-th ancestor, counted *up from the leaf*
# (the leaf-to-root path truncated to its $L$ nearest ancestors). A tree is a parent function, so the
# level-$(l{+}1)$ node is always the parent of the level-$l$ node: every level partitions the leaves. The
# root is the deepest node shared by all leaves; a chain that reaches it before level $L$ repeats it; a
# class WordNet lacks stands for itself at every level.
#
# **Forests.** WordNet is a DAG: `square.n.01` is both a `rectangle` and a `regular_polygon`. Tree $k$
# gives every synset its $(k \bmod n)$-th hypernym; trees with identical partitions at every level are
# kept once. Dataset-native groupings (CIFAR-100 superclasses, FGVC-Aircraft family → manufacturer,
# Stanford Cars make, Pets species) and curated trees (EuroSAT, DTD, PCAM) come from JSON files.

# %% tags=["parameters"]
profile = "mini"

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

from hrvlm.hierarchy import draw, trees as H
from hrvlm.profiles import get_profile

pd.set_option("display.width", 200)
pd.set_option("display.max_columns", 20)
sizes = get_profile(profile).book
MINI = ["mini-pretrain", "mini-colours"]
real = sizes["hierarchy_datasets"]
datasets = MINI + (list(H.REAL_DATASETS) if real == "all" else list(real))

# %% [markdown]
# ## The mini world
# Its classes (letters, digits, marks and plane figures; colours) are WordNet synsets named in the
# class-name files, and go through exactly the same code as the real datasets. The forest starts with the
# curated `mini-world` tree (the analogue of the paper's LLM-made trees; see the mini-world chapter) and
# continues with WordNet's own trees: WordNet gives more than one because some synsets have two parents
# (`square` is both a rectangle and a regular polygon), then with two further curated trees (what a symbol
# is for; how it is drawn) that bring it to the five trees HRVLM can sum over.

# %%
shapes = H.forest_for_dataset("mini-pretrain")
print(shapes)
draw.draw_forest(shapes)
plt.show()

# %%
colours = H.forest_for_dataset("mini-colours")
draw.draw_tree(colours[0])
plt.show()

# %% [markdown]
# ## Coverage and depth statistics
# `coverage` is the share of classes with a WordNet synset (wnids for ImageNet and TinyImageNet, a
# versioned disambiguation table for the others; unmapped classes carry a reason). `wordnet_depth_*` is
# the length of a leaf's first-hypernym chain up to `entity`; `classes_per_level` is for the first tree;
# `padded_leaves` counts leaves whose chain ran out before level 5.

# %%
table = H.coverage_table(datasets)
table

# %% [markdown]
# Classes left without a synset, with the reason, for one dataset:

# %%
missing = H.coverage(sizes["coverage_example"])["missing"]
pd.Series(missing, name="reason").to_frame().head(10)

# %% [markdown]
# ## The trees of each dataset
# Where the trees come from: WordNet variants first when at least half of the classes are in WordNet,
# otherwise the dataset's tree files first.

# %%
rows = []
for name in datasets:
    for tree in H.forest_for_dataset(name):
        rows.append({"dataset": name, "tree": tree.name, "source": tree.provenance.get("source", ""),
                     "classes per level": "-".join(str(len(level)) for level in tree.nodes)})
pd.DataFrame(rows)

# %% [markdown]
# ## Drawn examples
# One tree per dataset, restricted to its first 24 classes so that the labels stay readable.

# %%
for name in datasets[2:]:
    forest = H.forest_for_dataset(name)
    draw.draw_tree(forest[0], leaves=range(min(24, len(forest.leaves))))
    plt.show()

# %% [markdown]
# ## Prompts and HNSA negatives
# Each level has its own prompts (the template with the ancestor's first lemma). HNSA adds, as negatives
# of a class $c$ at level $l$, the classes of levels $l-1$ and $l+1$ that share no edge with $c$.

# %%
tree = H.forest_for_dataset("cifar10")[0]
print(tree.prompts(2, "a photo of a {c}."))
neg = H.hnsa_negatives(tree, 2)
c = 0
lower, upper = neg.of(c)
print(f"{tree.names[2][c]!r}: children {[tree.names[1][k] for k in range(len(tree.nodes[1])) if tree.parents(1)[k] == c]}, "
      f"parent {tree.names[3][tree.parents(2)[c]]!r}")
print("negatives below:", [tree.names[1][k] for k in lower])
print("negatives above:", [tree.names[3][k] for k in upper])

# %% [markdown]
# ## Bring your own tree
# The paper made its zero-shot trees with ChatGPT-4o; ours are WordNet, dataset-native or hand-curated
# (each file says which in its `provenance`). Any tree in the format below — for instance one an LLM
# wrote — plugs in with `load_tree_file`, and a file declaring `"dataset"` placed in
# `hrvlm/resources/trees/` joins that dataset's forest:
#
# ```text
# {"format": "hrvlm-tree/1", "name": "my-tree", "dataset": "cifar10",
#  "provenance": {"source": "ChatGPT-4o, prompt ...", "checked_by": "..."},
#  "leaves": ["airplane", "automobile", ...],
#  "parents": {"airplane": "aircraft", "aircraft": "vehicle", ...},
#  "names": {"aircraft": "aircraft"}}
# ```
#
# A node with two parents, a cycle, or a missing class is refused with a message naming it.

# %%
import json
import tempfile

spec = json.loads((H.TREE_DIR / "cifar10-animals-vehicles.json").read_text())
spec["parents"].update({"animal": "vehicle", "vehicle": "animal"})  # a cycle
with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
    json.dump(spec, f)
try:
    H.load_tree_file(f.name)
except H.HierarchyError as err:
    print("refused:", err)
