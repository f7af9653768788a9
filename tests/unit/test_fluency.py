"""Fluency of free generations: the pure measures on hand-made token lists, non-text tokens of both
tokenizer kinds, the fluency rule on a degenerate adapter of a tiny model (it FAILS with its
sentence; a tiny edit passes), and the tiers a degenerate edit can no longer reach."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from workbench.adapters import ActivationHook, Adapter
from workbench.adapters.deltas import LowRankDelta
from workbench.benchmark.fluency import (
    FluencyConfig,
    FluencyStats,
    degeneration,
    fluency_stats,
    is_text,
    longest_run,
    non_text_ids,
    repeated_ngram_fraction,
    special_fraction,
)
from workbench.benchmark.goals import (
    TIER_BROKE,
    TIER_GOAL,
    TIER_HELD,
    TIER_PISCES,
    controls_held,
    goal_checks,
    tier,
)
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import next_tokens
from workbench.benchmark.schema import ProbePrompt
from workbench.benchmark.scorecard import (
    FLUENCY_FAIL,
    FLUENCY_PASS,
    EvalOptions,
    MetricRow,
    Scorecard,
    evaluate,
)
from workbench.config import Settings
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.models.hashing import model_weights_sha256


# ---------------------------------------------------------------- pure measures
def test_repetition_runs_and_special_fraction_on_hand_made_ids() -> None:
    assert repeated_ngram_fraction([1, 2, 3, 4, 5, 6], n=3) == 0.0
    # 1 2 3 1 2 3 1 2 3: 7 trigrams, 3 distinct -> 4 repeats
    assert repeated_ngram_fraction([1, 2, 3] * 3, n=3) == pytest.approx(4 / 7)
    assert repeated_ngram_fraction([7] * 10, n=3) == pytest.approx(7 / 8)
    assert repeated_ngram_fraction([1, 2], n=3) == 0.0  # shorter than n
    assert longest_run([]) == 0 and longest_run([4]) == 1
    assert longest_run([1, 2, 2, 3, 3, 3, 2]) == 3
    assert longest_run([5, 9] + [9] * 30 + [1]) == 31
    assert special_fraction([1, 2, 99, 99], {99}) == 0.5 and special_fraction([], {99}) == 0.0


def test_pooled_stats_and_base_perplexity() -> None:
    seqs = [[1, 2, 3, 1, 2, 3], [9, 9, 9, 9], []]
    lps = [torch.full((6,), -1.0), torch.full((4,), -3.0), torch.zeros(0)]
    s = fluency_stats(seqs, {9}, lps, n=3)
    assert s.generations == 3 and s.tokens == 10
    assert s.special_fraction == pytest.approx(0.4)
    assert s.repeated_ngrams == pytest.approx((1 + 1) / (4 + 2))  # 1 of 4 trigrams, 1 of 2 trigrams
    assert s.longest_run == 4
    assert s.base_perplexity == pytest.approx(math.exp((6 * 1.0 + 4 * 3.0) / 10))
    empty = fluency_stats([[], []], set(), [torch.zeros(0), torch.zeros(0)])
    assert empty.tokens == 0 and empty.special_fraction == 0.0 and math.isnan(empty.base_perplexity)
    with pytest.raises(ValueError, match="log-prob rows"):
        fluency_stats([[1]], set(), [])


def _stats(special: float = 0.0, rep: float = 0.1, run: int = 2, ppl: float = 3.0) -> FluencyStats:
    return FluencyStats(generations=4, tokens=128, special_fraction=special, repeated_ngrams=rep, longest_run=run,
                        base_perplexity=ppl)


def test_degeneration_is_relative_to_the_base() -> None:
    cfg = FluencyConfig()
    base = _stats()
    assert degeneration(base, _stats(ppl=3.0 * cfg.base_ppl_max_ratio * 0.9), cfg) == []  # a fluent wrong answer
    assert degeneration(base, base, cfg) == []
    (clause,) = degeneration(base, _stats(special=0.41), cfg)
    assert clause == "41% special tokens (base 0%)"
    # a base that already loops is not held against the edit; a loop the edit made is
    assert degeneration(_stats(rep=0.6), _stats(rep=0.7), cfg) == []
    assert "repeated 3-grams" in degeneration(base, _stats(rep=0.1 + cfg.repetition_max_excess + 0.05), cfg)[0]
    assert "in a row" in degeneration(base, _stats(run=2 + cfg.run_max_excess + 1), cfg)[0]
    assert "perplexity" in degeneration(base, _stats(ppl=3.0 * cfg.base_ppl_max_ratio * 1.5), cfg)[0]
    assert degeneration(base, _stats(ppl=math.nan), cfg) == []  # nothing generated: nothing to judge


def test_is_text() -> None:
    assert is_text(" Paris") and is_text("\n") and is_text("\t") and is_text("\ufffd")
    assert not is_text("") and not is_text("\x01") and not is_text("a\x00")


class _FakeTokenizer:
    """Id 0 is special, 2 decodes to a control character, 3 to nothing; 4-6 are added tokens (4 marked
    special, 5 not: a converted Gemma tokenizer leaves `<start_of_image>` unmarked), 6 a newline run."""

    all_special_ids = [0]

    class _Added:
        def __init__(self, content: str, special: bool) -> None:
            self.content, self.special = content, special

    added_tokens_decoder = {4: _Added("<unused0>", True), 5: _Added("<start_of_image>", False),
                            6: _Added("\n\n", False)}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return {0: "<eos>", 1: " a", 2: "\x07", 3: "", 4: "<unused0>", 5: "<start_of_image>", 6: "\n\n"}[ids[0]]


def test_non_text_ids_reads_special_added_and_unprintable_tokens() -> None:
    assert non_text_ids(_FakeTokenizer(), [0, 1, 2, 3, 4, 5, 6, 1]) == {0, 2, 3, 4, 5}


@pytest.mark.parametrize("family", ["gemma3", "gpt2", "llama"])
def test_non_text_ids_on_both_tokenizer_kinds(family: str, session_settings: Settings) -> None:
    from transformers import AutoTokenizer

    from workbench.lenses.tokens import tokenizer_kind
    from workbench.models.tiny import TOKENIZERS, TinyConfig, build_tiny_checkpoint

    tok = AutoTokenizer.from_pretrained(str(build_tiny_checkpoint(session_settings.models_dir, TinyConfig(family=family))))
    assert tokenizer_kind(tok) == TOKENIZERS[family].kind
    words = list(tok("The river flows through Paris, France.\nIt is 42 km long.", add_special_tokens=False).input_ids)
    specials = list(tok.all_special_ids)
    assert non_text_ids(tok, words) == set()
    assert non_text_ids(tok, specials) == set(specials)
    if TOKENIZERS[family].extra:  # Llama 3's chat markers: added special tokens
        extra = tok.convert_tokens_to_ids(list(TOKENIZERS[family].extra))
        assert non_text_ids(tok, extra) == set(extra)
    if TOKENIZERS[family].kind == "byte_level":  # a control byte's piece decodes to an unprintable character
        control = tok.convert_tokens_to_ids("ā")  # GPT-2's stand-in for byte 0x01
        assert control != tok.unk_token_id and non_text_ids(tok, [control]) == {control}


# ---------------------------------------------------------------- tiers
GOAL_ROW = {"name_dep": 0.05, "neighbours": 1.0, "general": 1.0, "others": 0.9, "others_base": 0.9,
            "ppl_change_pct": 0.5}


@pytest.mark.parametrize(("row", "expected"), [
    (GOAL_ROW, TIER_GOAL),  # measured before fluency existed: judged as before
    ({**GOAL_ROW, "fluent": True}, TIER_GOAL),
    ({**GOAL_ROW, "fluent": False}, TIER_BROKE),  # a degenerate edit reaches neither goal nor PISCES
    ({**GOAL_ROW, "name_dep": 0.12, "neighbours": 0.7, "fluent": False}, TIER_BROKE),
    ({**GOAL_ROW, "name_dep": 0.12, "neighbours": 0.7, "fluent": True}, TIER_PISCES),
    ({**GOAL_ROW, "name_dep": 0.6, "fluent": True}, TIER_HELD),
])
def test_fluency_is_a_control_of_the_tiers(row: dict[str, Any], expected: str) -> None:
    assert tier(row) == expected


def test_goal_checks_name_fluency_only_when_measured() -> None:
    assert "fluency" not in goal_checks(GOAL_ROW)
    assert goal_checks({**GOAL_ROW, "fluent": False})["fluency"] is False
    assert controls_held(GOAL_ROW) and not controls_held({**GOAL_ROW, "fluent": False})


def test_a_scorecard_with_a_fluency_fail_is_not_fluent_and_cannot_reach_the_goal() -> None:
    metrics = [MetricRow("efficacy", "concept answered (name-dependent)", 0.8, 0.0, 10, "low"),
               MetricRow("efficacy", "concept answered", 0.8, 0.0, 10, "low"),
               MetricRow("specificity", "neighbours answered", 0.5, 0.5, 8, "= base"),
               MetricRow("specificity", "general answered", 0.9, 0.9, 40, "= base"),
               MetricRow("specificity", "other concepts first-token acc", 0.8, 0.8, 60, "= base"),
               MetricRow("fluency", "neutral perplexity", 20.0, 20.1, 900, "= base")]
    ok = [f"{FLUENCY_PASS}concept prompts are as fluent as the base's", "PASS: concept answered 0.00 <= 0.25 x base 0.80"]
    fluent = Scorecard("X", "test", "sha", metrics, 0.0, {}, ok, [])
    assert fluent.fluent is True and fluent.tier == TIER_GOAL and fluent.passed
    bad = [*ok, f"{FLUENCY_FAIL}general prompts degenerate: 41% special tokens (base 0%)"]
    degenerate = Scorecard("X", "test", "sha", metrics, 0.0, {}, bad, [])
    assert degenerate.fluent is False and degenerate.tier == TIER_BROKE and not degenerate.passed
    assert "general prompts degenerate: 41% special tokens (base 0%)" in degenerate.outcome
    assert Scorecard("X", "test", "sha", metrics, 0.0, {}, [], []).fluent is None


# ---------------------------------------------------------------- the rule on a tiny model
@pytest.fixture(scope="module")
def gpt2_bundle(session_settings: Settings) -> ModelBundle:
    """The tiny GPT-2 (byte-level BPE): its MLP has no gate and no post-norm, so a run-time hook can
    make the last MLP's hidden activations constant and a delta can then write one token's
    direction into every position's residual."""
    return load_bundle(parse_source("tiny:gpt2"), session_settings)


