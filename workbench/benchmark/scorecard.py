"""The scorecard: efficacy, specificity, fluency and robustness of an edit, before vs after.

    card = evaluate(bundle, "Harry Potter", adapter)   # adapter = compile_spec(spec, bundle)
    card.rows()      # table rows for the UI
    card.to_json()   # stored with the edit

Base and edited run in the same forward passes (each batch holds both, routed per row), so the
two sides see exactly the same inputs. The base side is cached per (weights hash, probe,
options): the base weights are never written, so a later edit of the same concept only runs its
edited side. Same prompts and greedy decoding on both sides; aggregate = HM(forget, Spec, Coh),
any term <= 0 gives 0 (docs/architecture.md, "Scorecard").
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from workbench.adapters import Adapter
from workbench.benchmark.fluency import (
    FLUENCY_SETS,
    FluencyConfig,
    FluencyStats,
    degeneration,
    fluency_stats,
    non_text_ids,
)
from workbench.benchmark.probe import ConceptProbe, build_probe
from workbench.benchmark.relearn import RelearnConfig, RelearnReport, relearn_test
from workbench.benchmark.runner import (
    greedy_continuations_each,
    next_tokens_each,
    prompt_outcomes_each,
    text_logprobs_each,
)
from workbench.benchmark.schema import ProbePrompt
from workbench.benchmark.scoring import contains_any, harmonic_mean, mean, perplexity, topk_kl
from workbench.corpus import Corpus, load_wiki
from workbench.generate import GenerationResult, RowRequest, SamplingParams, decode_rows, left_padded
from workbench.lenses.tokens import pad_id
from workbench.models import ModelBundle
from workbench.models.chat import check_chat_template, prompt_ids
from workbench.progress import NULL_PROGRESS, Progress

PROMPT_SETS = ("cloze", "questions", "neighbours", "general", "others", "reintro")


@dataclass(frozen=True)
class EvalOptions:
    """How much to run. Continuations are the slow part: `others` is first-token only by default."""

    max_new_tokens: int = 8
    continuation_sets: tuple[str, ...] = ("cloze", "questions", "neighbours", "general", "reintro")
    neutral_max_tokens: int = 128
    kl_top_k: int = 64
    generation_tokens: int = 24
    # the free generations (probe.generation_prompts) as chat turns of the tokenizer's template
    # (models/chat.py), for instruct models; the cloze and question prompts stay plain text, since
    # their answers are scored as continuations of the prompt's text
    chat_template: bool = False
    # verdict thresholds (relative to base; docs/architecture.md, "Scorecard")
    forget_max_ratio: float = 0.25
    general_max_drop: float = 0.05
    neighbour_max_drop: float = 0.10
    others_max_drop: float = 0.05
    ppl_max_ratio: float = 1.05
    spec_min: float = 0.9
    # free greedy generations on concept and general prompts, and when they count as degenerate
    # (benchmark/fluency.py): a FAIL verdict and a broken control, like the perplexity check
    fluency: FluencyConfig = field(default_factory=FluencyConfig)
    # the relearning test (benchmark/relearn.py): a copy of the edited model fine-tuned on the
    # concept's text, probed again; minutes, so off unless asked for (None)
    relearn: RelearnConfig | None = None


@dataclass
class PromptOutcome:
    prompt: str
    answer: str
    dependence: str
    top_token: str
    first_token_correct: bool
    answer_prob: float
    continuation: str | None  # None when not generated for this set
    contains: bool | None

    @property
    def answered(self) -> bool:
        """First token right, or the continuation contains an accepted string."""
        return self.first_token_correct or bool(self.contains)


@dataclass
class Measurements:
    """One side (base or edited) of a scorecard."""

    outcomes: dict[str, list[PromptOutcome]]
    neutral_token_logprobs: torch.Tensor  # [positions]
    generations: list[str]
    kl_per_position: torch.Tensor | None = None  # [positions], edited side only
    base_topk: Any = None  # TopKDist, base side only
    # free greedy generations per FLUENCY_SETS set: token ids per prompt, and their pooled measures
    free_generations: dict[str, list[list[int]]] = field(default_factory=dict)
    fluency: dict[str, FluencyStats] = field(default_factory=dict)

    @property
    def perplexity(self) -> float:
        return perplexity(self.neutral_token_logprobs)


@dataclass
class MetricRow:
    group: str  # efficacy | specificity | fluency | robustness
    metric: str
    before: float
    after: float
    n: int
    want: str  # "low" or "= base"

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass
class Scorecard:
    concept: str
    probe_source: str
    model_weights_sha256: str
    metrics: list[MetricRow]
    score: float
    score_terms: dict[str, float]
    verdicts: list[str]
    generations: list[dict[str, str]]
    prompts: list[dict[str, Any]] = field(default_factory=list)
    # the free generations the fluency rows measure (special tokens written out): set, prompt, before, after
    free_generations: list[dict[str, str]] = field(default_factory=list)
    relearn: RelearnReport | None = None  # the relearning test, when it ran (EvalOptions.relearn)

    def rows(self) -> list[dict[str, Any]]:
        """The metric table as plain rows (before, after, delta rounded)."""
        return [
            {
                "group": m.group,
                "metric": m.metric,
                "before": _r(m.before),
                "after": _r(m.after),
                "delta": _r(m.delta),
                "n": m.n,
                "want": m.want,
            }
            for m in self.metrics
        ]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["metrics"] = self.rows()
        d["score"] = _r(self.score)
        d["score_terms"] = {k: _r(v) for k, v in self.score_terms.items()}
        d["outcome"] = self.outcome
        d["tier"] = self.tier
        return d

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @property
    def concept_gone(self) -> bool:
        """The concept verdict passed (answered <= forget_max_ratio x base)."""
        return any(v.startswith("PASS: concept answered") for v in self.verdicts)

    @property
    def broken_controls(self) -> list[str]:
        """The failed control verdicts (neighbours, general, other concepts, perplexity,
        specificity), without their 'FAIL: ' prefix."""
        return [v.removeprefix("FAIL: ") for v in self.verdicts
                if v.startswith("FAIL: ") and not v.startswith(("FAIL: concept", "FAIL: the base"))]

    @property
    def passed(self) -> bool:
        """Success means both: the concept gone and every control held."""
        return self.concept_gone and not self.broken_controls

    @property
    def fluent(self) -> bool | None:
        """False when the edited model's free generations degenerate on any prompt set (a fluency
        FAIL verdict), True when they were measured and none does, None when none were measured."""
        checks = [v for v in self.verdicts if v.startswith((FLUENCY_FAIL, FLUENCY_PASS))]
        return None if not checks else not any(v.startswith(FLUENCY_FAIL) for v in checks)

    def goal_row(self) -> dict[str, float | bool | None]:
        """The scorecard in the dev table's terms (benchmark/goals.py): name-dep as a share of
        the base's, the controls as 1 - their drop (a base of 1.00), others with their base,
        the perplexity change in percent, whether the free generations stayed fluent. What
        `tier` is judged on."""
        def get(name: str) -> MetricRow | None:
            return next((m for m in self.metrics if m.metric == name), None)

        nd, nb, gen, oth, ppl = (get(n) for n in ("concept answered (name-dependent)", "neighbours answered",
                                                  "general answered", "other concepts first-token acc",
                                                  "neutral perplexity"))
        return {
            # a base that answers none of them leaves nothing to erase: no number, so no erasure tier
            "name_dep": None if nd is None or not nd.n or nd.before <= 0 else nd.after / nd.before,
            "neighbours": None if nb is None or not nb.n else 1.0 - (nb.before - nb.after),
            "general": None if gen is None or not gen.n else 1.0 - (gen.before - gen.after),
            "others": None if oth is None or not oth.n else oth.after,
            "others_base": None if oth is None or not oth.n else oth.before,
            "ppl_change_pct": None if ppl is None or ppl.before <= 0 else 100.0 * (ppl.after / ppl.before - 1.0),
            "fluent": self.fluent,
        }

    @property
    def tier(self) -> str:
        """The best tier the edit reaches (benchmark/goals.py TIERS), judged like the dev table."""
        from workbench.benchmark.goals import tier

        return tier(self.goal_row())

    @property
    def headline(self) -> str:
        """The scorecard's first line: the tier, then the outcome."""
        return f"Tier: {self.tier}. {self.outcome}"

    @property
    def outcome(self) -> str:
        """The one-line result, said plainly: an edit that lowers the concept but breaks a control
        is a failure, not a partial success."""
        if self.passed:
            return "PASSED: the concept is erased and every control held."
        if self.broken_controls:
            what = "the concept is erased" if self.concept_gone else "the concept is not erased"
            return f"FAILED: {what}, and controls broke ({'; '.join(self.broken_controls)})."
        return "FAILED: the concept is not erased (every control held)."

    def metric(self, name: str) -> MetricRow:
        for m in self.metrics:
            if m.metric == name:
                return m
        raise KeyError(f"No metric {name!r}; have {[m.metric for m in self.metrics]}.")


