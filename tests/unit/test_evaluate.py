"""Scorecard on the tiny random Gemma 3: a context that plants an answer changes the after side,
the before side stays equal, the weights come back, and the base side is cached."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch

import workbench.evaluate as ev
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import answer_token_ids, next_tokens
from workbench.benchmark.schema import ProbePrompt
from workbench.evaluate import EvalOptions, evaluate
from workbench.progress import NullProgress

PLANTED_PROMPT = "The city of"
OPTIONS = EvalOptions(max_new_tokens=2, neutral_max_tokens=16, generation_tokens=3, kl_top_k=16)


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


@contextmanager
def plant(bundle, prompt: str, answer: str) -> Iterator[None]:
    """Point the (tied) embedding row of the answer's first token along the prompt's final
    hidden state, so it becomes the greedy next token; always restore."""
    tok = bundle.tokenizer
    t = answer_token_ids(tok, answer)[0]
    emb = bundle.hf_model.get_input_embeddings().weight
    saved = emb[t].clone()
    with torch.no_grad():
        h = bundle.hf_model.model(**tok(prompt, return_tensors="pt")).last_hidden_state[0, -1]
        emb[t] = h / h.norm() ** 2 * 50.0  # logit ~50 after the prompt
    try:
        yield
    finally:
        with torch.no_grad():
            emb[t] = saved


def test_planting_context_moves_after_side_only(tiny_bundle) -> None:
    probe = _probe(tiny_bundle)
    emb_before = tiny_bundle.hf_model.get_input_embeddings().weight.clone()
    plain = evaluate(tiny_bundle, probe, options=OPTIONS)
    planted = evaluate(
        tiny_bundle, probe, edit_context=lambda: plant(tiny_bundle, PLANTED_PROMPT, "river"), options=OPTIONS
    )
    assert torch.equal(tiny_bundle.hf_model.get_input_embeddings().weight, emb_before)

    # no edit: after == before, KL 0, a run that does not erase scores 0 with a FAIL verdict
    for row in plain.metrics:
        if row.metric != "mean KL(base||edited) neutral":
            assert row.after == pytest.approx(row.before, abs=1e-6, nan_ok=True), row.metric
    assert plain.metric("mean KL(base||edited) neutral").after == pytest.approx(0.0, abs=1e-6)
    assert plain.score == 0.0
    assert any(v.startswith("FAIL: the base model answers none") for v in plain.verdicts)

    # planted: the planted prompt flips from wrong to right; before numbers unchanged
    ft = planted.metric("concept first-token acc")
    assert ft.before == plain.metric("concept first-token acc").before
    assert ft.before < 1.0 and ft.after > ft.before
    assert planted.prompts[0]["before_answered"] is False or planted.prompts[0]["before_prob"] < 0.5
    assert planted.prompts[0]["after_prob"] > 0.99
    assert planted.metric("mean KL(base||edited) neutral").after >= 0.0
    for a, b in zip(plain.rows(), planted.rows(), strict=True):
        assert a["before"] == b["before"], a["metric"]
    assert planted.to_json()  # serialisable


class ListProgress(NullProgress):
    """Counts the steps of the current stage."""

    def __init__(self) -> None:
        self.done = 0

    def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
        self.done = 0

    def advance(self, n: int = 1, **info: object) -> None:
        self.done += n


def test_base_side_is_cached(tiny_bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = _probe(tiny_bundle).model_copy(update={"name": "Cached"})
    calls: list[bool] = []
    real = ev.measure

    def counting(bundle, probe, options=OPTIONS, base=None, progress=None):
        calls.append(base is None)
        return real(bundle, probe, options, base=base, progress=progress)

    monkeypatch.setattr(ev, "measure", counting)
    evaluate(tiny_bundle, probe, options=OPTIONS)
    progress = ListProgress()
    evaluate(tiny_bundle, probe, options=OPTIONS, progress=progress)
    assert calls.count(True) <= 1  # base measured at most once (maybe cached by the other test)
    assert calls.count(False) == 2
    assert progress.done == 8  # the cached base side counts as done, then the edited side