def _probe(bundle: ModelBundle) -> ConceptProbe:
    texts = ["A river in the north", "It was built in the year", "The king and the"]
    tops = next_tokens(bundle, texts, ["x"] * len(texts))
    right = [ProbePrompt(prompt=t, answer=bundle.tokenizer.decode([nt.top_id]).strip() or "x")
             for t, nt in zip(texts, tops, strict=True)]
    return ConceptProbe(
        name="Planted", source="user", aliases=["Planted"],
        cloze=[ProbePrompt(prompt="The city of", answer="river", dependence="name-dependent")],
        neighbours=right[:2], general=right, others=right[1:],
        neutral_texts=["The river flows through the city and into the sea.", "A second neutral text about farming."],
        generation_prompts=["The city of", "Planted is"],
    )


def _writes_token(bundle: ModelBundle, token_id: int, scale: float) -> Adapter:
    """Last layer: every hidden activation set to 10 (a gate-free MLP's pre-activations pinned), and
    W_out += ones (x) scale * e_token, so the MLP adds 10 * d_mlp * scale * e_token everywhere."""
    layer = bundle.n_layers - 1
    e = bundle.hf_model.get_output_embeddings().weight.detach()[token_id].float()  # [d_model]
    a = torch.ones(bundle.d_mlp, 1)
    hook = ActivationHook(layer, lambda: (lambda _m, _i, out: torch.full_like(out, 10.0)), "pin the MLP")
    delta = LowRankDelta(a, scale * e[None, :] / e.norm())
    return Adapter(deltas={layer: delta}, hooks=[hook] if scale else [], model_sha256=bundle.weights_sha256)