FLUENCY_FAIL = "FAIL: the edited model's continuations on "
FLUENCY_PASS = "PASS: the edited model's continuations on "


def _r(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def prompt_sets(probe: ConceptProbe) -> dict[str, list[ProbePrompt]]:
    return {
        "cloze": probe.cloze,
        "questions": probe.questions,
        "neighbours": probe.neighbours,
        "general": probe.general,
        "others": probe.others,
        "reintro": probe.reintro_prompts(),
    }


def measure_each(
    bundle: ModelBundle,
    probe: ConceptProbe,
    variants: Sequence[Adapter | None],
    options: EvalOptions = EvalOptions(),
    progress: Progress = NULL_PROGRESS,
    reference: Measurements | None = None,
) -> list[Measurements]:
    """Run every probe prompt, the neutral text and the generations under each variant (the
    first is the reference, normally the base: None) in the same forward passes; four parts,
    each one `progress` step. KL(reference || variant) is computed on the neutral text.

    With `reference` (the base measured before, same probe and options), every variant is
    compared with it instead and all of them are edited sides."""
    sets = prompt_sets(probe)
    flat = [(name, p) for name in PROMPT_SETS for p in sets[name]]
    gen_idx = [i for i, (name, _) in enumerate(flat) if name in options.continuation_sets]
    first_idx = [i for i, (name, _) in enumerate(flat) if name not in options.continuation_sets]
    firsts_each = next_tokens_each(bundle, [flat[i][1].prompt for i in first_idx],
                                   [flat[i][1].answer for i in first_idx], variants)
    progress.advance(1)
    scored_each, conts_each = prompt_outcomes_each(
        bundle, [flat[i][1].prompt for i in gen_idx], [flat[i][1].answer for i in gen_idx], variants,
        options.max_new_tokens,
    )
    progress.advance(1)
    nts_each = []
    for firsts, scored in zip(firsts_each, scored_each, strict=True):
        by_index = dict(zip(first_idx, firsts, strict=True)) | dict(zip(gen_idx, scored, strict=True))
        nts_each.append([by_index[i] for i in range(len(flat))])
    generations_each = greedy_continuations_each(bundle, probe.generation_prompts, variants,
                                                 options.generation_tokens, chat_template=options.chat_template)
    free_each = measure_fluency(bundle, fluency_prompts(probe, options.fluency), variants, options.fluency,
                                options.chat_template)
    progress.advance(1)
    tok_lps, ref_dist, at_ids = text_logprobs_each(
        bundle, probe.neutral_texts, variants, options.neutral_max_tokens, batch_size=2, top_k=options.kl_top_k,
        reference=reference.base_topk if reference is not None else None,
    )
    progress.advance(1)
    out = []
    for v, (nts, conts, gens, (free, fluency)) in enumerate(zip(nts_each, conts_each, generations_each, free_each,
                                                                 strict=True)):
        cont_of = dict(zip(gen_idx, conts, strict=True))
        outcomes: dict[str, list[PromptOutcome]] = {name: [] for name in PROMPT_SETS}
        for i, ((name, p), nt) in enumerate(zip(flat, nts, strict=True)):
            cont = cont_of.get(i)
            outcomes[name].append(
                PromptOutcome(
                    prompt=p.prompt,
                    answer=p.answer,
                    dependence=p.dependence,
                    top_token=nt.top_text,
                    first_token_correct=nt.first_token_correct,
                    answer_prob=nt.answer_prob,
                    continuation=cont,
                    contains=None if cont is None else contains_any(cont, p.accepted),
                )
            )
        is_ref = v == 0 and reference is None
        kl = None if is_ref else topk_kl(ref_dist.logprobs, ref_dist.rest_logprob, at_ids[v])
        out.append(Measurements(outcomes, tok_lps[v], gens, kl_per_position=kl,
                                base_topk=ref_dist if is_ref else None, free_generations=free, fluency=fluency))
    return out


def fluency_prompts(probe: ConceptProbe, cfg: FluencyConfig) -> dict[str, list[str]]:
    """The prompts of the free generations per FLUENCY_SETS set: the concept's generation prompts,
    then its cloze and question prompts; the general prompts (at most `cfg.max_prompts` each)."""
    concept = list(dict.fromkeys([*probe.generation_prompts, *(p.prompt for p in probe.cloze + probe.questions)]))
    return {"concept": concept[:cfg.max_prompts], "general": [p.prompt for p in probe.general][:cfg.max_prompts]}


@torch.no_grad()
def free_generations_each(
    bundle: ModelBundle, prompts: Sequence[str], variants: Sequence[Adapter | None], max_new_tokens: int,
    chat_template: bool = False, rows_per_batch: int = 16,
) -> list[list[list[int]]]:
    """Greedy token ids of each prompt under each variant, special tokens kept (EOS ends a row and
    is not kept). generate.decode_rows: the variants' rows of a prompt in the same left-padded
    batch, with the KV cache; `rows_per_batch` counts prompts x variants."""
    tok, n = bundle.tokenizer, len(variants)
    out: list[list[list[int]]] = [[[] for _ in prompts] for _ in variants]
    lengths = [len(prompt_ids(tok, p, chat_template)) for p in prompts]
    order = sorted(range(len(prompts)), key=lengths.__getitem__)
    per = max(1, rows_per_batch // n)
    for start in range(0, len(order), per):
        idx = order[start:start + per]
        rows = [RowRequest(prompts[i], v, SamplingParams(max_new_tokens=max_new_tokens), max_new_tokens, math.inf,
                           GenerationResult(prompt=prompts[i], edited=v is not None), chat_template)
                for v in variants for i in idx]
        for _ in decode_rows(bundle, rows):
            pass
        for v in range(n):
            for row, i in enumerate(idx):
                out[v][i] = list(rows[v * len(idx) + row].result.token_ids)
    return out


@torch.no_grad()
def base_logprobs_of(
    bundle: ModelBundle, prompts: Sequence[str], gens: Sequence[Sequence[int]], chat_template: bool = False,
    batch_size: int = 8,
) -> list[torch.Tensor]:
    """The base model's log-prob of each generated token given its prompt and the tokens before
    it: [len(gen)] per prompt. Left-padded batches; only the logits of the last len(gen) + 1
    positions are computed."""
    tok = bundle.tokenizer
    seqs = [prompt_ids(tok, p, chat_template) + list(g) for p, g in zip(prompts, gens, strict=True)]
    out = [torch.zeros(0) for _ in seqs]
    order = sorted((i for i in range(len(seqs)) if gens[i]), key=lambda i: len(seqs[i]))
    device = next(bundle.hf_model.parameters()).device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        keep = max(len(gens[i]) for i in idx)
        ids, mask, positions = left_padded([seqs[i] for i in idx], pad_id(tok), device)  # [b, width]
        logits = bundle.hf_model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                 logits_to_keep=keep + 1).logits[:, :-1]  # [b, keep, vocab]: the last keep tokens
        lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, -keep:].unsqueeze(-1)).squeeze(-1)  # [b, keep]
        for row, i in enumerate(idx):
            out[i] = lp[row, keep - len(gens[i]):].cpu()
    return out


