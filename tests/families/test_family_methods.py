"""Every erasure method on every family, each tiny model with its family's real tokenizer kind
(byte-level BPE for GPT-2, Llama 3, Qwen, OLMo and GPT-NeoX; SentencePiece-style for Gemma and
Mistral) and trained on the corpus article of Paris, so the base model predicts the concept's
facts and the methods have something to erase (random weights answer nothing).

The default erase runs with its scorecard, then a side-by-side preview and both exports; every
other method runs with a quick config on the same fact set. A method that cannot run on a model
(PISCES without a local SAE) says so before any work starts.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from workbench.adapters import use
from workbench.benchmark.scorecard import EvalOptions
from workbench.config import Settings
from workbench.corpus import Corpus, load_wiki
from workbench.edits.compile import compile_spec
from workbench.exports import export_checkpoint, export_lora
from workbench.generate import SamplingParams, generate_pair
from workbench.lenses.tokens import tokenizer_kind
from workbench.methods.elm import ElmConfig
from workbench.methods.erase import DEFAULT_METHOD, METHODS, AblateConfig, EraseOptions, PiscesConfig, erase
from workbench.methods.facts import FactSet, build_fact_set, fact_targets
from workbench.methods.frames import FramesConfig
from workbench.methods.key_rewrite import RewriteConfig
from workbench.methods.optimise import OptimiseConfig
from workbench.methods.retain import RetainConfig
from workbench.methods.rmu import RmuConfig
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.models.depth import default_sae_layer
from workbench.models.tiny import FAMILIES, TOKENIZERS, TinyConfig, build_tiny_checkpoint
from workbench.progress import NullProgress
from workbench.sae.train import SAETrainConfig, train_sae

pytestmark = pytest.mark.families

CONCEPT = "Paris"
QUICK = EraseOptions(
    optimise=OptimiseConfig(n_rows=16, steps=2, retain=RetainConfig(n_neutral=6, n_neighbours=3, n_collisions=3),
                            eval_every=100, frames=FramesConfig(cf_batch=2, cf_nonces=2, n_neighbour_names=2)),
    rewrite=RewriteConfig(steps=3, cov_tokens=600, retain=RetainConfig(n_neutral=6, n_neighbours=3), lams=(100.0,),
                          frame_batch=8, frames=FramesConfig(n_neighbour_names=2, cf_nonces=2)),
    ablate=AblateConfig(n_rows=16, runners_up=4),
    rmu=RmuConfig(steps=4, batch_size=2, lr=0.05, retain=RetainConfig(n_neutral=6, n_neighbours=3, n_collisions=0)),
    elm=ElmConfig(steps=2, batch_size=2, lr=0.2, fluency_texts=2, fluency_tokens=3,
                  retain=RetainConfig(n_neutral=6, n_neighbours=3, n_collisions=0)),
    pisces=PiscesConfig(n_candidates=32, n_select=2, taus=(0.5,), mus=(8.0,), n_features=4, min_target_prob=0.0),
    score=False,
)
QUICK_SAE = SAETrainConfig(site="hook_mlp_out", width=128, k=6, tokens=8_192, context_size=32, train_batch_tokens=512,
                           store_batch_prompts=8, norm_batches=2, holdout_docs=20, eval_tokens=500, lr=2e-3,
                           dead_feature_window=8)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return load_wiki("en")


@pytest.fixture(scope="module", params=FAMILIES)
def taught(request: pytest.FixtureRequest, session_settings: Settings, corpus: Corpus,
           tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelBundle, FactSet, Settings]:
    """(the family's tiny model trained on Paris, its fact set, settings with a quick local SAE
    at the default SAE layer of the model)."""
    path = build_tiny_checkpoint(session_settings.models_dir, TinyConfig(family=request.param, taught=CONCEPT))
    bundle = load_bundle(parse_source(str(path)), session_settings)
    facts = build_fact_set(bundle, corpus, CONCEPT, samples_per_prompt=1, max_new_tokens=20)
    cache = tmp_path_factory.mktemp(f"saes-{request.param}")
    (cache / "models").symlink_to(session_settings.models_dir.resolve(), target_is_directory=True)
    settings = Settings(cache_dir=cache)
    layer = default_sae_layer(bundle.n_layers)
    # the SAE sees the concept's own text too, so some feature of it fires on the concept
    texts = [*facts.texts(), *(d.text for d in corpus.sample(60, seed=2))]
    train_sae(bundle, replace(QUICK_SAE, layer=layer), settings, texts=texts)
    return bundle, facts, settings


def _target_prob(bundle: ModelBundle, facts: FactSet, corpus: Corpus, adapter: object | None) -> float:
    """Mean probability of the fact set's concept tokens (those the base predicts), base or edited."""
    targets = fact_targets(bundle, facts, corpus)
    keep = targets.targets >= 0
    with torch.no_grad(), use(bundle, adapter):  # type: ignore[arg-type]
        logits = bundle.hf_model(input_ids=targets.input_ids, attention_mask=targets.attention_mask).logits
    probs = logits.float().softmax(-1).gather(-1, targets.targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return float(probs[keep].mean())


def test_the_tiny_model_tokenises_like_its_family_and_knows_the_concept(taught, corpus) -> None:  # type: ignore[no-untyped-def]
    bundle, facts, _ = taught
    family = bundle.path.name.split("-")[1]  # tiny-<family>-t2-...
    spec = TOKENIZERS[family]
    assert tokenizer_kind(bundle.tokenizer) == spec.kind
    ids = bundle.tokenizer("Paris is a city")["input_ids"]
    bos = bundle.tokenizer.convert_tokens_to_ids(spec.bos) if spec.bos else None
    # the loader asks every tokenizer for a BOS (TransformerLens does the same); one that has none adds none
    assert (ids[0] == bos) == (spec.bos is not None)
    # word starts come from offsets, whatever marks them in the vocabulary: the taught model
    # predicts concept-specific words of its article, so the default erase has targets
    targets = fact_targets(bundle, facts, corpus)
    assert targets.n_targets >= 3, f"{family}: only {targets.n_targets} fact targets"


def test_default_erase_scorecard_preview_and_exports(taught, corpus, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    bundle, facts, _ = taught
    options = replace(QUICK, optimise=replace(QUICK.optimise, steps=12, n_rows=48, lr_scale=0.5), score=True,  # type: ignore[arg-type]
                      eval_options=EvalOptions(max_new_tokens=4, continuation_sets=("cloze",), generation_tokens=6))
    result = erase(bundle, corpus, CONCEPT, DEFAULT_METHOD, fact_set=facts, options=options)
    assert result.scorecard is not None and result.scorecard.metrics
    adapter = compile_spec(result.spec, bundle, payload=result.payload or None)
    # the erase moves the concept's answers: its fact tokens become less likely
    base_p, edited_p = _target_prob(bundle, facts, corpus, None), _target_prob(bundle, facts, corpus, adapter)
    assert edited_p < 0.9 * base_p, (base_p, edited_p)

    base, edited = generate_pair(bundle, "Paris is the capital of", adapter, SamplingParams(max_new_tokens=6))
    assert len(base.token_ids) == 6 and edited.token_ids

    ids = bundle.tokenizer("Paris is the capital and largest city of", return_tensors="pt").input_ids
    with torch.no_grad():
        with use(bundle, adapter):
            in_process = bundle.hf_model(ids).logits
        merged_dir = export_checkpoint(bundle, adapter, result.spec, tmp_path / "merged")
        merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()(ids).logits
        lora_dir = export_lora(bundle, adapter, result.spec, tmp_path / "lora", base_model=str(bundle.path))
        plain = AutoModelForCausalLM.from_pretrained(str(bundle.path), dtype=torch.float32).eval()
        lora = PeftModel.from_pretrained(plain, str(lora_dir)).eval()(ids).logits
    assert torch.allclose(merged, in_process, atol=1e-4)
    assert torch.allclose(lora, in_process, atol=1e-4)


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != DEFAULT_METHOD))
def test_every_method_gives_an_edit_that_changes_the_model(taught, corpus, method: str) -> None:  # type: ignore[no-untyped-def]
    bundle, facts, settings = taught
    result = erase(bundle, corpus, CONCEPT, method, fact_set=facts, options=replace(QUICK, saes_dir=settings.saes_dir))
    adapter = compile_spec(result.spec, bundle, sae_loader=_sae_loader(settings) if result.spec.sae else None,
                           payload=result.payload or None)
    ids = bundle.tokenizer("Paris is the capital and largest city of", return_tensors="pt").input_ids
    with torch.no_grad():
        before = bundle.hf_model(ids).logits
        with use(bundle, adapter):
            during = bundle.hf_model(ids).logits
    assert not torch.allclose(before, during, atol=1e-6), f"{method} left the model as it was"


def _sae_loader(settings: Settings):  # type: ignore[no-untyped-def]
    from workbench.sae.sources import spec_sae_loader

    return spec_sae_loader(settings.saes_dir)


def test_a_method_that_cannot_run_says_why_before_any_work(corpus, session_settings: Settings, tmp_path: Path) -> None:
    path = build_tiny_checkpoint(session_settings.models_dir, TinyConfig(family="llama", taught=CONCEPT))
    bundle = load_bundle(parse_source(str(path)), session_settings)
    calls: list[str] = []

    class Watch(NullProgress):
        def stage(self, name: str, total: int | None = None, unit: str = "it") -> None:
            calls.append(name)

    with pytest.raises(FileNotFoundError, match="SAE"):
        erase(bundle, corpus, CONCEPT, "pisces", options=replace(QUICK, saes_dir=tmp_path / "none"),
              progress=Watch())
    assert calls == []  # refused before the fact set was sampled
