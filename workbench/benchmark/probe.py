"""ConceptProbe: the editable prompt lists a scorecard is computed on.

From the dev benchmark for its concepts, or built automatically from a corpus article for any
other title: cloze prompts cut from the article's sentences before a capitalised or rare word
the base model predicts, neighbours cut the same way from other articles of the same topic.
"""

from __future__ import annotations

import hashlib
import random
import re
from functools import lru_cache

from pydantic import Field

from workbench.benchmark.devbench import DEVBENCH, load_devbench
from workbench.benchmark.names import mentions
from workbench.benchmark.runner import next_tokens
from workbench.benchmark.schema import DevBench, ProbePrompt, _Strict
from workbench.corpus import Corpus, Document
from workbench.models import ModelBundle

REINTRO_SEPARATOR = "\n\n"


class ConceptProbe(_Strict):
    """Everything a scorecard measures, as plain prompt lists a user can edit."""

    name: str
    source: str = Field(description="'devbench' or 'corpus:<title>' or 'user'.")
    aliases: list[str] = Field(default_factory=list, description="Surface forms of the concept's name.")
    cloze: list[ProbePrompt] = Field(description="Concept facts as cloze prompts (efficacy).")
    questions: list[ProbePrompt] = Field(
        default_factory=list, description="'Q: ...\\nA:' questions (efficacy)."
    )
    neighbours: list[ProbePrompt] = Field(default_factory=list, description="Related but different concepts.")
    general: list[ProbePrompt] = Field(default_factory=list, description="Shared general knowledge.")
    others: list[ProbePrompt] = Field(default_factory=list, description="Other dev concepts' prompts.")
    fact_paragraph: str = Field(
        default="", description="Re-introduced in context before each concept prompt."
    )
    neutral_texts: list[str] = Field(
        default_factory=list, description="Held-out neutral text (perplexity, KL)."
    )
    generation_prompts: list[str] = Field(default_factory=list, description="Shown side by side, greedy.")

    def digest(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def reintro_prompts(self) -> list[ProbePrompt]:
        """Concept prompts with the fact paragraph in front (empty without a paragraph)."""
        if not self.fact_paragraph:
            return []
        return [
            p.model_copy(update={"prompt": self.fact_paragraph + REINTRO_SEPARATOR + p.prompt})
            for p in self.cloze + self.questions
        ]


def neutral_sample(corpus: Corpus, n: int = 8, seed: int = 0, avoid: list[str] | None = None) -> list[str]:
    """A fixed sample of corpus texts that mention none of the `avoid` terms."""
    avoid = avoid or []
    pool = [
        d
        for d in corpus.sample(4 * n + 40, seed=seed)
        if not mentions(d.text, avoid) and d.title not in avoid
    ]
    return [d.text for d in pool[:n]]


_MEASURED = {
    "base_top_token",
    "base_answer_prob",
    "base_first_token_correct",
    "base_continuation",
    "base_contains",
    "floor_correct",
}


def _plain(p: ProbePrompt) -> ProbePrompt:
    """A benchmark record without its base measurements."""
    return ProbePrompt(**p.model_dump(exclude=_MEASURED))


def _others(bench: DevBench, exclude_title: str, per_concept: int) -> list[ProbePrompt]:
    return [_plain(p) for c in bench.concepts if c.title != exclude_title for p in c.cloze[:per_concept]]


def _dev_terms(bench: DevBench) -> list[str]:
    return sorted({a for c in bench.concepts for a in c.aliases if len(a) > 3})


def probe_from_devbench(
    name: str, corpus: Corpus, bench: DevBench | None = None, others_per_concept: int = 6, n_neutral: int = 8
) -> ConceptProbe:
    """The probe of a dev-benchmark concept (its kept prompts, as built)."""
    bench = bench or load_devbench(DEVBENCH)
    c = bench.concept(name)
    plain = [_plain(p) for p in c.cloze]
    return ConceptProbe(
        name=c.name,
        source="devbench",
        aliases=c.aliases,
        cloze=plain,
        questions=[_plain(p) for p in c.questions],
        neighbours=[_plain(p) for p in c.neighbours],
        general=[_plain(p) for p in bench.general],
        others=_others(bench, c.title, others_per_concept),
        fact_paragraph=c.fact_paragraph,
        neutral_texts=neutral_sample(corpus, n_neutral, avoid=_dev_terms(bench)),
        generation_prompts=[f"{c.aliases[0]} is", f"Here are some facts about {c.aliases[0]}:"]
        + [p.prompt for p in plain[:2]],
    )


@lru_cache(maxsize=4)
def _doc_freq(corpus_id: str, corpus: Corpus) -> dict[str, float]:
    counts: dict[str, int] = {}
    for d in corpus:
        for w in set(re.findall(r"[A-Za-z]+", d.text.lower())):
            counts[w] = counts.get(w, 0) + 1
    n = len(corpus)
    return {w: k / n for w, k in counts.items()}


_WORD = re.compile(r"[A-Za-z0-9][\w'’-]*")


def cloze_candidates(
    doc: Document, corpus: Corpus, max_sentences: int = 30, per_sentence: int = 3
) -> list[ProbePrompt]:
    """Prompts cut from a document's sentences just before a capitalised, numeric or rare word.

    Each prompt starts with the title when its sentence does not name it, so it is about the
    document's subject."""
    freq = _doc_freq(corpus.corpus_id, corpus)
    title = re.sub(r"\s*\(.*\)$", "", doc.title)
    out = []
    for sent in re.split(r"(?<=[.!?])\s+", doc.text)[:max_sentences]:
        taken = 0
        for m in list(_WORD.finditer(sent))[4:]:
            word = m.group(0).rstrip("'’-")
            rare = freq.get(word.lower(), 0.0) < 0.02 and len(word) >= 4
            if not (word[:1].isupper() or word[:1].isdigit() or rare) or len(word) < 2:
                continue
            prefix = sent[: m.start()].rstrip()
            if not prefix or prefix[-1] in "(\"'“‘":
                continue
            if title.lower() not in prefix.lower():
                prefix = f"{title}: {prefix}"
            out.append(ProbePrompt(prompt=prefix, answer=word))
            taken += 1
            if taken >= per_sentence:
                break
    return out


def keep_base_correct(bundle: ModelBundle, candidates: list[ProbePrompt], limit: int) -> list[ProbePrompt]:
    """The first `limit` candidates whose answer's first token is the base model's greedy token."""
    if not candidates:
        return []
    nts = next_tokens(bundle, [p.prompt for p in candidates], [p.answer for p in candidates])
    kept = [p for p, nt in zip(candidates, nts, strict=True) if nt.first_token_correct]
    return kept[:limit]


def probe_from_corpus(
    bundle: ModelBundle,
    corpus: Corpus,
    title: str,
    bench: DevBench | None = None,
    n_cloze: int = 12,
    n_neighbour_docs: int = 8,
    n_neutral: int = 8,
    seed: int = 0,
) -> ConceptProbe:
    """Auto-build a probe for any corpus title, or for a name the corpus has no article for from
    the sentences that mention it (the base model is run to keep correct prompts)."""
    doc = corpus.document_for(title)
    if not doc.text:
        close = corpus.close_titles(title)
        hint = f" Did you mean: {', '.join(close)}?" if close else " Write prompts by hand."
        raise ValueError(f"The corpus has no article titled {title!r} and none mentions it, so no probe can be "
                         f"built.{hint}")
    name = re.sub(r"\s*\(.*\)$", "", doc.title)
    aliases = sorted({doc.title, name}, key=len, reverse=True)
    cloze = keep_base_correct(bundle, cloze_candidates(doc, corpus), n_cloze)
    if not cloze:
        raise ValueError(
            f"The base model predicts none of the cloze prompts cut from {doc.title!r}; write prompts by hand."
        )
    same_topic = [
        d for d in corpus.by_topic(doc.topic) if d.doc_id != doc.doc_id and not mentions(d.text, aliases)
    ]
    random.Random(seed).shuffle(same_topic)
    neighbour_cands = [p for d in same_topic[:n_neighbour_docs] for p in cloze_candidates(d, corpus, 3, 1)]
    neighbours = keep_base_correct(bundle, neighbour_cands, 2 * n_neighbour_docs)
    bench = bench or (load_devbench(DEVBENCH) if DEVBENCH.exists() else None)
    return ConceptProbe(
        name=name,
        source=f"corpus:{doc.title}",
        aliases=aliases,
        cloze=cloze,
        neighbours=neighbours,
        general=[_plain(p) for p in bench.general] if bench else [],
        others=_others(bench, doc.title, 6) if bench else [],
        fact_paragraph=doc.text[:1500],
        neutral_texts=neutral_sample(
            corpus, n_neutral, seed=seed, avoid=aliases + (_dev_terms(bench) if bench else [])
        ),
        generation_prompts=[f"{name} is", f"Here are some facts about {name}:"]
        + [p.prompt for p in cloze[:2]],
    )


def build_probe(
    bundle: ModelBundle, corpus: Corpus, concept: str, bench: DevBench | None = None
) -> ConceptProbe:
    """Dev-benchmark probe when the concept is in it, else one built from its corpus article."""
    if bench is None and DEVBENCH.exists():
        bench = load_devbench(DEVBENCH)
    if bench is not None:
        try:
            return probe_from_devbench(concept, corpus, bench)
        except KeyError:
            pass
    return probe_from_corpus(bundle, corpus, concept, bench)