def measure_fluency(
    bundle: ModelBundle, prompts: dict[str, list[str]], variants: Sequence[Adapter | None], cfg: FluencyConfig,
    chat_template: bool = False,
) -> list[tuple[dict[str, list[list[int]]], dict[str, FluencyStats]]]:
    """Per variant: the free generations' token ids per set and their measures (benchmark/fluency.py),
    every variant's text scored by the base model."""
    flat = [(name, p) for name in FLUENCY_SETS for p in prompts.get(name, [])]
    texts = [p for _, p in flat]
    gens_each = free_generations_each(bundle, texts, variants, cfg.max_new_tokens, chat_template) if flat else \
        [[] for _ in variants]
    non_text = non_text_ids(bundle.tokenizer, (t for gens in gens_each for g in gens for t in g))
    out = []
    for gens in gens_each:
        lps = base_logprobs_of(bundle, texts, gens, chat_template)
        by_set: dict[str, list[list[int]]] = {}
        stats: dict[str, FluencyStats] = {}
        for name in FLUENCY_SETS:
            sel = [i for i, (set_name, _) in enumerate(flat) if set_name == name]
            if sel:
                by_set[name] = [gens[i] for i in sel]
                stats[name] = fluency_stats(by_set[name], non_text, [lps[i] for i in sel], cfg.ngram)
        out.append((by_set, stats))
    return out


