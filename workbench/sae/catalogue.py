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
from workbench.progress import NullProgress, Progress

Lens = Literal["gain_aware", "reference"]
MARK_OPEN, MARK_CLOSE = "[[", "]]"


# ---------------------------------------------------------------------------------------------
# Decoder directions and weight rows at an SAE's site
# ---------------------------------------------------------------------------------------------
def decoder_directions(hf_model: Any, sae: Any, site: SAESite, lens: Lens = "gain_aware") -> torch.Tensor:
    """Residual-stream directions of the decoder rows, final gain folded in: [d_sae, d_model]."""
    w_dec = sae.W_dec.detach().float()  # [d_sae, d_in]
    gamma_post = layout.post_ffn_gain(hf_model, site.layer)
    if site.site == "hook_mlp_out":
        z = w_dec
    elif site.site == "mlp.hook_out":
        z = w_dec * gamma_post if lens == "gain_aware" else w_dec
    else:
        z = w_dec @ layout.w_out(hf_model, site.layer).detach().float()
        z = z * gamma_post if lens == "gain_aware" else z
    return z * layout.final_gain(hf_model)


def weight_rows(hf_model: Any, site: SAESite, lens: Lens = "gain_aware") -> torch.Tensor:
    """The layer's W_out rows in the SAE's input space: [d_mlp, d_in]."""
    rows = layout.w_out(hf_model, site.layer).detach().float()  # [d_mlp, d_model]
    if site.site == "hook_mlp_out":
        return rows * layout.post_ffn_gain(hf_model, site.layer) if lens == "gain_aware" else rows
    if site.site == "mlp.hook_out":
        return rows
    return torch.eye(rows.shape[0])


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


