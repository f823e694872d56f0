"""Prompt templates as data: each set is a JSON list of strings with one ``{c}`` placeholder, stored in
``hrvlm/resources/templates`` (CLIP_benchmark's convention), or a file the user names."""
from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Sequence

from hrvlm.core.resources import RESOURCES

TEMPLATE_DIR = RESOURCES / "templates"


def load_templates(name: str, dataset: str | None = None) -> list[str]:
    """Templates named ``name`` (a file in ``resources/templates``) or read from a JSON file path.

    A file holds a list of strings, or ``{"source": ..., "templates": [...]}`` saying where they come
    from.  A name that is a folder of per-dataset sets (``clip_benchmark``: CLIP_benchmark's ensembles)
    takes that folder's set for ``dataset``.
    """
    path = Path(name) if name.endswith(".json") else TEMPLATE_DIR / f"{name}.json"
    family = TEMPLATE_DIR / name
    if not path.is_file() and family.is_dir() and dataset is not None:
        path = family / f"{dataset}.json"
        if not path.is_file():
            have = sorted(p.stem for p in family.glob("*.json"))
            raise KeyError(f"template set {name!r} has no templates for {dataset!r} (it has {have}); "
                           f"use the dataset's default set instead")
    if not path.is_file():
        known = sorted(p.stem for p in TEMPLATE_DIR.glob("*.json")) + sorted(
            f"{p.name} (per dataset)" for p in TEMPLATE_DIR.iterdir() if p.is_dir())
        raise KeyError(f"no template set {name!r}; known: {known}, or pass a path to a JSON list of strings")
    try:
        templates = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"template file {path} is not a UTF-8 text file; give a JSON list of strings such as "
                         f'["a photo of a {{c}}."]') from None
    except json.JSONDecodeError as err:
        raise ValueError(f"template file {path} is not JSON ({err.msg} at line {err.lineno}); give a JSON list of "
                         f'strings such as ["a photo of a {{c}}."]') from None
    if isinstance(templates, dict):
        templates = templates.get("templates")
    check_templates(templates, where=f"template file {path}: ")
    return templates


def check_templates(templates: Sequence[str], where: str = "") -> None:
    """A template is a string with exactly one ``{c}`` field (filled by ``str.format(c=name)``) and no
    other field, conversion or format spec: ``{x}``, ``{0}``, ``{c.__class__}``, ``{c!r}`` and a second
    ``{c}`` are refused here, before any model loads, not when the first prompt is built."""
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)) or not templates:
        raise ValueError(f"{where}templates must be a non-empty list of strings, e.g. ['a photo of a {{c}}.']")
    for template in templates:
        if not isinstance(template, str):
            raise ValueError(f"{where}every template must be a string, got {template!r}")
        try:
            fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                      if name is not None]
        except ValueError as err:  # an unmatched brace
            raise ValueError(f"{where}template {template!r} is not a format string ({err}); write literal braces "
                             f"as {{{{ and }}}}") from None
        if fields != [("c", "", None)]:
            found = ["{" + n + ("!" + v if v else "") + (":" + f if f else "") + "}" for n, f, v in fields]
            raise ValueError(f"{where}template {template!r} must have exactly one {{c}} placeholder (the class name) "
                             f"and no other field; it has {found or 'none'}")