def measure(
    bundle: ModelBundle, probe: ConceptProbe, options: EvalOptions = EvalOptions(),
    progress: Progress = NULL_PROGRESS,
) -> Measurements:
    """The base model's measurements alone."""
    return measure_each(bundle, probe, (None,), options, progress)[0]


def _acc(
    outs: list[PromptOutcome], attr: str = "answered", dependence: str | None = None
) -> tuple[float, int]:
    sel = [o for o in outs if dependence is None or o.dependence == dependence]
    if attr == "contains":
        sel = [o for o in sel if o.contains is not None]
    return mean([float(bool(getattr(o, attr))) for o in sel]), len(sel)


def compare(
    probe: ConceptProbe, base: Measurements, edited: Measurements, options: EvalOptions = EvalOptions(),
    relearn: RelearnReport | None = None,
) -> tuple[list[MetricRow], float, dict[str, float], list[str]]:
    """Metric rows, aggregate score, its terms and verdict sentences from the two sides (and the
    relearning test's row beside the re-introduction rows, when it ran)."""
    rows = metric_rows(probe, base, edited, options, relearn)
    score, terms = score_of(rows, base, edited)
    return rows, score, terms, verdicts_of(rows, base, edited, options, terms["specificity"], relearn)


def metric_rows(
    probe: ConceptProbe, base: Measurements, edited: Measurements, options: EvalOptions,
    relearn: RelearnReport | None,
) -> list[MetricRow]:
    """The scorecard's table: one row per metric with both sides (a metric with no prompts is left out)."""
    rows: list[MetricRow] = []

    def add(group: str, metric: str, fn: Callable[[Measurements], tuple[float, int]], want: str) -> None:
        b, n = fn(base)
        a, _ = fn(edited)
        if n:
            rows.append(MetricRow(group, metric, b, a, n, want))

    concept = lambda m: m.outcomes["cloze"] + m.outcomes["questions"]  # noqa: E731
    add("efficacy", "concept answered", lambda m: _acc(concept(m)), "low")
    add("efficacy", "concept first-token acc", lambda m: _acc(concept(m), "first_token_correct"), "low")
    add("efficacy", "concept continuation acc", lambda m: _acc(concept(m), "contains"), "low")
    add("efficacy", "concept answer prob", lambda m: (mean([o.answer_prob for o in concept(m)]), len(concept(m))), "low")
    def answered(dep: str) -> Callable[[Measurements], tuple[float, int]]:
        return lambda m: _acc(m.outcomes["cloze"] + m.outcomes["questions"], dependence=dep)

    for dep in ("name-dependent", "cue-answerable", "name-free"):
        add("efficacy", f"concept answered ({dep})", answered(dep), "low")
    add("efficacy", "questions answered", lambda m: _acc(m.outcomes["questions"]), "low")
    add("specificity", "neighbours answered", lambda m: _acc(m.outcomes["neighbours"]), "= base")
    add("specificity", "neighbours answer prob",
        lambda m: (mean([o.answer_prob for o in m.outcomes["neighbours"]]), len(m.outcomes["neighbours"])), "= base")
    add("specificity", "general answered", lambda m: _acc(m.outcomes["general"]), "= base")
    add("specificity", "other concepts first-token acc", lambda m: _acc(m.outcomes["others"], "first_token_correct"),
        "= base")
    add("robustness", "re-introduced in context answered", lambda m: _acc(m.outcomes["reintro"]), "= base (ICL)")
    in_ctx = (
        [contains_any(probe.fact_paragraph, [p.answer]) for p in probe.cloze + probe.questions]
        if probe.fact_paragraph
        else []
    )

    def reintro_split(m: Measurements, stated: bool) -> tuple[float, int]:
        outs = [o for o, s in zip(m.outcomes["reintro"], in_ctx, strict=True) if s == stated]
        return _acc(outs)

    add("robustness", "re-introduced, answer not in context", lambda m: reintro_split(m, False), "low")
    if relearn is not None:  # before: the base; after: the relearned copy of the edited model
        rows.append(MetricRow("robustness", f"relearned ({relearn.epochs} epochs, {relearn.paragraphs} paragraphs) "
                              f"answered ({relearn.prompts})", relearn.base, relearn.relearned, relearn.n_prompts, "low"))
    rows += fluency_rows(base, edited, options)
    return rows


