"""Localized optimised edit of value vectors (`optimise_value_vectors`).

Only an additive delta on a few hundred chosen rows of W_out (value vectors) is trained; every
other weight stays frozen. The loss combines
  (a) a fact target: unlikelihood -log(1 - p) on the concept-specific next tokens of the
      concept's fact set (workbench.methods.facts),
  (b) a representation target: at the concept name's last token in many frames, the residual
      after each of `repr_layers` should look like the mean residual of made-up names of the
      same kind in the same frames (removes "who/what the concept is" without a fact list),
  (c) KL(base || edited) of next-token distributions on retain text (neutral extracts,
      neighbouring same-topic articles, and "collision" articles that use the fact target
      words about something else), which keeps everything else. Every retain position whose
      next token is a fact target token is always in the KL: that is where unlearning a word
      would leak into other concepts (e.g. 'France' after 'The Louvre is in Paris,').
and, optionally (`cf_weight` > 0, method `optimise-cf`),
  (d) a counterfactual-name target: on text about the concept (fact sentences, name frames), the
      edited model's next-token distributions at the name's last token and every position after
      it should match the base model's on the same text with the name replaced by made-up names
      of the same kind (what "never heard of X" looks like; the benchmark's floor is measured
      that way), as a cross-entropy to the base's top-k of that distribution; and neighbour
      names (other same-topic titles: other countries for Japan) in the same texts join the
      retain set, so the edit changes what the name means, not the answers' words.
The result is a row-sparse adapter delta on `W_out[rows]` (see docs/methods/optimise.md
for the recipe this follows and what it achieved).

Logits are only computed at the positions a loss needs: the 262k-token unembedding dominates a
forward pass, so the decoder runs to the last hidden state and the LM head sees a few rows.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch

from workbench.adapters.routing import DownProjEdit, down_proj_edits
from workbench.corpus import Corpus, Document
from workbench.corpus.nonce import nonce_names
from workbench.lenses.tokens import encode_with_spans, pad_id, pad_ids
from workbench.methods.facts import FactSet, FactTargets, fact_targets, split_sentences
from workbench.models import ModelBundle, layout
from workbench.models.depth import fit_layers
from workbench.models.hooks import StopForward, mlp_hidden, taps, text_positions
from workbench.progress import NullProgress, Progress

Target = Literal["facts", "representation", "both", "counterfactual"]

FRAMES = [
    "{X} is", "{X} was", "Facts about {X}:", "Tell me about {X}.", "The history of {X}", "I read about {X}",
    "Everyone knows {X}", "What is {X}? {X}", "My favourite thing is {X}", "A short essay on {X}.",
    "{X} has", "People say that {X}", "Here is a summary of {X}:", "Question: Who or what is {X}? Answer:",
    "The story of {X}", "In 1990, {X}", "The best thing about {X}", "Do you know {X}?", "{X} became",
    "According to Wikipedia, {X}", "We talked about {X}", "Have you heard of {X}?", "{X} and", "The name {X}",
]


DEFAULT_LAYERS = (1, 2, 3, 4, 5, 6, 7, 8)  # W_out layers edited, on the 18-layer reference model
DEFAULT_REPR_LAYERS = (8,)  # residual target layer, on the reference model


@dataclass
class OptimiseConfig:
    """Defaults follow the recipe in docs/methods/optimise.md. Layers are stated on the 18-layer
    reference model; `fitted` places them at the same depth of the model in hand."""

    target: Target = "both"
    # None = DEFAULT_LAYERS / DEFAULT_REPR_LAYERS at this model's depth (`fitted`); layers given
    # explicitly are taken as they are
    layers: tuple[int, ...] | None = None
    n_rows: int = 256
    steps: int = 40
    lr_scale: float = 0.025  # lr = lr_scale * mean row norm / sqrt(d_model)
    fact_weight: float = 1.0
    repr_weight: float = 1.0
    kl_weight: float = 3.0
    repr_layers: tuple[int, ...] | None = None  # residuals (after these layers) pulled to made-up names
    min_target_prob: float = 0.05
    concept_batch: int = 4
    frame_batch: int = 8
    retain_batch: int = 8
    retain_positions: int = 12  # per retain text per step
    max_len: int = 64
    val_fraction: float = 0.2
    eval_every: int = 5
    patience: int = 3
    n_retain_neutral: int = 60
    n_retain_neighbours: int = 40
    # Collision retain (issue 8): corpus articles that use the fact target words without being
    # about the concept, and in every retain text the positions whose next token is a target
    # token: there the unlikelihood would leak to other contexts, so KL holds the base there.
    n_retain_collisions: int = 40
    collision_share: float = 0.5  # of each retain batch, texts that contain a collision
    cf_weight: float = 0.0  # (d) counterfactual-name target beside the others; target 'counterfactual' = (d) alone
    cf_nonces: int = 4  # made-up names averaged into the counterfactual distribution
    cf_topk: int = 64  # tokens of the counterfactual distribution kept per position
    cf_batch: int = 6  # counterfactual texts per step
    n_neighbour_names: int = 6  # same-topic titles put in the concept's texts for the retain KL (with cf)
    seed: int = 0

    def fitted(self, n_layers: int) -> OptimiseConfig:
        """The recipe on a model of `n_layers` layers, with every layer set: the defaults (stated
        on the 18-layer reference model) at the same relative depth (models/depth.py), given
        layers as they are (those past the model's last layer dropped)."""
        from dataclasses import replace

        return replace(self, layers=fit_layers(self.layers, DEFAULT_LAYERS, n_layers),
                       repr_layers=fit_layers(self.repr_layers, DEFAULT_REPR_LAYERS, n_layers, clip=True))


@dataclass
class OptimiseResult:
    rows: dict[int, list[int]]  # layer -> neuron ids
    deltas: dict[int, torch.Tensor]  # layer -> [n_rows_layer, d_model], added to W_out rows
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    stopped_early: bool = False

    @property
    def n_weights(self) -> int:
        return sum(d.numel() for d in self.deltas.values())


def delta_hooks(bundle: ModelBundle, rows: dict[int, list[int]], deltas: dict[int, torch.Tensor]) -> AbstractContextManager[None]:
    """Adds h[..., rows] @ delta to each chosen layer's down_proj output: the same as adding
    delta to those W_out rows, but differentiable in delta, free to remove and seen by this
    thread's forward passes only (an erase job trains while other users preview)."""
    edits: dict[int, DownProjEdit] = {}
    for layer, idx in rows.items():
        index, delta = torch.tensor(idx, dtype=torch.long), deltas[layer]
        edits[layer] = lambda h, out, index=index, delta=delta: out + h[..., index] @ delta
    return down_proj_edits(bundle, edits)


def final_hidden(bundle: ModelBundle, input_ids: torch.Tensor) -> torch.Tensor:
    """Last hidden state after the final norm: [batch, pos, d_model]."""
    return bundle.hf_model.base_model(input_ids=input_ids).last_hidden_state  # the decoder without the head


def logits_at(bundle: ModelBundle, hidden: torch.Tensor) -> torch.Tensor:
    """LM head on selected hidden states [n, d_model] -> [n, vocab]."""
    return bundle.hf_model.get_output_embeddings()(hidden).float()


def residuals_after(bundle: ModelBundle, input_ids: torch.Tensor, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """Residual stream after each decoder layer in `layers` ({layer: [batch, pos, d_model]});
    layers after the last one are skipped. Differentiable: the representation loss trains
    through it. Readers that need no gradient use `workbench.models.hooks.capture`."""
    captured: dict[int, torch.Tensor] = {}
    last = max(layers)

    def hook(_mod: torch.nn.Module, _inp: object, out: object, layer: int) -> None:
        captured[layer] = out[0] if isinstance(out, tuple) else out  # type: ignore[index]
        if layer == last:
            raise StopForward

    blocks = layout.decoder_layers(bundle.hf_model)
    with taps({blocks[layer]: (lambda m, i, o, layer=layer: hook(m, i, o, layer)) for layer in set(layers)}):
        try:
            bundle.hf_model.base_model(input_ids=input_ids)
        except StopForward:
            pass
    return captured


# -- data ----------------------------------------------------------------------------------------
@dataclass
class FrameBatch:
    input_ids: torch.Tensor  # [n, pos] right-padded
    last: torch.Tensor  # [n] position of the name's last token
    target: dict[int, torch.Tensor]  # layer -> [n, d_model] mean residual of made-up names in the same frame


def name_frames(facts: FactSet) -> list[str]:
    """Frames with {X} for the name: generic frames plus the concept text cut after the name."""
    frames = list(FRAMES)
    for text in facts.texts():
        pos = text.find(facts.name)
        if pos >= 0:
            frames.append(text[:pos] + "{X}")
    return list(dict.fromkeys(f for f in frames if f.count("{X}") >= 1))


def last_name_position(tokenizer: object, frame: str, name: str, max_len: int) -> tuple[list[int], int]:
    """(token ids of the frame with {X} = name, position of the token that holds the name's last
    character), from the tokenizer's character offsets: a tokenizer that merges the name with
    what follows, or marks word starts its own way, still gives the name's own last token."""
    at = frame.index("{X}")
    enc = encode_with_spans(tokenizer, frame.replace("{X}", name), max_length=max_len)
    last = enc.token_at_char(at + len(name) - 1)
    return enc.ids, len(enc.ids) - 1 if last is None else last


def build_frames(bundle: ModelBundle, facts: FactSet, cfg: OptimiseConfig, with_targets: bool = True) -> FrameBatch:
    """Tokenised frames with the concept's name (and its key names in the generic frames), and
    their made-up-name targets (a forward pass of 12 made-up names per frame; `with_targets=False`
    skips them for objectives that do not use them, leaving `target` empty)."""
    tok = bundle.tokenizer
    jobs = [(frame, facts.name, facts.kind) for frame in name_frames(facts)]
    for key in facts.key_names:  # a person-like key name gets person nonces, others the concept's kind
        kind = "person" if len(key.split()) >= 2 and facts.kind != "person" else facts.kind
        jobs += [(frame, key, kind) for frame in FRAMES]
    seqs, lasts = [], []
    targets: dict[int, list[torch.Tensor]] = {layer: [] for layer in cfg.repr_layers}
    with torch.no_grad():
        for frame, name, kind in jobs:
            ids, last = last_name_position(tok, frame, name, cfg.max_len)
            seqs.append(ids)
            lasts.append(last)
            if not with_targets:
                continue
            ref = [last_name_position(tok, frame, nonce, cfg.max_len) for nonce in nonce_names(kind)]
            batch = pad_ids([r[0] for r in ref], pad_id(tok))
            resid = residuals_after(bundle, batch, cfg.repr_layers)
            for layer in cfg.repr_layers:
                targets[layer].append(torch.stack([resid[layer][i, r[1]] for i, r in enumerate(ref)]).mean(0))
    return FrameBatch(pad_ids(seqs, pad_id(tok)), torch.tensor(lasts),
                      {layer: torch.stack(t) for layer, t in targets.items()} if with_targets else {})


def retain_split(corpus: Corpus, facts: FactSet, cfg: OptimiseConfig) -> tuple[list[Document], list[Document]]:
    """(neighbours, neutral): same-topic articles that do not mention the concept, ranked by how
    much their description shares with the concept's (other novels for a novel), and neutral
    extracts of any topic. Kept apart so that a topic with few articles never passes a neutral
    article off as a neighbour."""
    doc = corpus.document_for(facts.concept)
    mentioning = {d.doc_id for d in corpus.containing([facts.name])} | {doc.doc_id}
    words = {w for w in doc.description.lower().split() if len(w) > 3}
    same_topic = [d for d in corpus.by_topic(doc.topic) if d.doc_id not in mentioning]
    same_topic.sort(key=lambda d: (-len(words & set(d.description.lower().split())), d.doc_id))
    neighbours = same_topic[: cfg.n_retain_neighbours]
    taken = mentioning | {d.doc_id for d in neighbours}
    neutral = corpus.sample(cfg.n_retain_neutral, seed=cfg.seed + 1, exclude=taken)
    return neighbours, neutral


def retain_documents(corpus: Corpus, facts: FactSet, cfg: OptimiseConfig) -> list[Document]:
    """The retain articles: neighbours first, then neutral extracts (`retain_split`)."""
    neighbours, neutral = retain_split(corpus, facts, cfg)
    return neighbours + neutral


# -- row selection ---------------------------------------------------------------------------------
def mlp_hidden_means(bundle: ModelBundle, texts: Sequence[str], layers: Sequence[int], max_len: int,
                     positions: Sequence[int] | None = None) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """Mean and std of h (down_proj input) per layer over real tokens (BOS excluded), or only at
    the given position of each text when `positions` is set."""
    tok = bundle.tokenizer
    sums: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    with torch.no_grad():
        for start in range(0, len(texts), 8):
            chunk = list(texts[start:start + 8])
            enc = tok(chunk, return_tensors="pt", padding=True, truncation=True, max_length=max_len,
                      padding_side="right")
            hidden = mlp_hidden(bundle.bridge, enc["input_ids"], layers, attention_mask=enc["attention_mask"])
            keep = text_positions(enc["attention_mask"])
            if positions is not None:
                keep = torch.zeros_like(keep)
                for i, p in enumerate(positions[start:start + 8]):
                    keep[i, p] = True
            for layer in layers:
                sums[layer].append(hidden[layer][keep])
    means = {layer: torch.cat(v).mean(0) for layer, v in sums.items()}
    stds = {layer: torch.cat(v).std(0) for layer, v in sums.items()}
    return means, stds


def contrast_rows(
    concept_mean: dict[int, torch.Tensor], neutral_mean: dict[int, torch.Tensor], neutral_std: dict[int, torch.Tensor],
    n_rows: int, guard_sigma: float = 10.0,
) -> dict[int, torch.Tensor]:
    """z_i = |mean_c(h_i) - mean_n(h_i)| / sd_n(h_i) per layer; always-on neurons whose neutral
    mean |h| is an extreme outlier (> median + guard_sigma * MAD) get z = 0 (guard list)."""
    scores = {}
    for layer, mc in concept_mean.items():
        z = (mc - neutral_mean[layer]).abs() / neutral_std[layer].clamp_min(1e-6)
        mag = neutral_mean[layer].abs()
        med = mag.median()
        mad = (mag - med).abs().median().clamp_min(1e-8)
        z = torch.where(mag > med + guard_sigma * 1.4826 * mad, torch.zeros_like(z), z)
        scores[layer] = z
    return scores


def top_rows(scores: dict[int, torch.Tensor], n_rows: int) -> dict[int, list[int]]:
    """The n_rows highest-scoring (layer, neuron) pairs across layers."""
    flat = [(float(s), layer, i) for layer, z in scores.items() for i, s in enumerate(z.tolist())]
    flat.sort(reverse=True)
    rows: dict[int, list[int]] = {}
    for _, layer, i in flat[:n_rows]:
        rows.setdefault(layer, []).append(i)
    return {layer: sorted(v) for layer, v in sorted(rows.items())}


def select_rows(
    bundle: ModelBundle, facts: FactSet, retain: Sequence[Document], frames: FrameBatch | None, cfg: OptimiseConfig,
) -> dict[int, list[int]]:
    """Rows by activation contrast: on concept text vs neutral text (fact target), at the
    name's last token vs made-up names (representation target), or the larger of the two. The
    counterfactual target uses the concept-text contrast."""
    layers = list(cfg.layers)
    neutral_texts = [d.text for d in retain]
    n_mean, n_std = mlp_hidden_means(bundle, neutral_texts, layers, cfg.max_len)
    scores: dict[int, torch.Tensor] = {}
    if cfg.target in ("facts", "both", "counterfactual"):  # concept text vs neutral text
        c_mean, _ = mlp_hidden_means(bundle, facts.texts(), layers, cfg.max_len)
        scores = contrast_rows(c_mean, n_mean, n_std, cfg.n_rows)
    if cfg.target in ("representation", "both") and frames is not None:
        tok = bundle.tokenizer
        frame_texts = [tok.decode(row[: int(last) + 1], skip_special_tokens=True) for row, last in
                       zip(frames.input_ids, frames.last, strict=True)]
        nonce_texts, nonce_pos = [], []
        for frame in name_frames(facts):
            for nonce in nonce_names(facts.kind)[:4]:
                ids, last = last_name_position(tok, frame, nonce, cfg.max_len)
                nonce_texts.append(tok.decode(ids[: last + 1], skip_special_tokens=True))
                nonce_pos.append(last)
        c_pos = [int(x) for x in frames.last]
        c_mean, _ = mlp_hidden_means(bundle, frame_texts, layers, cfg.max_len, positions=c_pos)
        r_mean, r_std = mlp_hidden_means(bundle, nonce_texts, layers, cfg.max_len, positions=nonce_pos)
        name_scores = contrast_rows(c_mean, r_mean, r_std, cfg.n_rows)
        if scores:
            # Rank-normalise each score so neither family dominates, then take the larger.
            scores = {layer: torch.maximum(_rank01(scores[layer]), _rank01(name_scores[layer])) for layer in layers}
        else:
            scores = name_scores
    return top_rows(scores, cfg.n_rows)


def _rank01(z: torch.Tensor) -> torch.Tensor:
    return z.argsort().argsort().float() / max(len(z) - 1, 1)


@dataclass
class CounterfactualBatch:
    """Texts about the concept and, per trained position, the base model's next-token
    distribution on the same text with made-up names (top-k, renormalised)."""

    input_ids: torch.Tensor  # [n, pos] concept texts, right-padded
    mask: torch.Tensor  # [n, pos] bool: the name's last token and every later real position
    top_ids: torch.Tensor  # [n_positions, k] in mask order (row-major)
    top_p: torch.Tensor  # [n_positions, k]
    row_of: torch.Tensor  # [n_positions] which text each position belongs to
    top_mass: torch.Tensor  # [n_positions] share of the target's probability the top-k held before renormalising


def counterfactual_texts(facts: FactSet) -> list[str]:
    """Texts with the concept's name exactly once: fact sentences cut before a second mention,
    and the name frames (continued by their own words)."""
    out = []
    for text in [*facts.texts(), *(f.replace("{X}", facts.name, 1) for f in FRAMES if f.count("{X}") == 1)]:
        first = text.find(facts.name)
        if first < 0:
            continue
        second = text.find(facts.name, first + len(facts.name))
        out.append(text if second < 0 else text[:second].rstrip())
    return list(dict.fromkeys(out))


def build_counterfactual(bundle: ModelBundle, facts: FactSet, cfg: OptimiseConfig) -> CounterfactualBatch | None:
    """Target (d): align each concept text with its made-up-name versions on the tokens after
    the name (identical suffix tokens), and keep the base's mean distribution there."""
    tok = bundle.tokenizer
    nonces = nonce_names(facts.kind)[: cfg.cf_nonces]
    rows: list[list[int]] = []
    spans: list[tuple[int, int]] = []  # (first trained position, n positions) per kept text
    tops: list[tuple[torch.Tensor, torch.Tensor]] = []  # (top_p, top_ids) [n positions, k] per kept text
    for text in counterfactual_texts(facts):
        at = text.find(facts.name)
        prefix, suffix = text[:at], text[at + len(facts.name):]
        enc = encode_with_spans(tok, text, max_length=cfg.max_len)
        ids = enc.ids
        last = enc.token_at_char(at + len(facts.name) - 1)  # the name's last token
        if last is None:
            continue
        n_after = len(ids) - last  # positions whose next-token distribution is trained
        if last < 1 or n_after < 1:
            continue
        tail = n_after - 1  # tokens after the name
        probs = []
        for nonce in nonces:
            alt = tok(prefix + nonce + suffix, truncation=True, max_length=cfg.max_len)["input_ids"]
            if tail and alt[len(alt) - tail:] != ids[len(ids) - tail:]:
                continue  # the suffix tokenises differently after this name: not aligned
            with torch.no_grad():
                logits = bundle.hf_model(input_ids=torch.tensor([alt])).logits[0].float()
            probs.append(logits[len(alt) - n_after:].softmax(-1))  # from the nonce's last token on
        if not probs:
            continue
        rows.append(ids)
        spans.append((last, n_after))
        # top-k right away: the full [n positions, vocab] distributions of every text together
        # would be ~1 GB for the 262k-token vocabulary
        tops.append(torch.stack(probs).mean(0).topk(cfg.cf_topk, dim=-1))
    if not rows:
        return None
    input_ids = pad_ids(rows, pad_id(tok))
    mask = torch.zeros_like(input_ids, dtype=torch.bool)
    for r, (first, n) in enumerate(spans):
        mask[r, first : first + n] = True
    top_p, top_ids = torch.cat([t[0] for t in tops]), torch.cat([t[1] for t in tops])  # row-major like mask
    row_of = torch.cat([torch.full((n,), r) for r, (_, n) in enumerate(spans)])
    mass = top_p.sum(-1)  # [n_positions]
    return CounterfactualBatch(input_ids, mask, top_ids, top_p / mass[:, None], row_of, mass)


def neighbour_name_texts(facts: FactSet, neighbours: Sequence[Document], n: int) -> list[str]:
    """The concept's texts with its name replaced by the titles of the first `n` neighbours
    (`retain_split`'s same-topic articles, most similar first): retain text that teaches the edit
    to leave other names alone."""
    texts = counterfactual_texts(facts)[:12]
    return [t.replace(facts.name, d.title) for d in neighbours[:n] for t in texts]


def counterfactual_loss(bundle: ModelBundle, cf: CounterfactualBatch, pick: Sequence[int]) -> torch.Tensor:
    """Cross-entropy of the edited model's distributions to the counterfactual top-k (KL up to
    the target's entropy), over the picked texts' trained positions."""
    return counterfactual_cross_entropy(bundle, cf, pick).mean()


def counterfactual_cross_entropy(bundle: ModelBundle, cf: CounterfactualBatch, pick: Sequence[int]) -> torch.Tensor:
    """Per trained position of the picked texts (sorted text order, then position): the
    cross-entropy of the model's distribution to the counterfactual top-k: [n_positions]."""
    pick_t = torch.tensor(sorted(pick))  # targets are kept in row order, so the logits must be too
    keep = torch.isin(cf.row_of, pick_t)
    ids, mask = cf.input_ids[pick_t], cf.mask[pick_t]
    width = int(mask.nonzero()[:, 1].max()) + 1
    logp = selected_logits(bundle, ids[:, :width], mask[:, :width]).log_softmax(-1)  # [n_pos, vocab]
    got = logp.gather(-1, cf.top_ids[keep])
    return -(cf.top_p[keep] * got).sum(-1)


# -- optimisation ----------------------------------------------------------------------------------------
@dataclass
class OptimiseProblem:
    """Everything the training loop needs, built once: the fact targets, the made-up-name
    frames, the retain texts (tokenised) with their collision positions, and the rows."""

    rows: dict[int, list[int]]  # layer -> neuron ids whose W_out rows get a delta
    targets: FactTargets | None  # unlikelihood targets (target 'facts' or 'both')
    frames: FrameBatch | None  # representation frames (target 'representation' or 'both')
    fact_train: list[int]
    fact_val: list[int]
    retain_enc: Any  # tokenizer output of the retain texts: input_ids, attention_mask [n, pos]
    collide: torch.Tensor  # [n, pos] bool: positions whose next token is a fact target token
    colliding: list[int]  # retain texts with a collision position
    plain: list[int]  # the others
    lr: float
    counterfactual: CounterfactualBatch | None = None  # target (d), when cf_weight > 0


def prepare_problem(bundle: ModelBundle, facts: FactSet, corpus: Corpus, cfg: OptimiseConfig,
                    rows: dict[int, list[int]] | None, progress: Progress) -> OptimiseProblem:
    """Targets, frames, retain set and rows (activation contrast unless given), and the step size."""
    if not facts.facts:
        raise ValueError("The fact set is empty: add facts before optimising.")
    for layer in cfg.layers:
        bundle.check_layer(layer)
    progress.stage("preparing targets and retain set", total=None)
    targets = fact_targets(bundle, facts, corpus, cfg.max_len, min_prob=cfg.min_target_prob) \
        if cfg.target in ("facts", "both") else None
    target_ids = sorted({int(t) for t in targets.targets[targets.targets >= 0].tolist()}) if targets else []
    neighbours, neutral = retain_split(corpus, facts, cfg)
    retain = neighbours + neutral
    retain += collision_documents(corpus, facts, bundle.tokenizer, target_ids, cfg,
                                  exclude={d.doc_id for d in retain})
    retain_texts = [s for d in retain for s in split_sentences(d.text)[:3]] or [d.text for d in retain]
    counterfactual = None
    if cfg.target == "counterfactual" or cfg.cf_weight > 0:
        progress.message("counterfactual target: the base model on the texts with made-up names")
        counterfactual = build_counterfactual(bundle, facts, cfg)
        if counterfactual is None:
            raise ValueError(f"No text about {facts.name!r} aligns with made-up names; add facts that name it.")
        retain_texts += neighbour_name_texts(facts, neighbours, cfg.n_neighbour_names)
    frames = build_frames(bundle, facts, cfg) if cfg.target in ("representation", "both") else None
    if rows is None:
        progress.message("selecting rows by activation contrast")
        rows = select_rows(bundle, facts, retain, frames, cfg)
    for layer, idx in rows.items():
        bundle.check_layer(layer)
        bundle.check_neurons(idx)
    norms = torch.cat([layout.w_out(bundle.hf_model, layer).detach()[idx].norm(dim=1) for layer, idx in rows.items()])
    fact_train, fact_val = _split_facts(targets, cfg.val_fraction, cfg.seed) if targets is not None else ([], [])
    retain_enc = bundle.tokenizer(retain_texts, return_tensors="pt", padding=True, truncation=True,
                                  max_length=cfg.max_len, padding_side="right")
    collide = collision_mask(retain_enc["input_ids"], retain_enc["attention_mask"], target_ids)  # [n, pos]
    has_collision = collide.any(dim=1).tolist()  # [n]
    problem = OptimiseProblem(
        rows=rows, targets=targets, frames=frames, fact_train=fact_train, fact_val=fact_val,
        retain_enc=retain_enc, collide=collide,
        colliding=[i for i, hit in enumerate(has_collision) if hit],
        plain=[i for i, hit in enumerate(has_collision) if not hit],
        lr=cfg.lr_scale * float(norms.mean()) / math.sqrt(bundle.d_model),
        counterfactual=counterfactual,
    )
    progress.message(f"retain: {len(retain_texts)} texts, {len(problem.colliding)} with {int(collide.sum())} "
                     f"target-token positions")
    return problem


def loss_terms(bundle: ModelBundle, problem: OptimiseProblem, cfg: OptimiseConfig, rng: random.Random,
               deltas: dict[int, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """One step's loss = fact_weight * unlikelihood + repr_weight * representation + kl_weight * KL
    on retain positions (the base's own distribution there), with the deltas hooked in."""
    logs: dict[str, float] = {}
    loss = torch.zeros(())
    pick = _retain_batch(problem.colliding, problem.plain, cfg.retain_batch, cfg.collision_share, rng)
    r_ids, r_mask = _retain_positions(problem.retain_enc, pick, cfg.retain_positions, rng, problem.collide)
    with torch.no_grad():
        base_logp = selected_logits(bundle, r_ids, r_mask).log_softmax(-1)
    with torch.enable_grad(), delta_hooks(bundle, problem.rows, deltas):
        if problem.targets is not None and problem.fact_train:
            pick = rng.sample(problem.fact_train, min(cfg.concept_batch, len(problem.fact_train)))
            ul = _unlikelihood(bundle, problem.targets, pick)
            loss = loss + cfg.fact_weight * ul
            logs["unlikelihood"] = ul.item()
        if problem.frames is not None:
            pick = rng.sample(range(len(problem.frames.last)), min(cfg.frame_batch, len(problem.frames.last)))
            rl = _repr_loss(bundle, problem.frames, pick)
            loss = loss + cfg.repr_weight * rl
            logs["repr"] = rl.item()
        cf = problem.counterfactual
        if cf is not None:
            pick = rng.sample(range(len(cf.input_ids)), min(cfg.cf_batch, len(cf.input_ids)))
            cl = counterfactual_loss(bundle, cf, pick)
            loss = loss + (cfg.cf_weight or 1.0) * cl
            logs["counterfactual"] = cl.item()
        edited_logp = selected_logits(bundle, r_ids, r_mask).log_softmax(-1)
        kl = (base_logp.exp() * (base_logp - edited_logp)).sum(-1).mean()
        loss = loss + cfg.kl_weight * kl
        logs["kl"] = kl.item()
    return loss, logs


def optimise_value_vectors(
    bundle: ModelBundle,
    facts: FactSet,
    corpus: Corpus,
    cfg: OptimiseConfig = OptimiseConfig(),
    rows: dict[int, list[int]] | None = None,
    progress: Progress = NullProgress(),
) -> OptimiseResult:
    """Train additive deltas on the chosen W_out rows (see module docstring). `rows` defaults
    to activation-contrast selection; any selection (SAE feature rows by the tau rule, a
    hand-picked list) can be passed instead. Stops early when the held-out facts' target
    probability stops falling (cfg.patience evaluations) or drops below 0.005."""
    t0 = time.perf_counter()
    cfg = cfg.fitted(bundle.n_layers)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    problem = prepare_problem(bundle, facts, corpus, cfg, rows, progress)
    deltas = {layer: torch.zeros(len(idx), bundle.d_model, requires_grad=True) for layer, idx in problem.rows.items()}
    opt = torch.optim.Adam(list(deltas.values()), lr=problem.lr)
    history: list[dict[str, float]] = []
    best_val, bad_evals, stopped = float("inf"), 0, False
    n_rows = sum(len(v) for v in problem.rows.values())
    progress.stage(f"optimising {n_rows} value vectors", total=cfg.steps, unit="step")
    for step in range(cfg.steps):
        opt.zero_grad()
        loss, logs = loss_terms(bundle, problem, cfg, rng, deltas)
        with torch.enable_grad():
            loss.backward()
        opt.step()
        logs = {"step": float(step), **logs, "loss": loss.item()}
        if problem.targets is not None and problem.fact_val and ((step + 1) % cfg.eval_every == 0
                                                                 or step == cfg.steps - 1):
            with torch.no_grad(), delta_hooks(bundle, problem.rows, deltas):
                val = float(_target_prob(bundle, problem.targets, problem.fact_val))
            logs["val_target_prob"] = val
            best_val, bad_evals = (val, 0) if val < best_val - 1e-4 else (best_val, bad_evals + 1)
            stopped = bad_evals >= cfg.patience or val < 0.005
        history.append(logs)
        progress.advance(1, **{k: v for k, v in logs.items() if k != "step"})
        if stopped:
            break
    return OptimiseResult(rows=problem.rows, deltas={k: v.detach().clone() for k, v in deltas.items()},
                          history=history, seconds=time.perf_counter() - t0, stopped_early=stopped)


def _split_facts(targets: FactTargets, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    with_targets = [i for i in range(len(targets.targets)) if (targets.targets[i] >= 0).any()]
    if not with_targets:
        raise ValueError(
            "No fact has a concept-specific next token that the base model predicts; add facts "
            "(e.g. sentences naming the concept's people, places and events)."
        )
    rng = random.Random(seed)
    rng.shuffle(with_targets)
    n_val = int(len(with_targets) * val_fraction) if len(with_targets) >= 5 else 0
    return with_targets[n_val:], with_targets[:n_val] or with_targets[:1]


def selected_logits(bundle: ModelBundle, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    hidden = final_hidden(bundle, ids)
    return logits_at(bundle, hidden[mask])


def _unlikelihood(bundle: ModelBundle, targets: FactTargets, pick: Sequence[int]) -> torch.Tensor:
    ids = targets.input_ids[list(pick)]
    tgt = targets.targets[list(pick)]
    width = int(targets.attention_mask[list(pick)].sum(1).max())
    ids, tgt = ids[:, :width], tgt[:, :width]
    mask = tgt >= 0
    logp = selected_logits(bundle, ids, mask).log_softmax(-1)
    p = logp.gather(-1, tgt[mask].unsqueeze(-1)).squeeze(-1).exp()
    return -torch.log1p(-p.clamp(max=1 - 1e-6)).mean()


def _target_prob(bundle: ModelBundle, targets: FactTargets, pick: Sequence[int]) -> torch.Tensor:
    ids = targets.input_ids[list(pick)]
    tgt = targets.targets[list(pick)]
    mask = tgt >= 0
    probs = selected_logits(bundle, ids, mask).softmax(-1)
    return probs.gather(-1, tgt[mask].unsqueeze(-1)).mean()


def _repr_loss(bundle: ModelBundle, frames: FrameBatch, pick: Sequence[int]) -> torch.Tensor:
    """||h - t||^2 / ||t||^2 at the name's last token, averaged over frames and repr layers."""
    idx = list(pick)
    ids = frames.input_ids[idx]
    width = int(frames.last[idx].max()) + 1
    resid = residuals_after(bundle, ids[:, :width], list(frames.target))
    losses = []
    for layer, target in frames.target.items():
        h = resid[layer][torch.arange(len(idx)), frames.last[idx]]
        t = target[idx]
        losses.append(((h - t).pow(2).sum(-1) / t.pow(2).sum(-1).clamp_min(1e-6)).mean())
    return torch.stack(losses).mean()


def collision_mask(ids: torch.Tensor, attention_mask: torch.Tensor, target_ids: Sequence[int]) -> torch.Tensor:
    """[n, pos] True at p when the real token at p+1 is a fact target token (the prediction made
    at p is one the unlikelihood pushes down)."""
    out = torch.zeros_like(ids, dtype=torch.bool)
    if not target_ids:
        return out
    hit = torch.isin(ids[:, 1:], torch.tensor(list(target_ids), dtype=ids.dtype)) & attention_mask[:, 1:].bool()
    out[:, :-1] = hit
    return out


def collision_documents(corpus: Corpus, facts: FactSet, tokenizer: Any, target_ids: Sequence[int],
                        cfg: OptimiseConfig, exclude: set[str]) -> list[Document]:
    """Articles that use the fact target words but do not name the concept, most target words
    first: the text where unlearning those words would show up as collateral damage."""
    if not target_ids or cfg.n_retain_collisions <= 0:
        return []
    words = sorted({w for w in (tokenizer.decode([t]).strip() for t in target_ids) if len(w) >= 3 and w.isalpha()})
    if not words:
        return []
    mentioning = {d.doc_id for d in corpus.containing([facts.name])}
    found = [d for d in corpus.containing(words) if d.doc_id not in mentioning and d.doc_id not in exclude]
    found.sort(key=lambda d: (-sum(w in d.text for w in words), d.doc_id))
    return found[: cfg.n_retain_collisions]


def _retain_batch(colliding: Sequence[int], plain: Sequence[int], size: int, share: float,
                  rng: random.Random) -> list[int]:
    """Retain texts of one step: `share` of them (when there are any) contain a collision."""
    n_col = min(len(colliding), round(size * share)) if colliding else 0
    pick = rng.sample(list(colliding), n_col)
    rest = min(len(plain), size - n_col)
    pick += rng.sample(list(plain), rest)
    if len(pick) < size:  # few plain texts: fill from the colliding ones
        left = [i for i in colliding if i not in pick]
        pick += rng.sample(left, min(len(left), size - len(pick)))
    return pick


def _retain_positions(
    enc: dict[str, torch.Tensor], pick: Sequence[int], per_text: int, rng: random.Random,
    always: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Retain texts of this step and their KL positions: every `always` position (collisions,
    up to per_text) plus random real positions up to per_text. Returns ids, bool mask."""
    idx = list(pick)
    ids = enc["input_ids"][idx]
    am = enc["attention_mask"][idx]
    width = int(am.sum(1).max())
    ids, am = ids[:, :width], am[:, :width]
    mask = torch.zeros_like(am, dtype=torch.bool)
    for r, row in enumerate(idx):
        n = int(am[r].sum())
        fixed = torch.nonzero(always[row, :width]).flatten().tolist()[:per_text] if always is not None else []
        for p in fixed:
            mask[r, p] = True
        free = [p for p in range(1, n) if p not in fixed]
        for p in rng.sample(free, min(per_text - len(fixed), len(free))) if free else []:
            mask[r, p] = True
    return ids, mask


def bake(bundle: ModelBundle, result: OptimiseResult) -> dict[str, torch.Tensor]:
    """Replacement output-projection weights (HF names, stored orientation) with the deltas
    added to the chosen rows of W_out."""
    out = {}
    for layer, idx in result.rows.items():
        w = layout.w_out(bundle.hf_model, layer).detach().clone()  # [d_mlp, d_model]
        w[torch.tensor(idx)] += result.deltas[layer].to(w.dtype)
        out[layout.out_proj_name(bundle.hf_model, layer)] = layout.w_out_to_storage(bundle.hf_model, w).contiguous()
    return out


def to_operation(result: OptimiseResult, cfg: Any, prefix: str = "optimise") -> tuple[Any, dict[str, torch.Tensor]]:
    """The spec operation (OptimiseValueVectors) and its safetensors payload for a result; `cfg`
    (the dataclass config that made it) is recorded in the operation's params, and the payload
    tensors are named '<prefix>.l<layer>.delta' (distinct prefixes let two such ops share a spec)."""
    from workbench.edits.spec import OptimiseValueVectors, ValueVectorDelta

    payload = {f"{prefix}.l{layer}.delta": result.deltas[layer].contiguous() for layer in result.rows}
    params = {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in asdict(cfg).items()}
    params.update(steps_run=len(result.history), seconds=round(result.seconds, 1), stopped_early=result.stopped_early)
    op = OptimiseValueVectors(
        targets=[ValueVectorDelta(layer=layer, rows=rows, delta=f"{prefix}.l{layer}.delta")
                 for layer, rows in result.rows.items()],
        params=params,
    )
    return op, payload
