"""Benchmark math and batched runners on tiny synthetic inputs and the tiny random Gemma 3."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from workbench.benchmark.names import mentions, substitute
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import (
    answer_token_ids,
    greedy_continuations,
    logprobs_at,
    next_tokens,
    prompt_outcomes_each,
    text_logprobs,
)
from workbench.benchmark.schema import DevConcept, ProbePrompt
from workbench.benchmark.scoring import contains_any, harmonic_mean, perplexity, topk_kl

PROMPTS = ["The city of", "A river in the north", "The", "It was built in the year"]


def test_contains_any_is_case_and_punctuation_insensitive() -> None:
    assert contains_any(" Rowling, and the series", ["rowling"])
    assert contains_any(" H2O.\n", ["H2O"])
    assert not contains_any(" the Potter family", ["Dursley"])
    assert not contains_any(" anything", [""])


def test_harmonic_mean_zero_rule() -> None:
    assert harmonic_mean([1.0, 1.0]) == 1.0
    assert harmonic_mean([0.5, 1.0]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.9, 0.0]) == 0.0
    assert harmonic_mean([0.9, -0.2]) == 0.0
    assert harmonic_mean([0.9, float("nan")]) == 0.0


def test_topk_kl_equals_full_kl_when_k_covers_vocab_and_bounds_it_otherwise() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.log_softmax(torch.randn(5, 50, generator=g), -1)
    q = torch.log_softmax(torch.randn(5, 50, generator=g), -1)
    full = (p.exp() * (p - q)).sum(-1)
    for k, exact in ((50, True), (10, False)):
        lp, ids = p.topk(k, -1)
        rest = torch.log1p(-lp.exp().sum(-1).clamp(max=1 - 1e-7))
        approx = topk_kl(lp, rest, q.gather(-1, ids))
        if exact:
            assert torch.allclose(approx.float(), full, atol=1e-5)
        else:
            assert (approx.float() <= full + 1e-6).all()


def test_substitute_replaces_whole_words_longest_first() -> None:
    mapping = {"Albert Einstein": "Walter Brenner", "Einstein": "Brenner"}
    assert substitute("Albert Einstein met Einstein's wife", mapping) == "Walter Brenner met Brenner's wife"
    assert substitute("Einsteinium is an element", mapping) == "Einsteinium is an element"
    assert mentions("The Beatles' drummer", ["Beatles"])
    assert not mentions("Beatlesque music", ["Beatles"])


def test_schemas_reject_unknown_keys_and_missing_fake_names() -> None:
    with pytest.raises(ValidationError):
        ProbePrompt(prompt="a", answer="b", anwser="typo")
    with pytest.raises(ValidationError, match="no replacement"):
        DevConcept(
            name="X",
            title="X",
            kind="k",
            aliases=["X", "Xs"],
            fake_names=[{"X": "Y"}],
            cloze=[],
            questions=[],
            neighbours=[],
            fact_paragraph="",
        )


def test_concept_probe_round_trips_json() -> None:
    probe = ConceptProbe(
        name="X",
        source="user",
        cloze=[ProbePrompt(prompt="X is", answer="a")],
        fact_paragraph="X is a thing.",
    )
    assert ConceptProbe.model_validate_json(probe.model_dump_json()) == probe
    assert probe.reintro_prompts()[0].prompt == "X is a thing.\n\nX is"


@torch.no_grad()
def test_answer_prob_and_first_token_match_direct_forward(tiny_bundle) -> None:
    tok = tiny_bundle.tokenizer
    for answer in ("river", "the"):
        for prompt, nt in zip(
            PROMPTS, next_tokens(tiny_bundle, PROMPTS, [answer] * len(PROMPTS)), strict=True
        ):
            lp = torch.log_softmax(tiny_bundle.hf_model(**tok(prompt, return_tensors="pt")).logits[0, -1], -1)
            aid = answer_token_ids(tok, answer, prompt)[0]
            assert nt.answer_id == aid
            assert nt.top_id == int(lp.argmax())
            assert nt.answer_prob == pytest.approx(math.exp(float(lp[aid])), rel=1e-4)


def test_batched_results_equal_one_at_a_time(tiny_bundle) -> None:
    batched = next_tokens(tiny_bundle, PROMPTS + PROMPTS[:1], ["the"] * 5)
    single = [next_tokens(tiny_bundle, [p], ["the"])[0] for p in PROMPTS]
    for b, s in zip(batched, single, strict=False):
        assert b.top_id == s.top_id
        assert b.answer_prob == pytest.approx(s.answer_prob, rel=1e-4)
    conts = greedy_continuations(tiny_bundle, PROMPTS, max_new_tokens=4)
    assert conts == [greedy_continuations(tiny_bundle, [p], max_new_tokens=4)[0] for p in PROMPTS]


@torch.no_grad()
def test_outcomes_in_padded_passes_equal_each_prompt_alone_for_every_variant(tiny_bundle) -> None:
    """Prompts of four lengths, base and an edit, in left-padded batches of 3 rows (so batches
    mix lengths and variants): every next token and greedy continuation equals the prompt run
    alone, unpadded, through Hugging Face generate with only that variant routed."""
    from tests.unit.test_evaluate import strong_adapter
    from workbench.adapters import route

    adapter = strong_adapter(tiny_bundle)
    answers = ["river", "the", "city", "year"]
    nts_each, conts_each = prompt_outcomes_each(
        tiny_bundle, PROMPTS, answers, (None, adapter), max_new_tokens=4, rows_per_batch=3
    )
    tok = tiny_bundle.tokenizer
    assert conts_each[0] != conts_each[1]  # the edit changes what is generated
    for v, variant in enumerate((None, adapter)):
        for i, prompt in enumerate(PROMPTS):
            ids = tok(prompt, return_tensors="pt").input_ids
            with route(tiny_bundle, [variant]):
                lp = torch.log_softmax(tiny_bundle.hf_model(input_ids=ids).logits[0, -1], -1)
                gen = tiny_bundle.hf_model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                    max_new_tokens=4, do_sample=False, top_p=None, top_k=None,
                                                    temperature=None, pad_token_id=tok.pad_token_id)
            nt = nts_each[v][i]
            assert nt.top_id == int(lp.argmax())
            assert nt.answer_prob == pytest.approx(math.exp(float(lp[answer_token_ids(tok, answers[i], prompt)[0]])),
                                                   rel=1e-4)
            assert conts_each[v][i] == tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)


@torch.no_grad()
def test_perplexity_matches_direct_computation(tiny_bundle) -> None:
    texts = [
        "The river flows through the city and into the sea.",
        "A short one.",
        "Another text of some length here.",
    ]
    tok_lp, dist = text_logprobs(tiny_bundle, texts, max_tokens=16, batch_size=2, top_k=8)
    nll, n = 0.0, 0
    for t in texts:
        ids = tiny_bundle.tokenizer(t, return_tensors="pt").input_ids[:, :16]
        out = tiny_bundle.hf_model(input_ids=ids, labels=ids)
        nll += float(out.loss) * (ids.shape[1] - 1)
        n += ids.shape[1] - 1
    assert tok_lp.numel() == n == dist.ids.shape[0]
    assert perplexity(tok_lp) == pytest.approx(math.exp(nll / n), rel=1e-4)
    again, at_ids = logprobs_at(tiny_bundle, texts, dist.ids, max_tokens=16, batch_size=3)
    assert torch.allclose(again, tok_lp, atol=1e-5)
    assert torch.allclose(at_ids, dist.logprobs, atol=1e-5)


def test_cloze_candidates_cut_before_capitalised_or_rare_words() -> None:
    from workbench.benchmark.probe import cloze_candidates
    from workbench.corpus import Corpus, Document

    doc = Document(
        1, "Zorbland", "Zorbland is a small country in the north of Europe. Its capital city is Quaxville."
    )
    corpus = Corpus("t", [doc, Document(2, "Other", "A plain text about the north and a city.")])
    cands = cloze_candidates(doc, corpus)
    pairs = [(c.prompt, c.answer) for c in cands]
    assert ("Zorbland is a small country in the north of", "Europe") in pairs
    assert ("Zorbland: Its capital city is", "Quaxville") in pairs
    assert all(c.prompt.startswith("Zorbland") for c in cands)


def test_goal_checks_name_each_broken_control_and_latest_rows_replace_reruns() -> None:
    from workbench.benchmark.goals import controls_held, goal_checks, latest_rows, mean_row

    good = {"name_dep": 0.05, "neighbours": 0.95, "general": 0.96, "others": 0.88, "others_base": 0.91,
            "ppl_change_pct": 1.0}
    assert goal_checks(good) == dict.fromkeys(("concept", "neighbours", "general", "others", "perplexity"), True)
    assert controls_held(good)
    # lowering the concept while breaking a control is not a held edit
    broken = {**good, "neighbours": 0.80, "others": 0.80}
    checks = goal_checks(broken)
    assert checks["concept"] and not checks["neighbours"] and not checks["others"] and checks["general"]
    assert not controls_held(broken)
    assert goal_checks({**good, "name_dep": 0.2})["concept"] is False
    assert not controls_held({k: v for k, v in good.items() if k != "ppl_change_pct"})  # missing != held
    rows = [{"concept": "A", "method": "m", "name_dep": 0.5}, {"concept": "B", "method": "m", "name_dep": 0.1},
            {"concept": "A", "method": "m", "name_dep": 0.3}]
    last = latest_rows(rows)
    assert [(r["concept"], r["name_dep"]) for r in last] == [("B", 0.1), ("A", 0.3)]
    assert mean_row(last)["name_dep"] == pytest.approx(0.2)
