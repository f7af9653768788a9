"""Feature catalogue of an SAE as plain data (numpy / pandas), built in one corpus sweep.

Per feature f:
- vocab projection of the decoder direction d_f: top/bottom tokens with logits. Gain handling
  (docs/architecture.md, "Lenses"): P(z) = (gamma_f * z) @ U with z the direction d_f writes into the
  residual stream. At `hook_mlp_out` (after the post-FFN RMSNorm) d_f already is a residual
  direction, so z = d_f: there is no lens choice. At the pre-norm `mlp.hook_out`, z =
  gamma_post * d_f ('gain_aware', default) or d_f ('reference'). At `mlp.hook_post` (neuron
  space), z = gamma_post * (d_f @ W_out) (or without gamma_post for 'reference').
- density (fraction of tokens with activation > 0), max and mean activation over a corpus
  sample, the top-activating snippets (at most one per document, activating token marked
  with [[...]]), and an automatic label (the most frequent top-activating tokens).

PISCES "features of the weights" (docs/methods/pisces.md): s[i, f] = u_i . e_f with e_f the raw
encoder column (no bias, no activation) and u_i the W_out row as the SAE sees it:
gamma_post * v_i at `hook_mlp_out` (gain-aware; v_i for 'reference', the PISCES code's
behaviour on Gemma 2), v_i at `mlp.hook_out`, the unit vector of neuron i at `mlp.hook_post`
(so s[i, f] = W_enc[i, f]).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from workbench.corpus.batches import token_batches
from workbench.corpus.documents import Document
from workbench.lenses.tokens import clean_token_mask, vocab_strings
from workbench.lenses.vocab import project_topk
from workbench.models import layout
from workbench.models.hooks import capture, text_positions
from workbench.models.sites import SAESite
from workbench.ops.pisces import unit_rows
from workbench.progress import NullProgress, Progress

Lens = Literal["gain_aware", "reference"]
MARK_OPEN, MARK_CLOSE = "[[", "]]"
# corpus tokens of a catalogue sweep unless a caller asks otherwise: the one default of the
# catalogue builders, the CLI and the first start
CATALOGUE_TOKENS = 50_000


# ---------------------------------------------------------------------------------------------
# Decoder directions and weight rows at an SAE's site
# ---------------------------------------------------------------------------------------------
def decoder_directions(hf_model: Any, sae: Any, site: SAESite, lens: Lens = "gain_aware") -> torch.Tensor:
    """Residual-stream directions of the decoder rows, final gain folded in: [d_sae, d_model]."""
    w_dec = sae.W_dec.detach().float()  # [d_sae, d_in]
    gamma_post = layout.post_ffn_gain(hf_model, site.layer)
    if site.decoder_site == "hook_mlp_out":  # an output SAE, or a transcoder's writes
        z = w_dec
    elif site.decoder_site == "mlp.hook_out":
        z = w_dec * gamma_post if lens == "gain_aware" else w_dec
    else:
        z = w_dec @ layout.w_out(hf_model, site.layer).detach().float()
        z = z * gamma_post if lens == "gain_aware" else z
    return z * layout.final_gain(hf_model)


def weight_rows(hf_model: Any, site: SAESite, lens: Lens = "gain_aware") -> torch.Tensor:
    """The layer's W_out rows in the space the feature columns live in: [d_mlp, d_in]
    (an SAE's input space; a transcoder's output space, where its decoder writes)."""
    rows = layout.w_out(hf_model, site.layer).detach().float()  # [d_mlp, d_model]
    space = site.decoder_site if site.is_transcoder else site.site
    if space == "hook_mlp_out":
        return rows * layout.post_ffn_gain(hf_model, site.layer) if lens == "gain_aware" else rows
    if space == "mlp.hook_out":
        return rows
    return torch.eye(rows.shape[0])


def feature_columns(sae: Any, site: SAESite) -> torch.Tensor:
    """The per-feature directions the W_out rows are scored against: [d_in, d_sae].

    An SAE on the MLP output: its raw encoder columns e_f (PISCES: how strongly a value vector
    would activate the feature). A transcoder reads the MLP's input, so its encoder says nothing
    about the rows; its unit decoder directions d_f say how much of each row's write is the
    feature's (the same space as an output SAE's decoder)."""
    if site.is_transcoder:
        return unit_rows(sae.W_dec).T  # W_dec: [d_sae, d_out]
    return sae.W_enc.detach().float()


# ---------------------------------------------------------------------------------------------
# The catalogue
# ---------------------------------------------------------------------------------------------
@dataclass
class FeatureCatalogue:
    """Everything the store keeps about one SAE's features; frames are ready to insert."""

    sae_id: str
    hook_name: str
    d_sae: int
    lens: str
    corpus_id: str
    n_tokens: int
    features: pd.DataFrame  # feature, density, max_act, mean_act, label, top_tokens, bottom_tokens
    tokens: pd.DataFrame  # feature, side, rank, token_id, token, logit
    examples: pd.DataFrame  # feature, rank, doc_id, title, topic, token_pos, token, activation, snippet
    seconds: float = 0.0