@torch.no_grad()
def build_catalogue(
    bundle: Any,
    sae: Any,
    sae_id: str,
    documents: Sequence[Document],
    corpus_id: str = "wiki-en",
    max_tokens: int = 50_000,
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
    tokenizer = bundle.tokenizer
    vocab = bundle.vocab_size
    strings = vocab_strings(tokenizer, vocab)

    progress.stage("Vocab projection of decoder directions", total=1)
    dirs = decoder_directions(bundle.hf_model, sae, site, lens)
    proj = project_topk(dirs, layout.unembed(bundle.hf_model), k=k_tokens,
                        mask=clean_token_mask(tokenizer, vocab))
    progress.advance(1)

    progress.stage(f"Activations over {corpus_id}", total=max_tokens, unit="tok")
    fired = torch.zeros(d_sae)
    act_sum = torch.zeros(d_sae, dtype=torch.float64)
    max_act = torch.zeros(d_sae)
    running = _RunningTop.empty(d_sae, n_examples)
    all_ids: list[torch.Tensor] = []  # per document: its token ids (for snippets)
    n_tokens = 0
    texts = [d.text for d in documents]
    for batch in token_batches(tokenizer, texts, max_len=context_size, batch_size=batch_size,
                               max_tokens=max_tokens):
        cache = capture(bundle.bridge, batch.input_ids, [site.hook_name], attention_mask=batch.attention_mask)
        acts = cache[site.hook_name].float()  # [batch, pos, d_in]
        b = acts.shape[0]
        keep = text_positions(batch.attention_mask)
        doc_max = torch.zeros(b, d_sae)
        doc_pos = torch.zeros(b, d_sae, dtype=torch.long)
        # Streaming: one document's [pos, d_sae] at a time (134 MB at 262k features and 128
        # positions), never a [tokens, d_sae] tensor for the whole batch or sweep.
        for i in range(b):
            where = torch.nonzero(keep[i]).flatten()  # text positions of document i
            if not len(where):
                continue
            feats = sae.encode(acts[i, where])  # [n_i, d_sae]
            fired += (feats > 0).float().sum(0)
            act_sum += feats.double().sum(0)
            best, at = feats.max(dim=0)  # one candidate per (document, feature): its strongest position
            max_act = torch.maximum(max_act, best)
            doc_max[i], doc_pos[i] = best.clamp_min(0), where[at]
        rows = torch.tensor(batch.doc_index, dtype=torch.long)
        running.merge(doc_max.T.contiguous(), rows.unsqueeze(0).expand(d_sae, b).contiguous(),
                      doc_pos.T.contiguous())
        for i in range(b):
            all_ids.append(batch.input_ids[i, : int(batch.attention_mask[i].sum())].clone())
        n_tokens += int(keep.sum())
        progress.advance(int(keep.sum()))
    if n_tokens == 0:
        raise ValueError("The corpus sample has no tokens to build a catalogue from.")

    density = (fired / n_tokens).numpy()
    mean_act = (act_sum / n_tokens).float().numpy()
    ex_rows = []
    for f in range(d_sae):
        for r in range(n_examples):
            v = float(running.values[f, r])
            di = int(running.docs[f, r])
            if di < 0 or not v > 0:
                break
            pos = int(running.pos[f, r])
            ids = all_ids[di].tolist()
            doc = documents[di]
            ex_rows.append((f, r, doc.doc_id, doc.title, doc.topic, pos, strings[ids[pos]], v,
                            _snippet(ids, pos, strings, snippet_before, snippet_after)))
    examples = pd.DataFrame(ex_rows, columns=["feature", "rank", "doc_id", "title", "topic",
                                              "token_pos", "token", "activation", "snippet"])
    examples = examples.astype({"feature": "int32", "rank": "int16", "doc_id": "int32",
                                "token_pos": "int32", "activation": "float32"})
    tokens = _token_frame(proj, strings, d_sae)
    top_lists = [[strings[t] for t in row] for row in proj.top_ids[:, :10].tolist()]
    bottom_lists = [[strings[t] for t in row] for row in proj.bottom_ids[:, :10].tolist()]
    labels = auto_labels(examples, top_lists, d_sae)
    features = pd.DataFrame({
        "feature": np.arange(d_sae, dtype=np.int32),
        "density": density.astype(np.float32),
        "max_act": max_act.numpy().astype(np.float32),
        "mean_act": mean_act.astype(np.float32),
        "label": labels,
        "top_tokens": top_lists,
        "bottom_tokens": bottom_lists,
    })
    progress.close()
    return FeatureCatalogue(sae_id=sae_id, hook_name=site.hook_name, d_sae=d_sae, lens=lens,
                            corpus_id=corpus_id, n_tokens=n_tokens, features=features,
                            tokens=tokens, examples=examples, seconds=time.perf_counter() - t0)


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
    """s[i, f] = u_i . e_f for every W_out row i and feature f: [d_mlp, d_sae]."""
    site = SAESite.of_sae(sae)
    return weight_rows(hf_model, site, lens) @ sae.W_enc.detach().float()


@torch.no_grad()
def row_feature_scores(hf_model: Any, sae: Any, layer: int | None = None, top_per_row: int = 16,
                       top_per_feature: int = 16, lens: Lens = "gain_aware") -> pd.DataFrame:
    """The largest |s[i, f]| per row and per feature (union), with ranks:
    columns layer, neuron, feature, score, row_rank, feature_rank (-1 = not in that top)."""
    site = SAESite.of_sae(sae)
    s = row_feature_matrix(hf_model, sae, lens)  # [d_mlp, d_sae]
    m, f = s.shape
    a = s.abs()
    kr, kf = min(top_per_row, f), min(top_per_feature, m)
    r_idx = a.topk(kr, dim=1).indices  # [m, kr]
    f_idx = a.topk(kf, dim=0).indices  # [kf, f]
    row_rank = torch.full((m, f), -1, dtype=torch.int16)
    row_rank.scatter_(1, r_idx, torch.arange(kr, dtype=torch.int16).expand(m, kr).contiguous())
    feat_rank = torch.full((m, f), -1, dtype=torch.int16)
    feat_rank.scatter_(0, f_idx, torch.arange(kf, dtype=torch.int16).unsqueeze(1).expand(kf, f).contiguous())
    sel = (row_rank >= 0) | (feat_rank >= 0)
    neurons, feats = sel.nonzero(as_tuple=True)
    return pd.DataFrame({
        "layer": np.full(len(neurons), site.layer if layer is None else layer, dtype=np.int32),
        "neuron": neurons.numpy().astype(np.int32),
        "feature": feats.numpy().astype(np.int32),
        "score": s[neurons, feats].numpy().astype(np.float32),
        "row_rank": row_rank[neurons, feats].numpy(),
        "feature_rank": feat_rank[neurons, feats].numpy(),
    })


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
    col = weight_rows(hf_model, site, lens) @ sae.W_enc.detach().float()[:, feature]  # [d_mlp]
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

