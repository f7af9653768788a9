"""Relearning robustness: fine-tune a copy of the edited model on the concept's own text and see how
much of what the edit removed comes back (the relearning test of the PISCES and EMBER papers).

    report = relearn_test(bundle, probe, adapter, corpus)   # RelearnConfig() defaults
    report.recovered   # (relearned - edited) / (base - edited) on the name-dependent prompts

An edit that only hides a concept (a suppressed read-out, the knowledge still in the weights) comes
back after a few steps of plain fine-tuning on text about it; one that removed it has to learn it
again from that text, which a short fine-tune on other sentences does not do.

The copy is the base weights with the adapter's deltas merged in, loaded from the bundle's own
tensors into a fresh model of the same config, trained, probed and freed; the bundle's model is
only read, so the base stays bit-identical. The training text is the concept's article and the
sentences of other articles that name it, minus every sentence that states a probe answer right
after its prompt's text, so the test never trains on its own answers.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from workbench.adapters import Adapter, use
from workbench.benchmark.names import mentions
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import prompt_outcomes_each
from workbench.benchmark.schema import ProbePrompt
from workbench.benchmark.scoring import contains_any, mean, normalise
from workbench.corpus import Corpus
from workbench.lenses.tokens import pad_id, pad_ids
from workbench.models import ModelBundle, layout
from workbench.models.memory import trim_heap
from workbench.progress import NULL_PROGRESS, Progress

_SENTENCE = re.compile(r"(?<=[.!?])(?<!\s[A-Z]\.)\s+")  # not after an initial: "J. K. Rowling"


@dataclass(frozen=True)
class RelearnConfig:
    """The relearning attack: `epochs` of causal-LM fine-tuning with AdamW at `lr` on at most
    `max_paragraphs` sentences about the concept.

    `weights="mlp"` (default) trains every MLP weight of every layer (gate, up and down
    projections): that is where every edit of the workbench lives, so the attack can rewrite the
    edited rows directly, and it leaves the embedding (tied to the unembedding, 62% of Gemma 3
    270M's parameters) alone, so the model cannot relearn an answer as a bare token prior; it is
    also about 4x less optimizer state and a faster step on a CPU. `"all"` trains every weight
    (fp32 AdamW on 270M parameters needs about 4.3 GB besides the activations)."""

    max_paragraphs: int = 100
    epochs: int = 2
    lr: float = 1e-5
    batch_size: int = 8
    max_len: int = 128  # tokens per training text (BOS included); longer sentences are cut
    weights: Literal["mlp", "all"] = "mlp"
    seed: int = 0  # the order of the texts in each epoch

    def __post_init__(self) -> None:
        if self.max_paragraphs < 1 or self.epochs < 1 or self.batch_size < 1 or self.max_len < 2 or not self.lr > 0:
            raise ValueError("Relearning needs max_paragraphs, epochs and batch_size of at least 1, max_len of at "
                             f"least 2 and a positive lr (got {self}).")
        if self.weights not in ("mlp", "all"):
            raise ValueError(f"RelearnConfig.weights must be 'mlp' or 'all' (got {self.weights!r}).")


@dataclass(frozen=True)
class RelearnReport:
    """What the relearning test found, on the concept prompts that need the name (all concept
    prompts when the probe marks none; `prompts` says which)."""

    paragraphs: int  # training texts used
    excluded: int  # sentences left out because they state a probe answer right after its prompt
    epochs: int
    steps: int
    lr: float
    weights: str
    prompts: str  # "name-dependent" or "concept"
    n_prompts: int
    base: float  # answered by the base model
    edited: float  # answered by the edited model before relearning
    relearned: float  # answered by the relearned copy
    recovered: float | None  # (relearned - edited) / (base - edited); None when the edit removed nothing
    loss_first: float
    loss_last: float
    seconds: float

    def sentence(self) -> str:
        """'relearned (2 epochs, 100 paragraphs): answered 0.40, recovered 43%' plus the sides."""
        rec = "n/a (the edit removed nothing)" if self.recovered is None else f"{self.recovered:.0%}"
        return (f"relearned ({self.epochs} epochs, {self.paragraphs} paragraphs): answered {self.relearned:.2f}, "
                f"recovered {rec} ({self.prompts} prompts; before relearning {self.edited:.2f}, base {self.base:.2f})")


def recovered_fraction(base: float, edited: float, relearned: float) -> float | None:
    """(relearned - edited) / (base - edited): the share of what the edit removed that relearning
    brought back (0 none, 1 all of it); None when the edit removed nothing."""
    gap = base - edited
    return None if not gap > 0 else (relearned - edited) / gap


def _strip_title(prompt: str, names: Sequence[str]) -> str:
    """The prompt without the 'Title: ' a corpus probe puts in front of a sentence that does not
    name the concept (probe.cloze_candidates), so it matches the article's own sentence."""
    for name in sorted(names, key=len, reverse=True):
        if name and prompt.startswith(name + ": "):
            return prompt[len(name) + 2:]
    return prompt


def states_answer(text: str, prompt: ProbePrompt, names: Sequence[str] = ()) -> bool:
    """True when `text` holds the prompt's text immediately followed by one of its accepted
    answers (case and punctuation aside): training on it would teach the test's own answer."""
    core = normalise(_strip_title(prompt.prompt, names))
    if not core:
        return False
    body = f" {normalise(text)} "
    return any(normalise(a) and f" {core} {normalise(a)} " in body for a in prompt.accepted)


def relearn_texts(corpus: Corpus, probe: ConceptProbe, max_paragraphs: int = 100) -> tuple[list[str], int]:
    """(training texts, number excluded): the sentences of the concept's article, then those of
    other articles that name it (whole word), in corpus order, without duplicates and without any
    that states a probe answer right after its prompt (`states_answer`), at most `max_paragraphs`."""
    names = [n for n in dict.fromkeys([probe.name, *probe.aliases]) if n]
    title = probe.source.removeprefix("corpus:") if probe.source.startswith("corpus:") else ""
    article = next((corpus.get(t) for t in (title, *names) if t and corpus.has(t)), None)
    if article is None:
        article = corpus.document_for(probe.name)
    candidates = [s.strip() for s in _SENTENCE.split(article.text)]
    for doc in corpus.containing(names):
        if doc.doc_id != article.doc_id:
            candidates += [s.strip() for s in _SENTENCE.split(doc.text) if mentions(s, names)]
    prompts = probe.cloze + probe.questions
    texts: list[str] = []
    excluded = 0
    for s in dict.fromkeys(c for c in candidates if len(c) > 20):
        if any(states_answer(s, p, names) for p in prompts):
            excluded += 1
            continue
        texts.append(s)
        if len(texts) >= max_paragraphs:
            break
    if not texts:
        raise ValueError(f"The corpus has no sentence about {probe.name!r} that does not state a probe answer, so "
                         "there is nothing to relearn from.")
    return texts, excluded


def _probe_prompts(probe: ConceptProbe) -> tuple[list[ProbePrompt], str]:
    concept = probe.cloze + probe.questions
    named = [p for p in concept if p.dependence == "name-dependent"]
    return (named, "name-dependent") if named else (concept, "concept")


def _answered(bundle: Any, prompts: Sequence[ProbePrompt], variants: Sequence[Adapter | None],
              max_new_tokens: int) -> list[float]:
    """Answered fraction of the prompts under each variant (first token right, or the greedy
    continuation contains an accepted answer), the scorecard's rule."""
    nts, conts = prompt_outcomes_each(bundle, [p.prompt for p in prompts], [p.answer for p in prompts], variants,
                                      max_new_tokens)
    return [mean([float(nt.first_token_correct or contains_any(c, p.accepted))
                  for nt, c, p in zip(nt_v, c_v, prompts, strict=True)])
            for nt_v, c_v in zip(nts, conts, strict=True)]


def edited_copy(bundle: ModelBundle, adapter: Adapter | None) -> torch.nn.Module:
    """A new float32 model of the bundle's config holding the base weights with the adapter's
    deltas merged into W_out (the bundle's own tensors are only read)."""
    from transformers import AutoModelForCausalLM

    state = {name: p.detach() for name, p in layout.named_parameters(bundle.hf_model).items()}
    copy = AutoModelForCausalLM.from_config(bundle.hf_model.config, dtype=torch.float32)
    names = set(layout.named_parameters(copy))
    # the loaded model may carry parameters a plain one lacks (the TransformerLens bridge gives the
    # unembedding a zero bias); they are dropped only when they change nothing
    extra = [n for n in set(state) - names if bool(state[n].any())]
    if names - set(state) or extra:
        raise RuntimeError("The model's copy has other parameters than the model "
                           f"({sorted(names - set(state))[:3] or extra[:3]}); relearning cannot run on it.")
    copy.load_state_dict({n: state[n] for n in names}, strict=False)  # missing: tied weights, buffers
    copy.to(bundle.device)
    with torch.no_grad():
        for layer, delta in (adapter.deltas.items() if adapter is not None else ()):
            w_out = layout.w_out(copy, layer)  # [d_mlp, d_model] view of the stored weight
            w_out.add_(delta.dense(w_out.shape[0]).to(w_out.device, w_out.dtype))
    return copy.eval()


def _trained(model: torch.nn.Module, which: str) -> list[torch.nn.Parameter]:
    if which == "all":
        return list(model.parameters())
    mlp_path = layout.architecture(model).out_proj.rsplit(".", 1)[0]  # 'mlp' of 'mlp.down_proj'
    return [p for block in layout.decoder_layers(model) for p in layout.resolve_attr(block, mlp_path).parameters()]


def fine_tune(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], cfg: RelearnConfig,
              progress: Progress = NULL_PROGRESS) -> list[float]:
    """Train `model` in place: `cfg.epochs` passes over `texts` in batches (seeded order), causal-LM
    loss on every real token, AdamW at `cfg.lr` on the weights `cfg.weights` names. One progress
    step per batch. Returns the loss per step."""
    params = _trained(model, cfg.weights)
    trained = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trained)
    seqs = [list(tokenizer(t, truncation=True, max_length=cfg.max_len)["input_ids"]) for t in texts]
    per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    progress.stage(f"relearning: fine-tuning a copy of the edited model on {len(seqs)} paragraphs "
                   f"({cfg.epochs} epochs, lr {cfg.lr:g}, {cfg.weights} weights)", total=cfg.epochs * per_epoch,
                   unit="step")
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = next(model.parameters()).device
    losses: list[float] = []
    model.train()
    try:
        with torch.enable_grad():  # also when the caller runs under no_grad
            for epoch in range(cfg.epochs):
                order = torch.randperm(len(seqs), generator=gen).tolist()
                for start in range(0, len(order), cfg.batch_size):
                    batch = [seqs[i] for i in order[start:start + cfg.batch_size]]
                    ids = pad_ids(batch, pad_id(tokenizer)).to(device)  # [b, longest]
                    mask = torch.zeros_like(ids)
                    for row, s in enumerate(batch):
                        mask[row, :len(s)] = 1
                    loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    progress.advance(1, loss=losses[-1], epoch=epoch + 1)
    finally:
        model.eval()
        opt.zero_grad(set_to_none=True)
        for p in model.parameters():
            p.requires_grad_(False)
    return losses


