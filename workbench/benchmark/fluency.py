"""Fluency of free generations: repetition, non-text tokens, and how likely the base model finds
the text. Pure measures on token ids; the scorecard (`scorecard.py`) decodes the generations and
wires them in.

Why: the teacher-forced perplexity on neutral text scores an edited model on text it did not
write. An edit can keep that number and still continue "The Eiffel Tower is in the city of" with
" Paris, France" and then a run of `<start_of_image>` tokens. These measures read what the edited
model writes, next to what the base writes on the same prompts, and every threshold is relative
to the base: a fluent erase ("I don't know", a wrong city) moves none of them far.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

FLUENCY_SETS = ("concept", "general")  # the prompt sets whose free generations are measured


@dataclass(frozen=True)
class FluencyConfig:
    """Free greedy generations on the concept's and on general prompts, and when they count as
    degenerate. Every threshold compares the edited model's text with the base's on the same
    prompts, so what a small base model does anyway (greedy loops) is not held against an edit."""

    max_new_tokens: int = 32  # long enough for a loop or a run of special tokens to show
    max_prompts: int = 8  # per set: the concept's generation and cloze prompts, the general prompts
    ngram: int = 3  # repetition is measured on n-grams of this many tokens
    # A fluent model writes (almost) no special tokens in a plain continuation, so a few per cent
    # more than the base (about 2 of the 32 tokens of one generation, pooled over the set) is a
    # model emitting tokens it never saw in text.
    special_max_excess: float = 0.05
    # A 270M base already loops under greedy decoding; a quarter more of the n-grams repeated than
    # the base's is a loop the edit made, not one the base had.
    repetition_max_excess: float = 0.25
    # Text rarely repeats one token more than a few times in a row (a row of dashes, newlines);
    # a run this much longer than the base's longest is a stuck model.
    run_max_excess: int = 8
    # The base's own greedy text is its most likely text, so any other continuation scores a higher
    # base perplexity; a fluent wrong answer costs a few times more, broken text (special tokens,
    # scrambled words at log-probs of -10 and below) orders of magnitude more.
    base_ppl_max_ratio: float = 10.0


@dataclass(frozen=True)
class FluencyStats:
    """One side's free generations of one prompt set, pooled."""

    generations: int
    tokens: int  # generated tokens (EOS ends a generation and is not counted)
    special_fraction: float  # non-text tokens / tokens (0 with no tokens)
    repeated_ngrams: float  # repeated n-grams / n-grams, pooled over the generations
    longest_run: int  # the longest run of one token in any generation
    base_perplexity: float  # exp(mean NLL) of the generated tokens under the base model; NaN with none


def is_text(text: str) -> bool:
    """True when a token's decoded text is something a reader sees as text: not empty, and every
    character printable or whitespace (newlines and tabs are text; control characters are not)."""
    return bool(text) and all(ch.isprintable() or ch.isspace() for ch in text)


def non_text_ids(tokenizer: Any, ids: Iterable[int]) -> set[int]:
    """Which of `ids` are special or non-text tokens: the tokenizer's `all_special_ids`; its added
    tokens (special or not: Gemma 3's `<start_of_image>`, `<unusedN>`, turn markers and HTML tags are
    added tokens, and a converted tokenizer may not mark `<start_of_image>` special) except those
    that are only whitespace (Gemma's newline and space runs read as line breaks); and tokens whose
    decoded text is empty or not printable. Decoding each id alone works the same for byte-level
    BPE and SentencePiece vocabularies (a byte-level piece of a split character decodes to U+FFFD,
    which is printable: text). Only the given ids are looked at, never the whole vocabulary."""
    special = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or [])}
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {int(i) for i, tok in added.items() if not str(getattr(tok, "content", tok)).isspace()}
    out = set()
    for i in set(ids):
        if i in special or not is_text(tokenizer.decode([i], skip_special_tokens=False)):
            out.add(i)
    return out