def fluency_rows(base: Measurements, edited: Measurements, options: EvalOptions) -> list[MetricRow]:
    """Neutral perplexity and KL, and per prompt set the free generations' fluency measures."""
    rows: list[MetricRow] = []
    ppl_b, ppl_a = base.perplexity, edited.perplexity
    n_tok = int(base.neutral_token_logprobs.numel())
    rows.append(MetricRow("fluency", "neutral perplexity", ppl_b, ppl_a, n_tok, "= base"))
    kl = float(edited.kl_per_position.mean()) if edited.kl_per_position is not None else float("nan")
    rows.append(MetricRow("fluency", "mean KL(base||edited) neutral", 0.0, kl, n_tok, "= 0"))
    fluency_sets = [name for name in FLUENCY_SETS if name in base.fluency and name in edited.fluency]
    for name in fluency_sets:
        fb, fe = base.fluency[name], edited.fluency[name]
        for metric, b, a in (
            ("special-token fraction", fb.special_fraction, fe.special_fraction),
            (f"repeated {options.fluency.ngram}-grams", fb.repeated_ngrams, fe.repeated_ngrams),
            ("longest run of one token", float(fb.longest_run), float(fe.longest_run)),
            ("base-model perplexity of the text", fb.base_perplexity, fe.base_perplexity),
        ):
            rows.append(MetricRow("fluency", f"{name} generations: {metric}", b, a, fb.generations, "= base"))

    return rows


