"""Where the packaged data files live (model configs, templates, class names, synsets, trees, paper
numbers, profiles, claims): one constant, so a module's place in the package never changes a path."""
from pathlib import Path

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
