"""Datasets: one registry for the mini world and the real zero-shot datasets."""
from hrvlm.data.registry import (PAPER_DATASETS, DatasetSpec, default_num_workers, fixed_subset, get_dataset, get_spec, list_datasets,
                       load_classnames, register)

__all__ = ["PAPER_DATASETS", "DatasetSpec", "default_num_workers", "fixed_subset", "get_dataset", "get_spec", "list_datasets",
           "load_classnames", "register"]
