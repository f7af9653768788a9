"""One erasure on the real model: its concept's answer probability falls, unrelated prompts keep
their greedy answers, and the spec + payload round-trip and re-apply bit-exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.corpus import load_wiki
from workbench.edits.compile import compile_spec
from workbench.edits.spec import load_spec, save_spec
from workbench.methods.erase import EraseOptions, erase
from workbench.methods.optimise import OptimiseConfig

pytestmark = pytest.mark.integration

CONCEPT = [("Harry Potter's best friends are Ron and", " Hermione"), ("Harry Potter is a student at", " Hogwarts")]
UNRELATED = ["The capital of France is", "Water is made of hydrogen and", "The largest planet in the Solar System is",
             "The Lord of the Rings was written by J. R. R."]


def _answer_prob(bundle, prompt: str, answer: str) -> float:
    ids = bundle.tokenizer(prompt, return_tensors="pt").input_ids
    target = bundle.tokenizer(answer, add_special_tokens=False).input_ids[0]
    with torch.no_grad():
        return float(bundle.hf_model(ids).logits[0, -1].softmax(-1)[target])


def _greedy(bundle, prompt: str) -> int:
    ids = bundle.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        return int(bundle.hf_model(ids).logits[0, -1].argmax())


def test_erasure_lowers_concept_and_keeps_unrelated(embedded_bundle, tmp_path: Path):
    bundle = embedded_bundle
    result = erase(bundle, load_wiki("en"), "Harry Potter", options=EraseOptions(optimise=OptimiseConfig(steps=12), score=False))
    assert result.spec.operations[0].kind == "optimise_value_vectors" and result.payload
    save_spec(result.spec, tmp_path / "hp.json", payload=result.payload)
    spec, payload = load_spec(tmp_path / "hp.json")
    adapter = compile_spec(spec, bundle, payload=payload)
    again = compile_spec(result.spec, bundle, payload=result.payload)
    assert adapter.content_sha256() == again.content_sha256()
    before = {p: _answer_prob(bundle, p, a) for p, a in CONCEPT}
    base_greedy = {p: _greedy(bundle, p) for p in UNRELATED}
    with use(bundle, adapter):
        after = {p: _answer_prob(bundle, p, a) for p, a in CONCEPT}
        edited_greedy = {p: _greedy(bundle, p) for p in UNRELATED}
    assert sum(after.values()) < 0.5 * sum(before.values()), (before, after)
    assert edited_greedy == base_greedy
    assert {p: _greedy(bundle, p) for p in UNRELATED} == base_greedy  # nothing left behind