def score_of(rows: list[MetricRow], base: Measurements, edited: Measurements) -> tuple[float, dict[str, float]]:
    """The aggregate score: the harmonic mean of forget, specificity and coherence (its terms returned too)."""
    ppl_b, ppl_a = base.perplexity, edited.perplexity
    kl = float(edited.kl_per_position.mean()) if edited.kl_per_position is not None else float("nan")
    by = {r.metric: r for r in rows}
    acc = by["concept answered"]
    forget = 1.0 - acc.after / acc.before if acc.before > 0 else 0.0
    terms_spec = [math.exp(-kl)]
    if "neighbours answered" in by and by["neighbours answered"].before > 0:
        terms_spec.append(by["neighbours answered"].after / by["neighbours answered"].before)
    spec = harmonic_mean(terms_spec)
    coh = min(1.0, ppl_b / ppl_a)
    terms = {"forget": forget, "specificity": spec, "coherence": coh}
    score = harmonic_mean(list(terms.values()))

    return score, terms


def verdicts_of(
    rows: list[MetricRow], base: Measurements, edited: Measurements, options: EvalOptions, spec: float,
    relearn: RelearnReport | None,
) -> list[str]:
    """PASS/FAIL/INFO sentences: the concept goal, each control, fluency and the robustness notes."""
    by = {r.metric: r for r in rows}
    acc = by["concept answered"]
    ppl_b, ppl_a = base.perplexity, edited.perplexity
    fluency_sets = [name for name in FLUENCY_SETS if name in base.fluency and name in edited.fluency]
    verdicts = []

    def flag(ok: bool, text_ok: str, text_fail: str) -> None:
        verdicts.append(("PASS: " + text_ok) if ok else ("FAIL: " + text_fail))

    if acc.before == 0:
        verdicts.append(
            "FAIL: the base model answers none of the concept prompts, so there is nothing to erase; edit the probe"
        )
    else:
        flag(
            acc.after <= options.forget_max_ratio * acc.before,
            f"concept answered {acc.after:.2f} <= {options.forget_max_ratio:.2f} x base {acc.before:.2f}",
            f"concept still answered {acc.after:.2f} > {options.forget_max_ratio:.2f} x base {acc.before:.2f}",
        )
    for metric, limit in (
        ("general answered", options.general_max_drop),
        ("neighbours answered", options.neighbour_max_drop),
        ("other concepts first-token acc", options.others_max_drop),
    ):
        if metric in by:
            drop = by[metric].before - by[metric].after
            flag(
                drop <= limit,
                f"{metric} dropped {drop:.2f} <= {limit:.2f}",
                f"{metric} dropped {drop:.2f} > {limit:.2f}",
            )
    ratio = ppl_a / ppl_b
    flag(
        ratio <= options.ppl_max_ratio,
        f"perplexity ratio {ratio:.3f} <= {options.ppl_max_ratio}",
        f"perplexity ratio {ratio:.3f} > {options.ppl_max_ratio}",
    )
    verdicts += fluency_verdicts(base, edited, options, fluency_sets)
    flag(
        spec >= options.spec_min,
        f"specificity {spec:.2f} >= {options.spec_min}",
        f"specificity {spec:.2f} < {options.spec_min}",
    )
    if "re-introduced in context answered" in by:
        r = by["re-introduced in context answered"]
        verdicts.append(
            f"INFO: with the facts in context {r.after:.2f} answered (base {r.before:.2f}); recovery from context is in-context learning, not a failure"
        )
    if relearn is not None:
        verdicts.append(f"INFO: {relearn.sentence()}")
    return verdicts