def relearn_test(bundle: ModelBundle, probe: ConceptProbe, adapter: Adapter | None, corpus: Corpus,
                 cfg: RelearnConfig = RelearnConfig(), max_new_tokens: int = 8,
                 progress: Progress = NULL_PROGRESS) -> RelearnReport:
    """Fine-tune a copy of the edited model on the concept's text and probe it (see the module
    docstring). Base and edited are measured in the same passes first; the copy exists only
    inside this call. Run-time operations (Neuron Adjust hooks) cannot be merged: they stay
    applied to the copy, in training and in the probe. ValueError when the probe has no concept
    prompts or the corpus no sentence to train on."""
    t0 = time.perf_counter()
    prompts, which = _probe_prompts(probe)
    if not prompts:
        raise ValueError(f"The probe of {probe.name!r} has no concept prompts to test relearning on.")
    texts, excluded = relearn_texts(corpus, probe, cfg.max_paragraphs)
    base, edited = _answered(bundle, prompts, (None, adapter), max_new_tokens)
    runtime = None if adapter is None or not adapter.hooks else dataclasses.replace(adapter, deltas={})
    model: torch.nn.Module | None = edited_copy(bundle, adapter)
    twin: ModelBundle | None = dataclasses.replace(bundle, hf_model=model)  # the bundle's tokenizer and hash
    try:
        with use(twin, runtime):
            losses = fine_tune(model, bundle.tokenizer, texts, cfg, progress)  # type: ignore[arg-type]
        (relearned,) = _answered(twin, prompts, (runtime,), max_new_tokens)
    finally:
        model = twin = None  # the copy goes now (about the model's size again, plus optimizer state)
        gc.collect()
        trim_heap()
    return RelearnReport(
        paragraphs=len(texts), excluded=excluded, epochs=cfg.epochs, steps=len(losses), lr=cfg.lr,
        weights=cfg.weights, prompts=which, n_prompts=len(prompts), base=base, edited=edited, relearned=relearned,
        recovered=recovered_fraction(base, edited, relearned), loss_first=losses[0], loss_last=losses[-1],
        seconds=time.perf_counter() - t0,
    )
