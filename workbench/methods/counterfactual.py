"""The counterfactual-name target (issue 16): on text about the concept, the base model's own
next-token distributions on the same text with the name replaced by made-up names of the same
kind (what "never heard of X" looks like; the benchmark's floor is measured that way).

The localized optimisation (`optimise-cf`) trains towards it as a cross-entropy to the base's
top-k; the key rewrite (`rewrite-cf`) fits its desired outputs to it. Neighbour names (other
same-topic titles) in the same texts are what the edit must leave alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from workbench.corpus import Document
from workbench.corpus.nonce import nonce_names
from workbench.lenses.tokens import encode_with_spans, pad_id, pad_ids
from workbench.methods.facts import FactSet
from workbench.methods.frames import FRAMES, FramesConfig
from workbench.methods.readout import selected_logits
from workbench.models import ModelBundle


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


def build_counterfactual(bundle: ModelBundle, facts: FactSet, cfg: FramesConfig,
                         max_len: int) -> CounterfactualBatch | None:
    """Align each concept text with its made-up-name versions on the tokens after the name
    (identical suffix tokens), and keep the base's mean distribution there (top `cf_topk` of
    `cf_nonces` made-up names); texts cut to `max_len` tokens. None when no text aligns."""
    tok = bundle.tokenizer
    nonces = nonce_names(facts.kind)[: cfg.cf_nonces]
    rows: list[list[int]] = []
    spans: list[tuple[int, int]] = []  # (first trained position, n positions) per kept text
    tops: list[tuple[torch.Tensor, torch.Tensor]] = []  # (top_p, top_ids) [n positions, k] per kept text
    for text in counterfactual_texts(facts):
        at = text.find(facts.name)
        prefix, suffix = text[:at], text[at + len(facts.name):]
        enc = encode_with_spans(tok, text, max_length=max_len)
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
            alt = tok(prefix + nonce + suffix, truncation=True, max_length=max_len)["input_ids"]
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