@dataclass
class _RunningTop:
    """Per-feature running top-n of (activation, doc row, position): memory O(d_sae * n)."""

    values: torch.Tensor  # [d_sae, n]
    docs: torch.Tensor  # [d_sae, n] int64, index into the sweep's documents (-1 = empty)
    pos: torch.Tensor  # [d_sae, n] int64

    @classmethod
    def empty(cls, d_sae: int, n: int) -> _RunningTop:
        return cls(torch.full((d_sae, n), -torch.inf), torch.full((d_sae, n), -1, dtype=torch.long),
                   torch.zeros((d_sae, n), dtype=torch.long))

    def merge(self, values: torch.Tensor, docs: torch.Tensor, pos: torch.Tensor) -> None:
        """values/docs/pos: [d_sae, m] candidates from one batch."""
        n = self.values.shape[1]
        v = torch.cat([self.values, values], 1)
        d = torch.cat([self.docs, docs], 1)
        p = torch.cat([self.pos, pos], 1)
        top, idx = v.topk(n, dim=1)
        self.values, self.docs, self.pos = top, d.gather(1, idx), p.gather(1, idx)


@dataclass
class _SweepStats:
    """What one sweep over the documents gathers per feature (see `_sweep`)."""

    fired: torch.Tensor  # [d_sae] tokens with activation > 0
    act_sum: torch.Tensor  # [d_sae] float64
    max_act: torch.Tensor  # [d_sae]
    top: _RunningTop  # the strongest (document, position) per feature
    doc_ids: list[torch.Tensor]  # per swept document: its token ids (for snippets)
    n_tokens: int


@torch.no_grad()
def build_catalogue(
    bundle: Any,
    sae: Any,
    sae_id: str,
    documents: Sequence[Document],
    corpus_id: str = "wiki-en",
    max_tokens: int = CATALOGUE_TOKENS,
    n_examples: int = 8,
    k_tokens: int = 30,
    lens: Lens = "gain_aware",
    context_size: int = 128,
    batch_size: int = 8,
    snippet_before: int = 12,
    snippet_after: int = 4,
    progress: Progress | None = None,
) -> FeatureCatalogue:
    """Build the catalogue of all features: vocab projection, then ONE sweep over `documents`
    (up to `max_tokens` tokens) with running density/max/top-examples per feature."""
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    site = SAESite.of_sae(sae)
    bundle.check_layer(site.layer)
    d_sae = int(sae.cfg.d_sae)
    strings = vocab_strings(bundle.tokenizer, bundle.vocab_size)

    progress.stage("Vocab projection of decoder directions", total=1)
    dirs = decoder_directions(bundle.hf_model, sae, site, lens)
    proj = project_topk(dirs, layout.unembed(bundle.hf_model), k=k_tokens,
                        mask=clean_token_mask(bundle.tokenizer, bundle.vocab_size))
    progress.advance(1)

    progress.stage(f"Activations over {corpus_id}", total=max_tokens, unit="tok")
    stats = _sweep(bundle, sae, site, [d.text for d in documents], n_examples, max_tokens, context_size,
                   batch_size, progress)
    examples = _example_frame(stats, documents, strings, snippet_before, snippet_after)
    top_lists = [[strings[t] for t in row] for row in proj.top_ids[:, :10].tolist()]
    bottom_lists = [[strings[t] for t in row] for row in proj.bottom_ids[:, :10].tolist()]
    features = pd.DataFrame({
        "feature": np.arange(d_sae, dtype=np.int32),
        "density": (stats.fired / stats.n_tokens).numpy().astype(np.float32),
        "max_act": stats.max_act.numpy().astype(np.float32),
        "mean_act": (stats.act_sum / stats.n_tokens).float().numpy().astype(np.float32),
        "label": auto_labels(examples, top_lists, d_sae),
        "top_tokens": top_lists,
        "bottom_tokens": bottom_lists,
    })
    progress.close()
    return FeatureCatalogue(sae_id=sae_id, hook_name=site.hook_name, d_sae=d_sae, lens=lens,
                            corpus_id=corpus_id, n_tokens=stats.n_tokens, features=features,
                            tokens=_token_frame(proj, strings, d_sae), examples=examples,
                            seconds=time.perf_counter() - t0)