def fluency_verdicts(base: Measurements, edited: Measurements, options: EvalOptions, sets: list[str]) -> list[str]:
    """A PASS or FAIL sentence per prompt set whose free generations were measured."""
    verdicts = []
    for name in sets:
        fb, fe = base.fluency[name], edited.fluency[name]
        broken = degeneration(fb, fe, options.fluency)
        verdicts.append(
            f"{FLUENCY_FAIL}{name} prompts degenerate: {'; '.join(broken)}" if broken else
            f"{FLUENCY_PASS}{name} prompts are as fluent as the base's (special tokens {fe.special_fraction:.0%}, "
            f"base {fb.special_fraction:.0%}; repeated {options.fluency.ngram}-grams {fe.repeated_ngrams:.0%}, "
            f"base {fb.repeated_ngrams:.0%}; base-model perplexity {fe.base_perplexity:.3g}, "
            f"of the base's own {fb.base_perplexity:.3g})")
    return verdicts


def prompt_table(base: Measurements, edited: Measurements) -> list[dict[str, Any]]:
    """One row per prompt: what the base and the edited model did."""
    out = []
    for name in PROMPT_SETS:
        for b, a in zip(base.outcomes[name], edited.outcomes[name], strict=True):
            out.append(
                {
                    "set": name,
                    "prompt": b.prompt,
                    "answer": b.answer,
                    "dependence": b.dependence,
                    "before_top": b.top_token,
                    "after_top": a.top_token,
                    "before_prob": round(b.answer_prob, 4),
                    "after_prob": round(a.answer_prob, 4),
                    "before_continuation": b.continuation,
                    "after_continuation": a.continuation,
                    "before_answered": b.answered,
                    "after_answered": a.answered,
                }
            )
    return out


