"""The dev benchmark file validates and its kept prompts are answered by the real base model."""

from __future__ import annotations

import pytest

from workbench.benchmark.devbench import DEVBENCH, load_devbench
from workbench.benchmark.probe import probe_from_corpus
from workbench.benchmark.runner import greedy_continuations, next_tokens
from workbench.benchmark.scoring import contains_any
from workbench.corpus import load_wiki

REQUIRED = ["Harry Potter", "Eiffel Tower", "Albert Einstein", "The Beatles", "Japan", "Association football"]
BROAD_KINDS = {"country", "city", "sport", "company"}


def test_devbench_file_validates_and_has_enough_prompts() -> None:
    bench = load_devbench(DEVBENCH)
    names = [c.name for c in bench.concepts]
    assert set(REQUIRED) <= set(names) and len(names) >= 8
    corpus = load_wiki("en")
    for c in bench.concepts:
        assert corpus.has(c.title), c.title
        assert len(c.cloze) >= 8, c.name
        assert len(c.questions) >= 4, c.name
        assert len(c.neighbours) >= 5, c.name
        assert len(c.fake_names) == 3 and c.fact_paragraph
        for p in c.cloze + c.questions:
            assert p.dependence in ("name-dependent", "cue-answerable", "name-free")
            assert (p.dependence == "name-free") == (not p.floor_correct)
        # one name-dependent prompt moves a concept's score by at most 1/12
        assert sum(p.dependence == "name-dependent" for p in c.cloze + c.questions) >= 12, c.name
    broad = [c for c in bench.concepts if c.kind in BROAD_KINDS]
    assert len(broad) >= 7 and {c.kind for c in broad} == BROAD_KINDS  # two countries, cities and sports; a company
    assert len(bench.general) >= 25
    assert bench.provenance.builder_command.startswith("python -m workbench.benchmark.build")


@pytest.mark.integration
def test_kept_prompts_are_answered_by_the_base_model(embedded_bundle) -> None:
    bench = load_devbench(DEVBENCH)
    assert bench.provenance.model_weights_sha256 == embedded_bundle.weights_sha256
    sample = [
        p for c in bench.concepts for p in c.cloze[:3] + c.questions[:1] + c.neighbours[:1]
    ] + bench.general[:8]
    nts = next_tokens(embedded_bundle, [p.prompt for p in sample], [p.answer for p in sample])
    by_cont = [i for i, p in enumerate(sample) if not p.base_first_token_correct]
    conts = dict(
        zip(
            by_cont,
            greedy_continuations(embedded_bundle, [sample[i].prompt for i in by_cont], 8),
            strict=True,
        )
    )
    for i, (p, nt) in enumerate(zip(sample, nts, strict=True)):
        if p.base_first_token_correct:
            assert nt.first_token_correct, p.prompt
            assert nt.answer_prob == pytest.approx(p.base_answer_prob, abs=2e-3)
        else:
            assert contains_any(conts[i], p.accepted), (p.prompt, conts[i])


@pytest.mark.integration
def test_probe_from_corpus_for_a_title_outside_the_benchmark(embedded_bundle) -> None:
    probe = probe_from_corpus(
        embedded_bundle, load_wiki("en"), "Mount Everest", n_cloze=6, n_neighbour_docs=4
    )
    assert probe.cloze and probe.general and probe.neutral_texts
    nts = next_tokens(embedded_bundle, [p.prompt for p in probe.cloze], [p.answer for p in probe.cloze])
    assert all(nt.first_token_correct for nt in nts)
