"""Datasets: one registry for the mini world and the real zero-shot datasets."""
from .registry import DatasetSpec, fixed_subset, get_dataset, get_spec, list_datasets, load_classnames, register

__all__ = ["DatasetSpec", "fixed_subset", "get_dataset", "get_spec", "list_datasets", "load_classnames", "register"]
