"""The method registry: registering a method is one call, and everything that lists or runs
methods (erase(), the Erase page's options, the strength search) picks it up from there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import pytest

from workbench.edits.spec import AblateValueVectors
from workbench.methods.erase import METHODS, AblateConfig, EraseOptions, MethodRun, RowCandidate, erase
from workbench.methods.facts import Fact, FactSet
from workbench.methods.registry import Method, StrengthKnob, register, unregister
from workbench.methods.strength import search_strength
from workbench.progress import Progress
from workbench.ui.erase import method_choices, method_help, method_label

TOY, PLAIN = "toy-zero-row", "toy-no-strength"


def _toy_run(bundle: Any, corpus: Any, facts: FactSet, opts: EraseOptions, progress: Progress) -> MethodRun:
    """Zero row 0 of layer 1: an operation and a candidate, no model needed."""
    return MethodRun([AblateValueVectors(layer=1, neurons=[0])], candidates=[RowCandidate(1, 0, 1.0, "toy")])


def _double_rows(opts: EraseOptions, level: float) -> EraseOptions:
    return replace(opts, ablate=replace(opts.ablate, n_rows=round(opts.ablate.n_rows * level)))


@pytest.fixture
def toys() -> Iterator[None]:
    """Two toy methods, one with a strength knob, removed again after the test."""
    register(Method(TOY, _toy_run, "Toy zero row", "Zeroes one of {ablate_rows} rows.",
                    strength=StrengthKnob("toy rows", _double_rows)))
    register(Method(PLAIN, _toy_run, "Toy without strength", "Zeroes one row."))
    try:
        yield
    finally:
        unregister(TOY)
        unregister(PLAIN)
    assert TOY not in METHODS and PLAIN not in METHODS


def _bundle() -> Any:
    """What erase() reads of a bundle when the fact set is given and nothing is scored."""
    return SimpleNamespace(model_id="toy-model", weights_sha256="0" * 64, tokenizer=None, n_layers=18)


def test_a_registered_method_runs_through_erase(toys: None) -> None:
    facts = FactSet("Toy concept", "Toy", "work", [Fact("Toy is a toy.", "user")])
    result = erase(_bundle(), None, "Toy concept", TOY, fact_set=facts,  # type: ignore[arg-type]
                   options=EraseOptions(score=False))
    assert [op.kind for op in result.spec.operations] == ["ablate_value_vectors"]
    assert TOY in result.spec.name and result.candidates[0].evidence == "toy"


def test_a_registered_method_is_offered_on_the_erase_page(toys: None) -> None:
    assert method_choices()[-2:] == [TOY, PLAIN]  # registration order
    assert method_label(TOY) == "Toy zero row"
    assert method_help(TOY).startswith(f"Zeroes one of {AblateConfig().n_rows} rows. ")  # from the configs


def test_the_strength_search_names_registered_methods_with_and_without_a_knob(toys: None) -> None:
    with pytest.raises(ValueError, match="no strength to search") as err:
        search_strength(_bundle(), None, "Toy concept", PLAIN)  # type: ignore[arg-type]
    sentence = str(err.value)
    assert repr(PLAIN) in sentence and TOY in sentence.split("searchable:")[1]
    assert PLAIN not in sentence.split("searchable:")[1]


def test_registering_is_one_call_and_a_taken_name_is_refused() -> None:
    def other(*args: Any) -> MethodRun:
        raise AssertionError("never run")

    other.__module__ = "somewhere.else"
    with pytest.raises(ValueError, match="already registered"):
        register(Method("ablate", other, "Another ablate", "Another."))
    assert METHODS["ablate"].run is not other
    with pytest.raises(ValueError, match="Unknown erasure method"):
        erase(_bundle(), None, "Toy concept", TOY)  # type: ignore[arg-type]


def test_every_method_names_where_its_settings_live() -> None:
    """A method is one registered object with its config: config_of gives the frozen settings
    it runs with, its own default where the options leave the field unset."""
    import dataclasses

    from workbench.methods.erase import DEFAULT_OPTIONS, METHODS, REWRITE_CF, REWRITE_NULL, EraseOptions
    from workbench.methods.key_rewrite import RewriteConfig

    fields = {f.name for f in dataclasses.fields(EraseOptions)}
    for name, method in METHODS.items():
        assert method.config in fields, (name, method.config)
        cfg = method.config_of(DEFAULT_OPTIONS)
        assert dataclasses.is_dataclass(cfg) and type(cfg).__dataclass_params__.frozen, name  # type: ignore[attr-defined]
    assert METHODS["rewrite-cf"].config_of(DEFAULT_OPTIONS) is REWRITE_CF
    assert METHODS["rewrite-null"].config_of(DEFAULT_OPTIONS) is REWRITE_NULL
    mine = RewriteConfig(steps=3)
    given = dataclasses.replace(DEFAULT_OPTIONS, rewrite=mine)
    assert all(METHODS[m].config_of(given) is mine for m in ("rewrite", "rewrite-cf", "rewrite-null"))
