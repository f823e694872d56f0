"""Heads and methods are filed by name through one decorator (`hrvlm.core.registry.registrar`)."""
from __future__ import annotations

import pytest

from hrvlm.heads import HEADS, CosineHead, register_head
from hrvlm.methods import METHODS, Method, register_method
from hrvlm.core.registry import registrar


def test_a_registrar_files_the_class_and_names_it():
    table = {}
    register = registrar(table, "kind", "a widget")

    @register("round")
    class Round:
        pass

    assert table == {"round": Round} and Round.kind == "round"
    assert register("round")(Round) is Round  # the same class again: a re-import, allowed
    with pytest.raises(ValueError, match=r"a widget 'round' is registered already \(.*Round\)"):
        register("round")(type("Other", (), {}))
    assert table["round"] is Round


def test_heads_and_methods_refuse_a_second_class_under_a_taken_name():
    assert HEADS["cosine"] is CosineHead and CosineHead.kind == "cosine"
    with pytest.raises(ValueError, match="a head kind 'cosine' is registered already"):
        register_head("cosine")(type("Impostor", (CosineHead,), {}))
    tecoa = METHODS["tecoa"]
    assert tecoa.name == "tecoa"
    with pytest.raises(ValueError, match="a method 'tecoa' is registered already"):
        register_method("tecoa")(type("Impostor", (Method,), {}))
    assert HEADS["cosine"] is CosineHead and METHODS["tecoa"] is tecoa