def _sweep(bundle: Any, sae: Any, site: SAESite, texts: Sequence[str], n_examples: int, max_tokens: int,
           context_size: int, batch_size: int, progress: Progress) -> _SweepStats:
    """One pass over the texts: per feature, how often and how strongly it fires, and its
    strongest position in each document (merged into a running top-n)."""
    d_sae = int(sae.cfg.d_sae)
    stats = _SweepStats(torch.zeros(d_sae), torch.zeros(d_sae, dtype=torch.float64), torch.zeros(d_sae),
                        _RunningTop.empty(d_sae, n_examples), [], 0)
    for batch in token_batches(bundle.tokenizer, texts, max_len=context_size, batch_size=batch_size,
                               max_tokens=max_tokens):
        cache = capture(bundle.bridge, batch.input_ids, [site.hook_name], attention_mask=batch.attention_mask)
        acts = cache[site.hook_name].float()  # [batch, pos, d_in]
        b = acts.shape[0]
        keep = text_positions(batch.attention_mask)
        doc_max = torch.zeros(b, d_sae)
        doc_pos = torch.zeros(b, d_sae, dtype=torch.long)
        # Streaming: one document's [pos, d_sae] at a time (at 262k features and 128 positions
        # that is the largest tensor), never a [tokens, d_sae] tensor for the whole batch or sweep.
        for i in range(b):
            where = torch.nonzero(keep[i]).flatten()  # text positions of document i
            if not len(where):
                continue
            feats = sae.encode(acts[i, where])  # [n_i, d_sae]
            stats.fired += (feats > 0).float().sum(0)
            stats.act_sum += feats.double().sum(0)
            best, at = feats.max(dim=0)  # one candidate per (document, feature): its strongest position
            stats.max_act = torch.maximum(stats.max_act, best)
            doc_max[i], doc_pos[i] = best.clamp_min(0), where[at]
        rows = torch.tensor(batch.doc_index, dtype=torch.long)
        stats.top.merge(doc_max.T.contiguous(), rows.unsqueeze(0).expand(d_sae, b).contiguous(),
                        doc_pos.T.contiguous())
        for i in range(b):
            stats.doc_ids.append(batch.input_ids[i, : int(batch.attention_mask[i].sum())].clone())
        stats.n_tokens += int(keep.sum())
        progress.advance(int(keep.sum()))
    if stats.n_tokens == 0:
        raise ValueError("The corpus sample has no tokens to build a catalogue from.")
    return stats


def _example_frame(stats: _SweepStats, documents: Sequence[Document], strings: Sequence[str],
                   snippet_before: int, snippet_after: int) -> pd.DataFrame:
    """The top-activating snippets per feature, strongest first (at most one per document)."""
    top = stats.top
    rows = []
    for f in range(top.values.shape[0]):
        for r in range(top.values.shape[1]):
            v = float(top.values[f, r])
            di = int(top.docs[f, r])
            if di < 0 or not v > 0:
                break
            pos = int(top.pos[f, r])
            ids = stats.doc_ids[di].tolist()
            doc = documents[di]
            rows.append((f, r, doc.doc_id, doc.title, doc.topic, pos, strings[ids[pos]], v,
                         _snippet(ids, pos, strings, snippet_before, snippet_after)))
    examples = pd.DataFrame(rows, columns=["feature", "rank", "doc_id", "title", "topic",
                                           "token_pos", "token", "activation", "snippet"])
    return examples.astype({"feature": "int32", "rank": "int16", "doc_id": "int32",
                            "token_pos": "int32", "activation": "float32"})


def _snippet(ids: list[int], pos: int, strings: Sequence[str], before: int, after: int) -> str:
    start = max(1, pos - before)  # skip BOS
    left = "".join(strings[t] for t in ids[start:pos])
    right = "".join(strings[t] for t in ids[pos + 1 : pos + 1 + after])
    return f"{'…' if start > 1 else ''}{left}{MARK_OPEN}{strings[ids[pos]]}{MARK_CLOSE}{right}".replace("\n", " ")


