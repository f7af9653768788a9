"""PISCES erasure pipeline (docs/methods/pisces.md): candidate features with their evidence, neuron
signs, a default selection and a small tau x mu search, ending in a remove_sae_features spec.

Candidates are ranked by activation contrast on the fact set vs retain text (measured: vocab
projection alone finds no concept features in a small SAE here); each carries its vocab match
to the concept tokens and the effect of removing it alone (tau 0.9, mu 16) on the fact set's
concept-token probability. The search scores HM(efficacy, specificity) with efficacy = the
relative drop of that probability and specificity = exp(-KL(base || edited)) on retain text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.adapters import use
from workbench.corpus import Corpus
from workbench.edits.compile import compile_spec
from workbench.edits.spec import EditSpec, ModelRef, RemoveSaeFeatures, SaeRef, sae_sha256
from workbench.lenses.vocab import project_topk
from workbench.methods.facts import FactSet, FactTargets, fact_targets
from workbench.methods.readout import selected_logits
from workbench.methods.retain import RetainConfig, retain_split
from workbench.models import ModelBundle, layout
from workbench.models.hooks import capture, mlp_hidden, text_positions
from workbench.models.sites import SAESite
from workbench.progress import NULL_PROGRESS, Progress
from workbench.sae.catalogue import decoder_directions


@dataclass
class FeatureCandidate:
    feature: int
    act_concept: float  # mean activation on fact-set tokens
    act_neutral: float  # mean activation on retain tokens
    vocab_hits: int  # concept tokens among the decoder direction's top-50 tokens
    removal_effect: float = float("nan")  # relative change of concept-token prob when removed alone
    selected: bool = False
    dropped_by: str = ""


@dataclass
class PiscesResult:
    spec: EditSpec
    candidates: list[FeatureCandidate]
    grid: list[dict[str, float]]


def find_local_sae(saes_dir: Path, model_id: str, layer: int, site: str | None = None,
                   sae_id: str | None = None) -> Path:
    """The local SAE folder `sae_id`, or else the newest one for this model and layer (trained by
    `sae train`), of one site ('hook_mlp_out', 'mlp.hook_out') when given."""
    from workbench.sae.train import safe_model_id, site_short

    if sae_id:
        path = Path(saes_dir) / sae_id
        if not (path / "sae_weights.safetensors").exists():
            raise FileNotFoundError(f"No local SAE {sae_id!r} in {saes_dir}.")
        return path

    pattern = f"{safe_model_id(model_id)}.l{layer}.{site_short(site) if site else '*'}.*"
    folders = sorted((p for p in Path(saes_dir).glob(pattern) if p.is_dir()
                      and (p / "sae_weights.safetensors").exists()), key=lambda p: p.stat().st_mtime)
    if not folders:
        hook = f" --hook {site}" if site else ""
        raise FileNotFoundError(f"No local SAE for {model_id} layer {layer}{' at ' + site if site else ''} in "
                                f"{saes_dir}; train one with `python -m workbench sae train --layer {layer}{hook}`.")
    return folders[-1]


def _feature_means(bundle: ModelBundle, sae: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean SAE activation over the real tokens of a batch, at the SAE's own hook: [d_sae]."""
    site = SAESite.of_sae(sae)
    with torch.no_grad():
        cache = capture(bundle.bridge, ids, [site.hook_name])
        return sae.encode(cache[site.hook_name][text_positions(mask)].float()).mean(0)


def neuron_signs(bundle: ModelBundle, targets: FactTargets, layer: int) -> dict[int, int]:
    """eta_i: majority sign of h_i (down_proj input) at the positions that predict a concept token."""
    with torch.no_grad():
        hidden = mlp_hidden(bundle.bridge, targets.input_ids, [layer], attention_mask=targets.attention_mask)[layer]
    h = hidden[targets.targets >= 0]  # [n_positions, d_mlp]
    votes = torch.sign(h).sum(0)
    return {i: (1 if v >= 0 else -1) for i, v in enumerate(votes.tolist())}


def _concept_prob(bundle: ModelBundle, targets: FactTargets) -> float:
    mask = targets.targets >= 0
    with torch.no_grad():
        probs = selected_logits(bundle, targets.input_ids, mask).softmax(-1)
    return float(probs.gather(-1, targets.targets[mask].unsqueeze(-1)).mean())


