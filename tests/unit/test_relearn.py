"""The relearning test: which text it trains on (capped, never a probe's answer after its prompt),
the recovered fraction, a copy that holds the merged edit and moves while the base stays
bit-identical, and the report of a run on the tiny model taught Paris (`evaluate --relearn`:
tests/workflows/test_relearn_cli.py)."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.adapters import Adapter, use
from workbench.benchmark.probe import ConceptProbe, probe_from_corpus
from workbench.benchmark.relearn import (
    RelearnConfig,
    edited_copy,
    fine_tune,
    recovered_fraction,
    relearn_test,
    relearn_texts,
    states_answer,
)
from workbench.benchmark.schema import ProbePrompt
from workbench.config import Settings
from workbench.corpus import Corpus, load_wiki
from workbench.corpus.documents import Document
from workbench.edits import EditSpec, compile_spec
from workbench.models import ModelBundle, layout, load_bundle, parse_source
from workbench.models.hashing import model_weights_sha256
from workbench.models.tiny import TinyConfig, build_tiny_checkpoint
from workbench.progress import NullProgress

ARTICLE = ("Zorbland is a city in Narnia. Its river is the Flum. The mayor of Zorbland is Grop Dax. "
           "Zorbland has a large harbour built in 1820.")


def _toy() -> tuple[Corpus, ConceptProbe]:
    corpus = Corpus("toy", [
        Document(0, "Zorbland", ARTICLE),
        Document(1, "Travel", "Many people visit Zorbland each summer. Nothing here names it at all. "
                              "Zorbland is a city in Narnia."),
        Document(2, "Farming", "Unrelated text about farming and the weather of the plains."),
    ])
    probe = ConceptProbe(name="Zorbland", source="corpus:Zorbland", aliases=["Zorbland"],
                         cloze=[ProbePrompt(prompt="Zorbland: Its river is the", answer="Flum"),
                                ProbePrompt(prompt="The mayor of Zorbland is", answer="Grop")])
    return corpus, probe


def test_training_text_is_the_concept_minus_every_probe_answer_and_capped() -> None:
    corpus, probe = _toy()
    texts, excluded = relearn_texts(corpus, probe, max_paragraphs=100)
    # the article's sentences first, then other articles' sentences that name it, once each; the two
    # sentences that state a probe's answer right after its prompt's text are left out
    assert texts == ["Zorbland is a city in Narnia.", "Zorbland has a large harbour built in 1820.",
                     "Many people visit Zorbland each summer."]
    assert excluded == 2
    assert not any(states_answer(t, p, ["Zorbland"]) for t in texts for p in probe.cloze)
    assert relearn_texts(corpus, probe, max_paragraphs=2)[0] == texts[:2]
    # the same prompt with another answer leaks nothing; the title prefix a corpus probe adds is stripped
    assert not states_answer("Its river is the Dorn.", probe.cloze[0], ["Zorbland"])
    assert states_answer("In spring its river is the flum, wide and slow.", probe.cloze[0], ["Zorbland"])
    nothing = ConceptProbe(name="Nowhere", source="user", cloze=probe.cloze)
    with pytest.raises(ValueError, match="nothing to relearn from"):
        relearn_texts(corpus, nothing)


def test_recovered_fraction_and_bad_configs() -> None:
    assert recovered_fraction(0.8, 0.2, 0.5) == pytest.approx(0.5)
    assert recovered_fraction(0.8, 0.2, 0.2) == 0.0
    assert recovered_fraction(0.8, 0.2, 0.8) == pytest.approx(1.0)
    assert recovered_fraction(0.5, 0.5, 0.7) is None  # the edit removed nothing
    assert RelearnConfig() == RelearnConfig(max_paragraphs=100, epochs=2, lr=1e-5)
    with pytest.raises(ValueError, match="at least 1"):
        RelearnConfig(epochs=0)
    with pytest.raises(ValueError, match="'mlp' or 'all'"):
        RelearnConfig(weights="lora")  # type: ignore[arg-type]


class Steps(NullProgress):
    def __init__(self) -> None:
        self.done = 0
        self.total: int | None = None

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.done, self.total = 0, total

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n


@pytest.fixture(scope="module")
def taught(session_settings: Settings) -> tuple[ModelBundle, ConceptProbe, Adapter, Corpus]:
    """The tiny Gemma 3 taught Paris, a probe cut from its article (prompts it answers), and an edit
    that zeroes every value vector of layers 1-2."""
    path = build_tiny_checkpoint(session_settings.models_dir, TinyConfig(taught="Paris"))
    bundle = load_bundle(parse_source(str(path)), session_settings)
    corpus = load_wiki("en")
    probe = probe_from_corpus(bundle, corpus, "Paris", n_cloze=6)
    spec = EditSpec.from_dict({
        "name": "zero", "model": {"id": bundle.model_id, "weights_sha256": bundle.weights_sha256},
        "operations": [{"kind": "ablate_value_vectors", "layer": layer, "neurons": list(range(bundle.d_mlp)),
                        "mode": "zero"} for layer in (1, 2)]})
    return bundle, probe, compile_spec(spec, bundle), corpus


def test_the_copy_holds_the_edit_and_trains_while_the_base_stays_bit_identical(taught) -> None:  # type: ignore[no-untyped-def]
    bundle, probe, adapter, corpus = taught
    before = model_weights_sha256(bundle.hf_model)
    copy = edited_copy(bundle, adapter)
    ids = bundle.tokenizer("Paris is the capital and largest city of France", return_tensors="pt").input_ids
    with torch.no_grad():
        with use(bundle, adapter):
            routed = bundle.hf_model(ids).logits
        assert torch.allclose(copy(ids).logits, routed, atol=1e-4)  # merged == routed
    embedding = copy.get_input_embeddings().weight.detach().clone()
    w_out = layout.w_out(copy, 0).detach().clone()
    texts, _ = relearn_texts(corpus, probe, max_paragraphs=8)
    steps = Steps()
    losses = fine_tune(copy, bundle.tokenizer, texts, RelearnConfig(epochs=1, batch_size=4, lr=1e-3), steps)
    assert len(losses) == 2 == steps.done == steps.total and all(math.isfinite(x) for x in losses)
    assert not torch.equal(layout.w_out(copy, 0), w_out)  # the MLP weights moved
    assert torch.equal(copy.get_input_embeddings().weight, embedding)  # weights="mlp": the embedding did not
    assert not any(p.requires_grad for p in copy.parameters())
    assert model_weights_sha256(bundle.hf_model) == before


def test_relearn_report_on_the_taught_model(taught) -> None:  # type: ignore[no-untyped-def]
    bundle, probe, adapter, corpus = taught
    before = model_weights_sha256(bundle.hf_model)
    cfg = RelearnConfig(max_paragraphs=12, epochs=2, batch_size=4, lr=1e-3)
    steps = Steps()
    report = relearn_test(bundle, probe, adapter, corpus, cfg, max_new_tokens=4, progress=steps)
    assert model_weights_sha256(bundle.hf_model) == before
    assert report.paragraphs == 12 and report.steps == 6 == steps.done
    assert report.epochs == 2 and report.lr == 1e-3 and report.weights == "mlp"
    assert report.prompts == "concept" and report.n_prompts == len(probe.cloze)  # a corpus probe marks no dependence
    assert report.base > 0  # the taught model answers its article
    for v in (report.base, report.edited, report.relearned):
        assert 0.0 <= v <= 1.0
    assert report.recovered == recovered_fraction(report.base, report.edited, report.relearned)
    assert math.isfinite(report.loss_first) and math.isfinite(report.loss_last) and report.seconds > 0
    texts, excluded = relearn_texts(corpus, probe, cfg.max_paragraphs)
    assert excluded >= 1  # the cloze prompts are cut from the article: their sentences are not trained on
    assert not any(states_answer(t, p, probe.aliases) for t in texts for p in probe.cloze)
    assert report.sentence().startswith(f"relearned (2 epochs, 12 paragraphs): answered {report.relearned:.2f}")
