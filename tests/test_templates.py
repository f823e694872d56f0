"""Evaluation prompts as data: each dataset's default (TeCoA-style) set and CLIP_benchmark's ensembles, with sources."""
import json

import pytest

from hrvlm.data import get_spec
from hrvlm.profiles import get_profile
from hrvlm.data.templates import TEMPLATE_DIR, load_templates

# Template counts per dataset in CLIP_benchmark's en_zeroshot_classification_templates.json.
CLIP_BENCHMARK_COUNTS = {"imagenet": 80, "cifar10": 18, "cifar100": 18, "caltech101": 34, "stanford_cars": 8, "dtd": 8,
                         "eurosat": 3, "fgvc_aircraft": 2, "pcam": 2, "sun397": 2, "stl10": 2, "food101": 1,
                         "oxford_pets": 1, "flowers102": 1}


@pytest.mark.parametrize("dataset", get_profile("full").eval_datasets)
def test_each_real_dataset_defaults_to_its_tecoa_style_set_with_a_source(dataset):
    spec = get_spec(dataset)
    document = json.loads((TEMPLATE_DIR / f"{spec.templates}.json").read_text())
    assert "TeCoA" in document["source"] and document["templates"] == load_templates(spec.templates)
    assert len(document["templates"]) == 1


@pytest.mark.parametrize("dataset,count", sorted(CLIP_BENCHMARK_COUNTS.items()))
def test_clip_benchmark_sets_are_selectable_by_name_per_dataset(dataset, count):
    templates = load_templates("clip_benchmark", dataset=dataset)
    assert len(templates) == count == len(set(templates))
    document = json.loads((TEMPLATE_DIR / "clip_benchmark" / f"{dataset}.json").read_text())
    assert "CLIP_benchmark" in document["source"] and "MIT" in document["source"]
    assert load_templates(f"clip_benchmark/{dataset}") == templates  # the same set by its full name


def test_clip_benchmark_differs_from_the_default_where_the_protocols_differ():
    differ = [d for d in CLIP_BENCHMARK_COUNTS if load_templates("clip_benchmark", dataset=d) != load_templates(d)]
    assert {"cifar10", "imagenet", "dtd", "stanford_cars", "pcam"} <= set(differ)
    assert "food101" not in differ  # both protocols use "a photo of {c}, a type of food."


def test_a_dataset_without_a_clip_benchmark_set_is_a_clear_error():
    with pytest.raises(KeyError, match="no templates for 'caltech256'.*default set"):
        load_templates("clip_benchmark", dataset="caltech256")
    with pytest.raises(KeyError, match="clip_benchmark \\(per dataset\\)"):
        load_templates("clip_benchmark")  # a family needs the dataset
