"""The concept's name in frames, and other names in its place.

`FRAMES` are generic prompts with {X} for a name; `build_frames` puts the concept's name (and its
key names) into them with, per frame, the mean residual of made-up names of the same kind: the
representation target ("the name looks made-up"). `FramesConfig` sets how the concept's texts are
turned into made-up-name and neighbour-name versions for the counterfactual target
(`workbench.methods.counterfactual`) and the names an edit must leave alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.corpus.nonce import nonce_names
from workbench.lenses.tokens import encode_with_spans, pad_id, pad_ids
from workbench.methods.facts import FactSet
from workbench.methods.readout import residuals_after
from workbench.models import ModelBundle

FRAMES = [
    "{X} is", "{X} was", "Facts about {X}:", "Tell me about {X}.", "The history of {X}", "I read about {X}",
    "Everyone knows {X}", "What is {X}? {X}", "My favourite thing is {X}", "A short essay on {X}.",
    "{X} has", "People say that {X}", "Here is a summary of {X}:", "Question: Who or what is {X}? Answer:",
    "The story of {X}", "In 1990, {X}", "The best thing about {X}", "Do you know {X}?", "{X} became",
    "According to Wikipedia, {X}", "We talked about {X}", "Have you heard of {X}?", "{X} and", "The name {X}",
]


@dataclass(frozen=True)
class FramesConfig:
    """Other names in the concept's place: made-up names for the counterfactual target (what "never
    heard of X" looks like), same-topic neighbour names for what the edit must not move."""

    cf_nonces: int = 4  # made-up names averaged into the counterfactual distribution
    cf_topk: int = 64  # tokens of the counterfactual distribution kept per position
    cf_batch: int = 6  # counterfactual texts per optimisation step
    # same-topic titles (retain_split's neighbours, most similar first) held in place of the
    # concept's name: put in its texts for the optimisation's retain KL, their keys kept by the
    # rewrite's solve (0 = none)
    n_neighbour_names: int = 6


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


def build_frames(bundle: ModelBundle, facts: FactSet, repr_layers: Sequence[int], max_len: int,
                 with_targets: bool = True) -> FrameBatch:
    """Tokenised frames with the concept's name (and its key names in the generic frames), and
    their made-up-name targets after each of `repr_layers` (a forward pass of 12 made-up names per
    frame; `with_targets=False` skips them for objectives that do not use them, leaving `target`
    empty)."""
    tok = bundle.tokenizer
    jobs = [(frame, facts.name, facts.kind) for frame in name_frames(facts)]
    for key in facts.key_names:  # a person-like key name gets person nonces, others the concept's kind
        kind = "person" if len(key.split()) >= 2 and facts.kind != "person" else facts.kind
        jobs += [(frame, key, kind) for frame in FRAMES]
    seqs, lasts = [], []
    targets: dict[int, list[torch.Tensor]] = {layer: [] for layer in repr_layers}
    with torch.no_grad():
        for frame, name, kind in jobs:
            ids, last = last_name_position(tok, frame, name, max_len)
            seqs.append(ids)
            lasts.append(last)
            if not with_targets:
                continue
            ref = [last_name_position(tok, frame, nonce, max_len) for nonce in nonce_names(kind)]
            batch = pad_ids([r[0] for r in ref], pad_id(tok))
            resid = residuals_after(bundle, batch, repr_layers)
            for layer in repr_layers:
                targets[layer].append(torch.stack([resid[layer][i, r[1]] for i, r in enumerate(ref)]).mean(0))
    return FrameBatch(pad_ids(seqs, pad_id(tok)), torch.tensor(lasts),
                      {layer: torch.stack(t) for layer, t in targets.items()} if with_targets else {})