def repeated_ngrams(ids: Sequence[int], n: int = 3) -> tuple[int, int]:
    """(n-grams that repeat an earlier n-gram of the same sequence, all n-grams)."""
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return len(grams) - len(set(grams)), len(grams)


def repeated_ngram_fraction(ids: Sequence[int], n: int = 3) -> float:
    """Share of the sequence's n-grams that repeat an earlier one (0 for a sequence shorter than n)."""
    rep, total = repeated_ngrams(ids, n)
    return rep / total if total else 0.0


def longest_run(ids: Sequence[int]) -> int:
    """The longest run of one token repeated back to back (0 for an empty sequence)."""
    best = run = 0
    prev: int | None = None
    for t in ids:
        run = run + 1 if t == prev else 1
        prev = t
        best = max(best, run)
    return best


def special_fraction(ids: Sequence[int], non_text: Collection[int]) -> float:
    """Share of the tokens that are non-text (0 for an empty sequence)."""
    return sum(t in non_text for t in ids) / len(ids) if ids else 0.0


def fluency_stats(seqs: Sequence[Sequence[int]], non_text: Collection[int],
                  base_logprobs: Sequence[torch.Tensor], n: int = 3) -> FluencyStats:
    """Pooled measures of one side's generations. `seqs`: generated token ids per prompt;
    `base_logprobs`: per prompt, the base model's log-prob of each generated token given the
    prompt and the tokens before it ([len(seq)])."""
    if len(seqs) != len(base_logprobs):
        raise ValueError(f"{len(seqs)} generations but {len(base_logprobs)} log-prob rows.")
    tokens = sum(len(s) for s in seqs)
    rep = [repeated_ngrams(s, n) for s in seqs]
    grams = sum(t for _, t in rep)
    lps = torch.cat([lp.double().flatten() for lp in base_logprobs]) if base_logprobs else torch.zeros(0)
    nll = -float(lps.mean()) if lps.numel() else math.nan
    return FluencyStats(
        generations=len(seqs),
        tokens=tokens,
        special_fraction=special_fraction([t for s in seqs for t in s], non_text),
        repeated_ngrams=sum(r for r, _ in rep) / grams if grams else 0.0,
        longest_run=max((longest_run(s) for s in seqs), default=0),
        base_perplexity=math.nan if math.isnan(nll) else (math.exp(nll) if nll < 700 else math.inf),
    )


def degeneration(base: FluencyStats, edited: FluencyStats, cfg: FluencyConfig = FluencyConfig()) -> list[str]:
    """What makes the edited side's text degenerate next to the base's, one clause each
    ("41% special tokens (base 0%)"); empty when it is as fluent as the base's."""
    out = []
    if edited.special_fraction - base.special_fraction > cfg.special_max_excess:
        out.append(f"{edited.special_fraction:.0%} special tokens (base {base.special_fraction:.0%})")
    if edited.repeated_ngrams - base.repeated_ngrams > cfg.repetition_max_excess:
        out.append(f"{edited.repeated_ngrams:.0%} repeated {cfg.ngram}-grams (base {base.repeated_ngrams:.0%})")
    if edited.longest_run - base.longest_run > cfg.run_max_excess:
        out.append(f"one token repeated {edited.longest_run} times in a row (base at most {base.longest_run})")
    ratio = ppl_ratio(base, edited)
    if ratio is not None and ratio > cfg.base_ppl_max_ratio:
        out.append(f"base-model perplexity of its text {edited.base_perplexity:.3g} "
                   f"(of the base's own {base.base_perplexity:.3g})")
    return out


def ppl_ratio(base: FluencyStats, edited: FluencyStats) -> float | None:
    """Base perplexity of the edited side's text over that of the base's own text (None when
    either side generated nothing)."""
    if math.isnan(base.base_perplexity) or math.isnan(edited.base_perplexity) or base.base_perplexity <= 0:
        return None
    return edited.base_perplexity / base.base_perplexity