# The base side of a scorecard, kept per (base weights, probe, options). Safe to reuse because the
# base weights are never written (edits are adapters in the forward pass), so a later scorecard
# of the same concept measures only the edited side.
BASE_CACHE_SIZE = 32
_BASE_CACHE: dict[str, Measurements] = {}


def _base_key(bundle: ModelBundle, probe: ConceptProbe, options: EvalOptions) -> str:
    import hashlib

    measured = {k: v for k, v in asdict(options).items() if k != "relearn"}  # relearning runs after, on a copy
    text = json.dumps([bundle.weights_sha256, probe.model_dump(mode="json"), measured], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def evaluate(
    bundle: ModelBundle,
    concept: str | ConceptProbe,
    adapter: Adapter | None = None,
    corpus: Corpus | None = None,
    options: EvalOptions = EvalOptions(),
    progress: Progress = NULL_PROGRESS,
) -> Scorecard:
    """Scorecard of an edit of one concept (progress: 4 parts, each runs base and edited; the
    base side is measured once per concept and options and reused). With `options.relearn` a
    fifth stage runs the relearning test on a copy of the edited model (one progress step per
    training batch; minutes on a CPU) and adds its row beside the re-introduction rows.

    `concept` is a dev-benchmark concept, any corpus title (a probe is built from its article)
    or a ready ConceptProbe. Base and edited (`adapter`; None scores the base against itself)
    run in the same forward passes: each batch carries both, routed per row. With
    `options.chat_template` the free generations go through the tokenizer's chat template
    (ValueError, before anything runs, when it has none)."""
    check_chat_template(bundle.tokenizer, options.chat_template)
    probe = (
        concept
        if isinstance(concept, ConceptProbe)
        else build_probe(bundle, corpus or load_wiki("en"), concept)
    )
    key = _base_key(bundle, probe, options)
    base = _BASE_CACHE.get(key)
    if base is None:
        progress.stage(f"scorecard '{probe.name}': base and edited model in the same passes", total=4, unit="part")
        base, edited = measure_each(bundle, probe, (None, adapter), options, progress)
        _BASE_CACHE[key] = base
        while len(_BASE_CACHE) > BASE_CACHE_SIZE:
            _BASE_CACHE.pop(next(iter(_BASE_CACHE)))
    else:
        progress.stage(f"scorecard '{probe.name}': edited model (base side measured before)", total=4, unit="part")
        (edited,) = measure_each(bundle, probe, (adapter,), options, progress, reference=base)
    relearn, relearn_error = None, ""
    if options.relearn is not None and adapter is not None:
        try:
            relearn = relearn_test(bundle, probe, adapter, corpus or load_wiki("en"), options.relearn,
                                   options.max_new_tokens, progress)
        except ValueError as err:  # no text to train on, no concept prompts: the rest of the card stands
            relearn_error = str(err)
    rows, score, terms, verdicts = compare(probe, base, edited, options, relearn)
    if relearn_error:
        verdicts.append(f"INFO: the relearning test did not run: {relearn_error}")
    gens = [
        {"prompt": p, "before": b, "after": a}
        for p, b, a in zip(probe.generation_prompts, base.generations, edited.generations, strict=True)
    ]
    free_prompts = fluency_prompts(probe, options.fluency)
    free = [
        {"set": name, "prompt": p, "before": bundle.tokenizer.decode(b), "after": bundle.tokenizer.decode(a)}
        for name in FLUENCY_SETS if name in base.free_generations and name in edited.free_generations
        for p, b, a in zip(free_prompts[name], base.free_generations[name], edited.free_generations[name], strict=True)
    ]
    return Scorecard(
        concept=probe.name,
        probe_source=probe.source,
        model_weights_sha256=bundle.weights_sha256,
        metrics=rows,
        score=score,
        score_terms=terms,
        verdicts=verdicts,
        generations=gens,
        prompts=prompt_table(base, edited),
        free_generations=free,
        relearn=relearn,
    )
