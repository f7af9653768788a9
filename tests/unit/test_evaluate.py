"""Scorecard on the tiny random Gemma 3: no edit scores zero, an adapter moves the after side
only, the weights are never written, and base and edited share passes without mixing."""

from __future__ import annotations

import pytest
import torch

from workbench.adapters import Adapter
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import next_tokens
from workbench.benchmark.schema import ProbePrompt
from workbench.benchmark.scorecard import EvalOptions, evaluate, measure, measure_each
from workbench.edits import EditSpec, compile_spec
from workbench.models.hashing import model_weights_sha256
from workbench.progress import NULL_PROGRESS, NullProgress

PLANTED_PROMPT = "The city of"
OPTIONS = EvalOptions(max_new_tokens=2, neutral_max_tokens=16, generation_tokens=3, kl_top_k=16)


@pytest.fixture(autouse=True)
def fresh_base_cache():  # type: ignore[no-untyped-def]
    """Every test measures its own base side: no test depends on which ran before it."""
    import workbench.benchmark.scorecard as ev

    ev._BASE_CACHE.clear()
    yield
    ev._BASE_CACHE.clear()


def _probe(bundle) -> ConceptProbe:
    others = ["A river in the north", "It was built in the year", "The king and the"]
    tops = next_tokens(bundle, others, ["x"] * len(others))
    # answers the base gets right: decode its own greedy token
    right = [ProbePrompt(prompt=p, answer="x") for p in others]
    right = [
        p.model_copy(update={"answer": bundle.tokenizer.decode([nt.top_id]).strip() or "x"})
        for p, nt in zip(right, tops, strict=True)
    ]
    return ConceptProbe(
        name="Planted",
        source="user",
        aliases=["Planted"],
        cloze=[ProbePrompt(prompt=PLANTED_PROMPT, answer="river", dependence="name-dependent")],
        questions=[ProbePrompt(prompt="Q: Where is the river?\nA:", answer="river")],
        neighbours=right[:2],
        general=right,
        others=right[1:],
        fact_paragraph="The city of river is a river city.",
        neutral_texts=[
            "The river flows through the city and into the sea.",
            "A second neutral text about farming.",
        ],
        generation_prompts=["The city of"],
    )


def strong_adapter(bundle) -> Adapter:
    spec = EditSpec.from_dict(
        {
            "name": "strong",
            "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256},
            "operations": [
                {"kind": "ablate_value_vectors", "layer": layer, "neurons": list(range(64)), "mode": "scale",
                 "scale": -20.0}
                for layer in range(bundle.n_layers)
            ],
        }
    )
    return compile_spec(spec, bundle)


def test_no_edit_scores_zero_and_an_edit_moves_only_the_after_side(tiny_bundle) -> None:
    probe = _probe(tiny_bundle)
    before_hash = model_weights_sha256(tiny_bundle.hf_model)
    plain = evaluate(tiny_bundle, probe, options=OPTIONS)
    edited = evaluate(tiny_bundle, probe, strong_adapter(tiny_bundle), options=OPTIONS)
    assert model_weights_sha256(tiny_bundle.hf_model) == before_hash

    # no edit: after == before, KL 0, a run that does not erase scores 0 with a FAIL verdict
    for row in plain.metrics:
        if row.metric != "mean KL(base||edited) neutral":
            assert row.after == pytest.approx(row.before, abs=1e-6, nan_ok=True), row.metric
    assert plain.metric("mean KL(base||edited) neutral").after == pytest.approx(0.0, abs=1e-6)
    assert plain.score == 0.0
    assert any(v.startswith("FAIL: the base model answers none") for v in plain.verdicts)

    # the edited rows ride in the same batches as the base rows and never leak into them
    for a, b in zip(plain.rows(), edited.rows(), strict=True):
        assert a["before"] == b["before"], a["metric"]
    assert edited.metric("mean KL(base||edited) neutral").after > 1e-4  # the random tiny model is nearly flat
    assert edited.metric("neutral perplexity").after != pytest.approx(edited.metric("neutral perplexity").before)
    assert any(p["before_continuation"] != p["after_continuation"] for p in edited.prompts)
    assert edited.to_json()  # serialisable


def test_same_pass_variants_equal_each_variant_alone(tiny_bundle) -> None:
    probe = _probe(tiny_bundle)
    ad = strong_adapter(tiny_bundle)
    progress = ListProgress()
    base, edited = measure_each(tiny_bundle, probe, (None, ad), OPTIONS, progress)
    assert progress.done == 4
    (alone,) = measure_each(tiny_bundle, probe, (ad,), OPTIONS)
    ref = measure(tiny_bundle, probe, OPTIONS).neutral_token_logprobs
    assert torch.allclose(ref, base.neutral_token_logprobs, atol=1e-4)
    assert torch.allclose(edited.neutral_token_logprobs, alone.neutral_token_logprobs, atol=1e-4)
    assert edited.generations == alone.generations
    for name, outs in edited.outcomes.items():
        for got, want in zip(outs, alone.outcomes[name], strict=True):
            assert got.answer_prob == pytest.approx(want.answer_prob, abs=1e-5)
            assert got.top_token == want.top_token


class ListProgress(NullProgress):
    """Counts the steps of the current stage."""

    def __init__(self) -> None:
        self.done = 0

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.done = 0

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n


def test_second_scorecard_reuses_the_base_side_and_agrees(tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.benchmark.scorecard as ev

    probe = _probe(tiny_bundle).model_copy(update={"name": "Cached"})
    ad = strong_adapter(tiny_bundle)
    ev._BASE_CACHE.clear()
    calls: list[int] = []
    real = ev.measure_each

    def counting(bundle, probe, variants, options=OPTIONS, progress=NULL_PROGRESS, reference=None):  # type: ignore[no-untyped-def]
        calls.append(len(variants) + (0 if reference is None else 10))
        return real(bundle, probe, variants, options, progress, reference)

    monkeypatch.setattr(ev, "measure_each", counting)
    first = evaluate(tiny_bundle, probe, ad, options=OPTIONS)
    second = evaluate(tiny_bundle, probe, ad, options=OPTIONS)
    assert calls == [2, 11]  # base + edited together, then the edited side against the cached base
    for a, b in zip(first.rows(), second.rows(), strict=True):
        assert a["before"] == b["before"], a["metric"]
        assert a["after"] == pytest.approx(b["after"], abs=1e-5, nan_ok=True), a["metric"]
    evaluate(tiny_bundle, probe, ad, options=EvalOptions(max_new_tokens=1, neutral_max_tokens=16,
                                                          generation_tokens=3, kl_top_k=16))
    assert calls[-1] == 2  # other options: measured afresh