def _token_frame(proj: Any, strings: Sequence[str], d_sae: int) -> pd.DataFrame:
    k = proj.top_ids.shape[1]
    parts = []
    for side, ids, logits in (("top", proj.top_ids, proj.top_logits), ("bottom", proj.bottom_ids, proj.bottom_logits)):
        flat_ids = ids.reshape(-1).numpy()
        parts.append(pd.DataFrame({
            "feature": np.repeat(np.arange(d_sae, dtype=np.int32), k),
            "side": side,
            "rank": np.tile(np.arange(k, dtype=np.int16), d_sae),
            "token_id": flat_ids.astype(np.int32),
            "token": [strings[t] for t in flat_ids],
            "logit": logits.reshape(-1).numpy().astype(np.float32),
        }))
    return pd.concat(parts, ignore_index=True)


def auto_labels(examples: pd.DataFrame, top_tokens: list[list[str]], d_sae: int, n: int = 3) -> list[str]:
    """Label = 'what it fires on -> what it promotes': the most frequent activating tokens of
    the top examples (ties by activation), then the first vocab tokens of the decoder
    direction. Many mid-layer features fire on function tokens (' from', "'") and are told
    apart by what they write, so both halves matter. A feature with no example is 'dead'."""
    labels = [""] * d_sae
    promotes = [" ".join(t.strip() for t in top_tokens[f][:n] if t.strip()) for f in range(d_sae)]
    if len(examples):
        for f, group in examples.groupby("feature", sort=False):
            counts: Counter[str] = Counter()
            weight: dict[str, float] = {}
            for tok, act in zip(group["token"], group["activation"], strict=True):
                t = tok.strip() or repr(tok)
                counts[t] += 1
                weight[t] = weight.get(t, 0.0) + float(act)
            best = sorted(counts, key=lambda t: (-counts[t], -weight[t]))[:n]
            labels[int(f)] = " / ".join(best) + " → " + promotes[int(f)]
    for f in range(d_sae):
        if not labels[f]:
            labels[f] = "dead · → " + promotes[f]
    return labels


# ---------------------------------------------------------------------------------------------
# PISCES: features of the weights
# ---------------------------------------------------------------------------------------------
def row_feature_matrix(hf_model: Any, sae: Any, lens: Lens = "gain_aware") -> torch.Tensor:
    """s[i, f] = u_i . e_f for every W_out row i and feature f: [d_mlp, d_sae] (for small SAEs
    and tests; `row_feature_scores` streams over feature blocks)."""
    site = SAESite.of_sae(sae)
    return weight_rows(hf_model, site, lens) @ feature_columns(sae, site)


@torch.no_grad()
def row_feature_scores(hf_model: Any, sae: Any, layer: int | None = None, top_per_row: int = 16,
                       top_per_feature: int = 16, lens: Lens = "gain_aware",
                       block: int = 8192) -> pd.DataFrame:
    """The largest |s[i, f]| per row and per feature (union), with ranks:
    columns layer, neuron, feature, score, row_rank, feature_rank (-1 = not in that top).

    Streams over blocks of `block` features (a row's top is merged block by block), so a
    262k-feature SAE needs [d_mlp, block] at a time, not the [d_mlp, d_sae] matrix (2 GB)."""
    site = SAESite.of_sae(sae)
    rows = weight_rows(hf_model, site, lens)  # [m, d_in]
    cols = feature_columns(sae, site)  # [d_in, f]
    m, f = rows.shape[0], cols.shape[1]
    kr, kf = min(top_per_row, f), min(top_per_feature, m)
    row_top = torch.full((m, 0), -1.0)  # running |s| of each row's best features
    row_feat = torch.zeros((m, 0), dtype=torch.long)
    feat_pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []  # (neuron, feature, rank)
    for start in range(0, f, block):
        a = (rows @ cols[:, start : start + block]).abs()  # [m, b]
        top = a.topk(kf, dim=0).indices  # [kf, b]
        b = a.shape[1]
        feat_pairs.append((top.reshape(-1), (torch.arange(b) + start).expand(kf, b).reshape(-1),
                           torch.arange(kf, dtype=torch.int16).unsqueeze(1).expand(kf, b).reshape(-1)))
        vals, idx = torch.cat([row_top, a], 1), torch.cat([row_feat, torch.arange(b).expand(m, b) + start], 1)
        best = vals.topk(min(kr, vals.shape[1]), dim=1).indices
        row_top, row_feat = vals.gather(1, best), idx.gather(1, best)
    r_neuron = torch.arange(m).unsqueeze(1).expand_as(row_feat).reshape(-1)
    r_rank = torch.arange(row_feat.shape[1], dtype=torch.int16).expand_as(row_feat).reshape(-1)
    f_neuron, f_feature, f_rank = (torch.cat(parts) for parts in zip(*feat_pairs, strict=True))
    pairs = pd.DataFrame({"neuron": r_neuron.numpy(), "feature": row_feat.reshape(-1).numpy(),
                          "row_rank": r_rank.numpy()})
    by_feature = pd.DataFrame({"neuron": f_neuron.numpy(), "feature": f_feature.numpy(),
                               "feature_rank": f_rank.numpy()})
    both = pairs.merge(by_feature, on=["neuron", "feature"], how="outer").sort_values(["neuron", "feature"])
    neurons = torch.tensor(both["neuron"].to_numpy(dtype=np.int64))
    feats = torch.tensor(both["feature"].to_numpy(dtype=np.int64))
    score = torch.cat([(rows[neurons[i : i + block]] * cols[:, feats[i : i + block]].T).sum(1)  # s[i, f], kept pairs
                       for i in range(0, len(neurons), block)]) if len(neurons) else torch.zeros(0)
    return pd.DataFrame({
        "layer": np.full(len(neurons), site.layer if layer is None else layer, dtype=np.int32),
        "neuron": neurons.numpy().astype(np.int32),
        "feature": feats.numpy().astype(np.int32),
        "score": score.numpy().astype(np.float32),
        "row_rank": both["row_rank"].fillna(-1).to_numpy().astype(np.int16),
        "feature_rank": both["feature_rank"].fillna(-1).to_numpy().astype(np.int16),
    }).reset_index(drop=True)


