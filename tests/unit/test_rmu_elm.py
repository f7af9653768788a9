"""RMU and ELM (issue 31): their pure losses on tiny tensors, and each method on the tiny model taught
Paris: a spec that validates and round-trips, an adapter on the configured down-projections only
that changes the model on concept text, a base that stays bit-identical, a PEFT export that
matches, progress per step and a sentence for an empty fact set."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from workbench.adapters import use
from workbench.adapters.deltas import LowRankDelta
from workbench.config import Settings
from workbench.corpus import Corpus, load_wiki
from workbench.edits.compile import compile_spec
from workbench.edits.spec import load_spec, save_spec
from workbench.methods.elm import (
    ElmConfig,
    elm_target,
    kl_divergence,
    prefixed,
    soft_cross_entropy,
    target_logprobs,
)
from workbench.methods.erase import METHODS, EraseOptions, erase
from workbench.methods.facts import Fact, FactSet, split_sentences
from workbench.methods.forget import forget_texts
from workbench.methods.retain import RetainConfig
from workbench.methods.rmu import RmuConfig, batches, control_vector, forget_loss, retain_loss, rmu_unlearn
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.models.hashing import model_weights_sha256
from workbench.models.tiny import TinyConfig, build_tiny_checkpoint
from workbench.progress import NullProgress

CONCEPT = "Paris"
SMALL_RETAIN = RetainConfig(n_neutral=6, n_neighbours=3, n_collisions=0)
QUICK = EraseOptions(
    rmu=RmuConfig(steps=6, batch_size=2, lr=0.05, retain=SMALL_RETAIN),
    elm=ElmConfig(steps=3, batch_size=2, lr=0.2, fluency_texts=2, fluency_tokens=4, retain=SMALL_RETAIN),
    score=False,
)


# -- pure losses -----------------------------------------------------------------------------------
def test_rmu_control_vector_has_norm_c_in_the_positive_orthant_and_follows_the_seed() -> None:
    c = control_vector(16, 6.5, torch.Generator().manual_seed(3))
    assert torch.isclose(c.norm(), torch.tensor(6.5)) and bool((c >= 0).all())
    assert torch.equal(c, control_vector(16, 6.5, torch.Generator().manual_seed(3)))
    assert not torch.equal(c, control_vector(16, 6.5, torch.Generator().manual_seed(4)))


def test_rmu_forget_loss_is_zero_at_c_u_and_the_retain_loss_at_the_frozen_activations() -> None:
    control = control_vector(8, 2.0, torch.Generator().manual_seed(0))
    acts = control.repeat(5, 1)  # [n, d]
    assert forget_loss(acts, control) == 0
    moved = acts + torch.eye(5, 8)
    assert torch.isclose(forget_loss(moved, control), torch.tensor(5 / 40))  # five unit errors over 5 x 8 entries
    frozen = torch.randn(5, 8)
    assert retain_loss(frozen.clone(), frozen) == 0 and retain_loss(frozen + 1, frozen) == 1


def test_elm_target_is_base_plus_eta_times_novice_minus_expert() -> None:
    base, expert, novice = torch.randn(3, 2, 7).log_softmax(-1)
    assert torch.allclose(target_logprobs(base, expert, novice, 2.5), base + 2.5 * (novice - expert))
    # eta 0, every token kept: the base distribution at the temperature
    idx, probs = elm_target(base, expert, novice, eta=0.0, temperature=1.2, top_k=7)
    full = torch.zeros(2, 7).scatter(-1, idx, probs)
    assert torch.allclose(full, (base / 1.2).softmax(-1), atol=1e-6)
    # a token the novice context favours and the expert disfavours gains mass; top_k keeps k tokens
    nov = novice.clone()
    nov[:, 3] += 4.0
    exp = expert.clone()
    exp[:, 3] -= 4.0
    idx, probs = elm_target(base, exp, nov, eta=1.0, temperature=1.0, top_k=3)
    assert idx.shape == probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert bool((idx[:, 0] == 3).all()) and bool((probs[:, 0] > base.exp()[:, 3]).all())


def test_soft_cross_entropy_and_kl_on_known_values() -> None:
    logits = torch.randn(4, 6)
    target = torch.randn(4, 6).softmax(-1)
    idx = torch.arange(6).repeat(4, 1)
    assert torch.isclose(soft_cross_entropy(logits, idx, target), torch.nn.functional.cross_entropy(logits, target))
    logp = logits.log_softmax(-1)
    assert kl_divergence(logp, logp) == 0 and kl_divergence(logp, torch.randn(4, 6).log_softmax(-1)) > 0


def test_elm_samples_at_most_k_positions_per_text_and_says_which() -> None:
    import random

    from workbench.methods.elm import sample_positions

    mask = torch.tensor([[0, 1, 1, 1, 1, 0], [0, 1, 0, 0, 0, 0]], dtype=torch.bool)
    out, ranks = sample_positions(mask, 2, random.Random(0))
    assert out.sum(1).tolist() == [2, 1] and not bool((out & ~mask).any())
    at = [torch.nonzero(mask[r]).flatten().tolist() for r in range(2)]
    assert [[at[r][j] for j in ranks[r]] for r in range(2)] == [torch.nonzero(out[r]).flatten().tolist() for r in range(2)]


def test_batches_cover_every_index_once_per_pass_without_repeats() -> None:
    import random

    stream = batches(7, 3, random.Random(0))
    first_pass = [next(stream) for _ in range(2)]  # 7 // 3 full batches per pass
    assert all(len(set(b)) == 3 for b in first_pass) and len({i for b in first_pass for i in b}) == 6
    assert sorted(next(batches(2, 5, random.Random(0)))) == [0, 1]  # a batch larger than the texts takes them all


def test_layers_sit_at_the_papers_depth() -> None:
    rmu = RmuConfig().fitted(32)
    assert (rmu.layer, rmu.layers) == (7, (5, 6, 7))  # Zephyr-7B: loss at 7, down_proj of 5-7 trained
    assert RmuConfig().fitted(18).layers == (2, 3, 4)  # the embedded Gemma 3 270M
    assert RmuConfig(layer=1).fitted(18).layers == (0, 1)
    assert ElmConfig().fitted(32).layers == (4, 5, 6, 7) and ElmConfig().fitted(18).layers == (2, 3, 4)


def test_elm_prefixed_text_reads_the_same_tokens_shifted(taught: tuple[ModelBundle, FactSet]) -> None:
    tok = taught[0].tokenizer
    ids = list(tok("Paris is the capital of France.")["input_ids"])
    long, shift = prefixed(tok, "Written by an expert on Paris:\n", ids)
    lead = 1 if ids[0] == tok.bos_token_id else 0
    assert shift > 0 and [long[q + shift] for q in range(lead, len(ids))] == ids[lead:]


# -- the methods on the taught tiny model ----------------------------------------------------------
@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_wiki("en")


@pytest.fixture(scope="module")
def taught(session_settings: Settings, corpus: Corpus) -> tuple[ModelBundle, FactSet]:
    path = build_tiny_checkpoint(session_settings.models_dir, TinyConfig(taught=CONCEPT))
    bundle = load_bundle(parse_source(str(path)), session_settings)
    doc = corpus.get(CONCEPT)
    return bundle, FactSet(CONCEPT, CONCEPT, "place", [Fact(s, "article") for s in split_sentences(doc.text)])


def test_forget_text_is_article_windows_then_facts_and_an_empty_fact_set_is_a_sentence(corpus: Corpus) -> None:
    facts = FactSet(CONCEPT, CONCEPT, "place", [Fact("Paris has many bridges over the Seine.", "user")])
    texts = forget_texts(corpus, facts)
    assert texts[-1] == "Paris has many bridges over the Seine." and len(texts) > 1
    assert texts[0].startswith(split_sentences(corpus.get(CONCEPT).text)[0])
    with pytest.raises(ValueError, match=r"^The fact set is empty: .*\.$"):
        forget_texts(corpus, FactSet(CONCEPT, CONCEPT, "place", []))


@pytest.mark.parametrize("method", ["rmu", "elm"])
def test_method_gives_an_adapter_on_its_down_projections_that_changes_the_concept_text(
        taught: tuple[ModelBundle, FactSet], corpus: Corpus, method: str, tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from workbench.exports import export_lora

    bundle, facts = taught
    before = model_weights_sha256(bundle.hf_model)
    result = erase(bundle, corpus, CONCEPT, method, fact_set=facts, options=QUICK)
    assert model_weights_sha256(bundle.hf_model) == before  # training never wrote the base
    (op,) = result.spec.operations
    assert op.kind == "optimise_value_vectors" and op.params["method"] == method
    result.spec.validate_for(bundle, payload=result.payload)
    save_spec(result.spec, tmp_path / "spec.json", payload=result.payload)
    spec, payload = load_spec(tmp_path / "spec.json")
    adapter = compile_spec(spec, bundle, payload=payload)
    cfg = (QUICK.rmu if method == "rmu" else QUICK.elm).fitted(bundle.n_layers)
    assert sorted(adapter.deltas) == sorted(cfg.layers) and not adapter.hooks
    assert all(len(t.rows) == bundle.d_mlp for t in op.targets)  # whole-layer deltas
    if method == "elm":  # the low-rank delta compiles back to its rank
        assert all(isinstance(d, LowRankDelta) and d.rank <= QUICK.elm.rank for d in adapter.deltas.values())
    assert result.candidates and all(c.layer in cfg.layers for c in result.candidates)

    ids = bundle.tokenizer("Paris is the capital and largest city of France", return_tensors="pt").input_ids
    with torch.no_grad():
        base = bundle.hf_model(ids).logits
        with use(bundle, adapter):
            edited = bundle.hf_model(ids).logits
        lora_dir = export_lora(bundle, adapter, spec, tmp_path / "lora", base_model=str(bundle.path))
        plain = AutoModelForCausalLM.from_pretrained(str(bundle.path), dtype=torch.float32).eval()
        lora = PeftModel.from_pretrained(plain, str(lora_dir)).eval()(ids).logits
    assert not torch.allclose(base, edited, atol=1e-5), f"{method} left the model as it was"
    assert torch.allclose(lora, edited, atol=1e-4)
    assert torch.equal(bundle.hf_model(ids).logits.detach(), base)  # outside `use`, the base


def test_rmu_pulls_the_forget_residual_to_c_u_and_reports_every_step(taught: tuple[ModelBundle, FactSet],
                                                                     corpus: Corpus) -> None:
    bundle, facts = taught
    seen: list[dict[str, Any]] = []

    class Watch(NullProgress):
        def advance(self, n: int = 1, **info: Any) -> None:
            seen.append(info)

    cfg = replace(QUICK.rmu, steps=12, alpha=1.0)
    result, ran, problem = rmu_unlearn(bundle, facts, corpus, cfg, Watch())
    assert len(seen) == 12 and all({"forget", "retain", "loss"} <= set(s) for s in seen)
    assert ran.steering_coeff == pytest.approx(cfg.steering_scale * problem.base_norm)
    first, last = result.history[0]["forget"], result.history[-1]["forget"]
    assert last < first, (first, last)


def test_rmu_frozen_retain_is_the_base_residual_in_pick_order(taught: tuple[ModelBundle, FactSet],
                                                              corpus: Corpus) -> None:
    from workbench.methods.rmu import _rows, frozen_retain, prepare_problem, residual_at

    bundle, facts = taught
    cfg = QUICK.rmu.fitted(bundle.n_layers)
    assert cfg.layer is not None
    problem = prepare_problem(bundle, facts, corpus, cfg)
    frozen_retain(bundle, problem, [1], cfg.layer)  # cached alone, read again beside others
    pick = [2, 0, 1]
    ids, mask = _rows(problem.retain, pick, bundle.device)
    with torch.no_grad():
        want = residual_at(bundle, ids, mask, cfg.layer)
    assert torch.allclose(frozen_retain(bundle, problem, pick, cfg.layer), want, atol=1e-5)
    assert sorted(problem.frozen) == [0, 1, 2]


@pytest.mark.parametrize("method", ["rmu", "elm"])
def test_empty_fact_set_and_unreadable_layers_are_sentences(taught: tuple[ModelBundle, FactSet], corpus: Corpus,
                                                            method: str) -> None:
    bundle, _ = taught
    empty = FactSet(CONCEPT, CONCEPT, "place", [])
    with pytest.raises(ValueError, match=r"^The fact set is empty"):
        erase(bundle, corpus, CONCEPT, method, fact_set=empty, options=QUICK)
    if method == "rmu":
        bad = replace(QUICK, rmu=replace(QUICK.rmu, layer=0, layers=(0, 1)))
        with pytest.raises(ValueError, match="at or below its loss layer 0"):
            erase(bundle, corpus, CONCEPT, method, fact_set=taught[1], options=bad)


def test_both_are_registered_with_a_strength_knob() -> None:
    for name in ("rmu", "elm"):
        knob = METHODS[name].strength
        assert knob is not None and not METHODS[name].needs_sae
        cfg = getattr(knob.scale(QUICK, 2.0), name)
        assert cfg.steps == 2 * getattr(QUICK, name).steps