def test_a_degenerate_edit_fails_the_fluency_rule_and_a_tiny_one_passes(gpt2_bundle: ModelBundle) -> None:
    bundle = gpt2_bundle
    control = bundle.tokenizer.convert_tokens_to_ids("ā")  # byte 0x01: decodes to an unprintable character
    opts = EvalOptions(max_new_tokens=2, neutral_max_tokens=16, generation_tokens=3, kl_top_k=16,
                       fluency=FluencyConfig(max_new_tokens=12, max_prompts=3))
    probe = _probe(bundle)
    before = model_weights_sha256(bundle.hf_model)
    broken = evaluate(bundle, probe, _writes_token(bundle, control, 50.0), options=opts)
    gens = [g["after"] for g in broken.free_generations]
    assert gens and all(g.count("\x01") >= 10 for g in gens), gens  # the adapter does what it says
    fails = [v for v in broken.verdicts if v.startswith(FLUENCY_FAIL)]
    assert any(v.startswith(f"{FLUENCY_FAIL}concept prompts degenerate: ") and "special tokens (base" in v
               for v in fails), broken.verdicts
    assert broken.fluent is False and not broken.passed and broken.tier == TIER_BROKE
    special = broken.metric("concept generations: special-token fraction")
    assert special.after > 0.8 and special.after > special.before
    assert broken.metric("concept generations: longest run of one token").after >= 10

    tiny = evaluate(bundle, probe, _writes_token(bundle, control, 1e-6), options=opts)
    assert tiny.fluent is True, tiny.verdicts
    assert sum(v.startswith(FLUENCY_PASS) for v in tiny.verdicts) == 2  # concept and general prompts
    assert tiny.metric("general generations: special-token fraction").after == pytest.approx(
        tiny.metric("general generations: special-token fraction").before)
    assert model_weights_sha256(bundle.hf_model) == before  # the base is only read