@torch.no_grad()
def tau_rows(hf_model: Any, sae: Any, feature: int, tau: float, lens: Lens = "gain_aware") -> pd.DataFrame:
    """PISCES row selection R_f = {i : |s[i, f]| > tau * max_j |s[j, f]|}, strongest first:
    columns neuron, score."""
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must be in [0, 1] (got {tau}).")
    d_sae = int(sae.cfg.d_sae)
    if not 0 <= feature < d_sae:
        raise ValueError(f"Feature {feature} is out of range: the SAE has {d_sae} features.")
    site = SAESite.of_sae(sae)
    col = weight_rows(hf_model, site, lens) @ feature_columns(sae, site)[:, feature]  # [d_mlp]
    a = col.abs()
    chosen = (a > tau * a.max()).nonzero(as_tuple=True)[0]
    order = a[chosen].argsort(descending=True)
    chosen = chosen[order]
    return pd.DataFrame({"neuron": chosen.numpy().astype(np.int32),
                         "score": col[chosen].numpy().astype(np.float32)})


# ---------------------------------------------------------------------------------------------
# Concept contrast
# ---------------------------------------------------------------------------------------------
@torch.no_grad()
def mean_feature_activation(bundle: Any, sae: Any, texts: Sequence[str], max_tokens: int = 20_000,
                            context_size: int = 128, batch_size: int = 8) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean activation [d_sae], firing frequency [d_sae], n tokens) over the texts' tokens."""
    site = SAESite.of_sae(sae)
    d_sae = int(sae.cfg.d_sae)
    total = torch.zeros(d_sae, dtype=torch.float64)
    fired = torch.zeros(d_sae)
    n = 0
    for batch in token_batches(bundle.tokenizer, list(texts), max_len=context_size,
                               batch_size=batch_size, max_tokens=max_tokens):
        cache = capture(bundle.bridge, batch.input_ids, [site.hook_name], attention_mask=batch.attention_mask)
        keep = text_positions(batch.attention_mask)
        feats = sae.encode(cache[site.hook_name].float()[keep])
        total += feats.double().sum(0)
        fired += (feats > 0).float().sum(0)
        n += feats.shape[0]
    if n == 0:
        raise ValueError("No tokens in the texts.")
    return (total / n).float(), fired / n, n


def feature_contrast(bundle: Any, sae: Any, concept: Any, max_tokens: int = 20_000,
                     context_size: int = 128) -> pd.DataFrame:
    """Mean activation of every feature on a concept set's positive vs negative documents:
    columns feature, mean_pos, mean_neg, freq_pos, freq_neg, diff; sorted by diff."""
    mp, fp, _ = mean_feature_activation(bundle, sae, [d.text for d in concept.positive], max_tokens, context_size)
    mn, fn, _ = mean_feature_activation(bundle, sae, [d.text for d in concept.negative], max_tokens, context_size)
    frame = pd.DataFrame({
        "feature": np.arange(len(mp), dtype=np.int32),
        "mean_pos": mp.numpy(), "mean_neg": mn.numpy(),
        "freq_pos": fp.numpy(), "freq_neg": fn.numpy(),
        "diff": (mp - mn).numpy(),
    })
    return frame.sort_values("diff", ascending=False, ignore_index=True)