def _retain_kl(bundle: ModelBundle, ids: torch.Tensor, mask: torch.Tensor, base_logp: torch.Tensor) -> float:
    with torch.no_grad():
        logp = selected_logits(bundle, ids, mask).log_softmax(-1)
    return float((base_logp.exp() * (base_logp - logp)).sum(-1).mean())


RETAIN_TEXTS = 24  # retain extracts PISCES contrasts with and holds its KL on


def retain_texts(corpus: Corpus, facts: FactSet, cfg: RetainConfig, n: int = RETAIN_TEXTS) -> list[str]:
    """`n` retain extracts of 400 characters from `retain_split`: up to half same-topic
    neighbour articles (most similar first), the rest neutral articles."""
    neighbours, neutral = retain_split(corpus, facts, cfg)
    picked = neighbours[: n // 2]
    picked += neutral[: n - len(picked)]
    return [d.text[:400] for d in picked]


def retain_encoding(bundle: ModelBundle, corpus: Corpus, facts: FactSet) -> dict[str, torch.Tensor]:
    """`retain_texts` (neutral + neighbour articles) with the default `RetainConfig`, tokenised
    right-padded to its max_len (64) tokens: the 'not the concept' side of feature contrast and of
    the PISCES search's KL."""
    cfg = RetainConfig()
    return bundle.tokenizer(retain_texts(corpus, facts, cfg), return_tensors="pt", padding=True, truncation=True,
                            max_length=cfg.max_len, padding_side="right")


def contrast_candidates(bundle: ModelBundle, sae: Any, targets: FactTargets, r_ids: torch.Tensor,
                        r_attention: torch.Tensor, n: int) -> list[FeatureCandidate]:
    """The n SAE features whose mean activation on the fact set most exceeds that on retain
    text, with how many concept target tokens each decoder direction promotes (top 50)."""
    act_c = _feature_means(bundle, sae, targets.input_ids, targets.attention_mask)
    act_n = _feature_means(bundle, sae, r_ids, r_attention)
    order = (act_c - act_n).argsort(descending=True)[:n].tolist()
    concept_ids = set(targets.targets[targets.targets >= 0].tolist())
    directions = decoder_directions(bundle.hf_model, sae, SAESite.of_sae(sae))[order]  # [n, d_model]
    proj = project_topk(directions, layout.unembed(bundle.hf_model), k=50)
    return [FeatureCandidate(f, float(act_c[f]), float(act_n[f]), len(concept_ids & set(proj.top_ids[i].tolist())))
            for i, f in enumerate(order)]


def sae_feature_rows(
    bundle: ModelBundle, corpus: Corpus, facts: FactSet, saes_dir: Path, layer: int, n_features: int = 16,
    tau: float = 0.5, max_rows: int = 256, min_target_prob: float = 0.05, site: str | None = None,
    sae_id: str | None = None,
) -> tuple[dict[int, list[int]], list[FeatureCandidate]]:
    """PISCES's row selection as the rows of a localized optimisation: the SAE features that fire
    most on the fact set vs retain text, and for each the W_out rows of the tau rule (strongest
    first), pooled up to max_rows. Returns ({layer: rows}, the features with selected marked)."""
    from workbench.sae.catalogue import tau_rows
    from workbench.sae.sources import load_local_sae

    sae, _, _ = load_local_sae(find_local_sae(saes_dir, bundle.model_id, layer, site, sae_id))
    targets = fact_targets(bundle, facts, corpus, min_prob=min_target_prob)
    enc = retain_encoding(bundle, corpus, facts)
    candidates = contrast_candidates(bundle, sae, targets, enc["input_ids"], enc["attention_mask"], n_features)
    rows: list[int] = []
    for c in candidates:
        if c.act_concept <= c.act_neutral:
            c.dropped_by = "fires no more on the concept than on retain text"
            continue
        new = [int(i) for i in tau_rows(bundle.hf_model, sae, c.feature, tau)["neuron"] if int(i) not in rows]
        rows += new[: max_rows - len(rows)]
        c.selected = bool(new)
        if len(rows) >= max_rows:
            break
    if not rows:
        raise ValueError("No SAE feature fires more on the concept's facts than on retain text; this SAE "
                         "offers no rows for the concept.")
    return {layer: sorted(rows)}, candidates


def pisces_erase(
    bundle: ModelBundle, corpus: Corpus, facts: FactSet, saes_dir: Path, layer: int,
    n_candidates: int = 8, n_select: int = 4, taus: tuple[float, ...] = (0.9, 0.7, 0.5),
    mus: tuple[float, ...] = (8.0, 16.0, 32.0), min_target_prob: float = 0.05, site: str | None = None,
    sae_id: str | None = None, progress: Progress = NULL_PROGRESS,
) -> PiscesResult:
    from workbench.sae.sources import load_local_sae

    sae, sae_id, _ = load_local_sae(find_local_sae(saes_dir, bundle.model_id, layer, site, sae_id))
    ref = SaeRef(id=sae_id, sha256=sae_sha256(sae))
    targets = fact_targets(bundle, facts, corpus, min_prob=min_target_prob)
    if targets.n_targets == 0:
        raise ValueError("The fact set has no concept-specific tokens the base model predicts; add facts.")
    enc = retain_encoding(bundle, corpus, facts)
    r_ids, r_mask = enc["input_ids"], enc["attention_mask"].bool()
    r_mask[:, 0] = False
    with torch.no_grad():
        base_logp = selected_logits(bundle, r_ids, r_mask).log_softmax(-1)
    base_prob = _concept_prob(bundle, targets)

    progress.stage("PISCES: candidate features by activation contrast")
    candidates = contrast_candidates(bundle, sae, targets, r_ids, enc["attention_mask"], n_candidates)
    signs = neuron_signs(bundle, targets, layer)
    model_ref = ModelRef(id=bundle.model_id, weights_sha256=bundle.weights_sha256)

    def loader(_ref: SaeRef, _layer: int) -> Any:
        return sae

    def spec_for(features: list[int], tau: float, mu: float) -> EditSpec:
        return EditSpec(name=f"pisces {facts.concept}", model=model_ref, sae=ref, operations=[
            RemoveSaeFeatures(layer=layer, features=features, tau=tau, mu=mu, neuron_signs=signs)])

    progress.stage("PISCES: removing each candidate alone (tau 0.9, mu 16)", total=len(candidates))
    for c in candidates:
        adapter = compile_spec(spec_for([c.feature], 0.9, 16.0), bundle, sae_loader=loader)
        with use(bundle, adapter):
            c.removal_effect = _concept_prob(bundle, targets) / max(base_prob, 1e-9) - 1.0
        if c.act_concept <= 0:
            c.dropped_by = "never fires on the concept text"
        elif c.removal_effect >= 0:
            c.dropped_by = "removing it does not lower the concept tokens"
        progress.advance(1)
    kept = sorted((c for c in candidates if not c.dropped_by), key=lambda c: c.removal_effect)[:n_select]
    for c in kept:
        c.selected = True
    if not kept:
        raise ValueError("No candidate feature lowers the concept tokens when removed; this SAE has no "
                         "usable feature for the concept (see the candidate table).")
    features = [c.feature for c in kept]
    grid: list[dict[str, float]] = []
    progress.stage("PISCES: tau x mu search", total=len(taus) * len(mus))
    for tau in taus:
        for mu in mus:
            adapter = compile_spec(spec_for(features, tau, mu), bundle, sae_loader=loader)
            with use(bundle, adapter):
                prob = _concept_prob(bundle, targets)
                kl = _retain_kl(bundle, r_ids, r_mask, base_logp)
            efficacy = max(0.0, 1.0 - prob / max(base_prob, 1e-9))
            specificity = math.exp(-kl)
            score = 0.0 if efficacy <= 0 else 2 / (1 / efficacy + 1 / specificity)
            grid.append({"tau": tau, "mu": mu, "concept_prob": prob, "kl": kl, "efficacy": efficacy,
                         "specificity": specificity, "score": score, "rows": float(len(adapter.rows))})
            progress.advance(1)
    best = max(grid, key=lambda g: g["score"])
    return PiscesResult(spec=spec_for(features, best["tau"], best["mu"]), candidates=candidates, grid=grid)
