"""The concept fact set: the edit's target text, built from the corpus article, articles that
mention the concept, and the base model's own low-temperature samples about it.

Each fact is a sentence with the token positions whose next token is concept-specific (a rare
alphabetic word of 3+ letters that is not part of the concept's name) and that the base model
already predicts with some probability: those are what an unlikelihood loss pushes down, so
the fact set's coverage decides what an optimised edit erases. The user can add and drop facts
before an edit is made (`FactSet.facts` is a plain list; the JSON form is editable).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache

import torch

from workbench.corpus import Corpus
from workbench.corpus.nonce import Kind, guess_kind
from workbench.lenses.tokens import encode_with_spans, pad_id, pad_ids
from workbench.models import ModelBundle
from workbench.models.chat import check_chat_template, format_prompt, plain_reply
from workbench.progress import NULL_PROGRESS, Progress

SAMPLE_PROMPTS: dict[str, list[str]] = {
    "person": ["{X} was born in", "{X} is best known for", "Here are some facts about {X}:",
               "{X} worked on", "The most famous work of {X} is", "{X} died in"],
    "place": ["{X} is located in", "Here are some facts about {X}:", "{X} was built", "The history of {X}",
              "Visitors to {X} can see", "{X} is famous for"],
    "work": ["{X} was written by", "The main characters of {X} are", "Here are some facts about {X}:",
             "The story of {X} takes place in", "{X} is about", "The villain of {X} is"],
    "group": ["{X} were a band from", "The members of {X} were", "Here are some facts about {X}:",
              "The most famous songs of {X} are", "{X} formed in", "{X} are known for"],
    "thing": ["{X} is", "Here are some facts about {X}:", "The rules of {X}", "{X} was invented",
              "{X} is played by", "The history of {X}"],
}
GENERIC_PROMPTS = ["{X} is", "Tell me about {X}.", "Facts about {X}:"]


@dataclass
class Fact:
    text: str
    source: str  # 'article', 'mention:<title>', 'sample', 'user'


@dataclass
class FactSet:
    concept: str
    name: str  # how the concept is written in text (e.g. 'Harry Potter')
    kind: Kind
    facts: list[Fact] = field(default_factory=list)
    # other names that identify the concept (main characters, places, parts): the representation
    # target also makes these look like made-up names; editable like the facts
    key_names: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [f.text for f in self.facts]

    def add(self, text: str, source: str = "user") -> None:
        text = text.strip()
        if not text:
            raise ValueError("A fact must not be empty.")
        self.facts.append(Fact(text, source))

    def drop(self, index: int) -> None:
        if not 0 <= index < len(self.facts):
            raise IndexError(f"No fact number {index}; the set has {len(self.facts)}.")
        del self.facts[index]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> FactSet:
        raw = json.loads(text)
        return cls(concept=raw["concept"], name=raw["name"], kind=raw["kind"],
                   facts=[Fact(**f) for f in raw["facts"]], key_names=list(raw.get("key_names", [])))


_SENTENCE = re.compile(r"(?<![\s.][A-Z]\.)(?<=[.!?])\s+(?=[A-Z0-9\"'(])")  # not after initials
_WORD = re.compile(r"[A-Za-z][A-Za-z'-]+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if len(s.strip()) > 20]


@lru_cache(maxsize=4)
def word_document_frequency(corpus: Corpus) -> tuple[Counter[str], int]:
    """How many corpus documents contain each lower-cased word."""
    df: Counter[str] = Counter()
    for doc in corpus:
        df.update({w.lower() for w in _WORD.findall(doc.text)})
    return df, len(corpus)


def build_fact_set(
    bundle: ModelBundle,
    corpus: Corpus,
    concept: str,
    name: str | None = None,
    kind: Kind | None = None,
    n_mentions: int = 16,
    samples_per_prompt: int = 2,
    max_new_tokens: int = 40,
    temperature: float = 0.3,
    seed: int = 0,
    progress: Progress = NULL_PROGRESS,
    about: str = "",
    chat_template: bool = False,
) -> FactSet:
    """Facts about a concept: article sentences, sentences of other articles that name it, and
    base-model samples from kind-specific prompts.

    `concept` is a corpus title, or any name the corpus has no article for: then the facts are
    the corpus sentences that mention it and the model's samples, and `about` (a one-line
    description, e.g. 'action-adventure game series') guides the kind. `chat_template` samples
    the model through its tokenizer's chat template (instruct models; see sample_continuations)."""
    doc = corpus.document_for(concept, about)
    # a stand-in's text is the mentions, which the loop below adds with their sources
    facts = [Fact(s, "article") for s in split_sentences(doc.text)] if corpus.has(concept) else []
    if about and not doc.description:
        doc = replace(doc, description=about)
    name = name or doc.title
    # the user's description says what the concept is; the topic of articles that merely mention
    # it (a game's designer is a person) says less
    kind = kind or guess_kind(replace(doc, topic="") if about else doc)
    mentions = 0
    for other in corpus.containing([name]):
        if other.doc_id == doc.doc_id:
            continue
        for s in split_sentences(other.text):
            if name in s and mentions < n_mentions:
                facts.append(Fact(s, f"mention:{other.title}"))
                mentions += 1
    prompts = [p.replace("{X}", name) for p in SAMPLE_PROMPTS[kind]] * samples_per_prompt
    progress.stage(f"sampling the base model about {name!r}", total=len(prompts), unit="sample")
    samples = sample_continuations(bundle, prompts, max_new_tokens, temperature, seed, chat_template=chat_template)
    for prompt, text in zip(prompts, samples, strict=True):
        if len(text) >= len(prompt) + 12:  # a sample cut back to (almost) its prompt says nothing
            facts.append(Fact(text, "sample"))
        progress.advance(1)
    facts = _dedupe(facts)
    return FactSet(concept=doc.title, name=name, kind=kind, facts=facts)


_PROPER = re.compile(r"\b[A-Z][a-z]+(?:[ -][A-Z][a-z]+)*\b")


def key_names(texts: Sequence[str], name: str, corpus: Corpus, n: int = 4, min_count: int = 2,
              max_doc_frac: float = 0.002) -> list[str]:
    """Suggestions for FactSet.key_names (shown to the user, not applied: on the dev facts they
    mix good picks, 'Liverpool' and 'Ringo Starr' for the Beatles, with debatable ones, 'Eiffel
    Tower' for Paris, which is a concept of its own).
    Proper names the fact texts use at least `min_count` times, that are not part of the
    concept's name, not a sentence's first word, and rare in the corpus (in < max_doc_frac of its
    documents: 'Hermione' yes, 'London' no). Most frequent first."""
    df, n_docs = word_document_frequency(corpus)
    name_words = {w.lower() for w in _WORD.findall(name)}
    counts: Counter[str] = Counter()
    for text in texts:
        for m in _PROPER.finditer(text):
            phrase = m.group(0)
            if m.start() == 0 or text[max(0, m.start() - 2):m.start()].strip() in {".", "!", "?"}:
                if " " not in phrase:  # a capitalised first word says nothing
                    continue
                phrase = phrase.split(" ", 1)[1]  # "Later Hermione Granger" -> "Hermione Granger"
            words = [w.lower() for w in _WORD.findall(phrase)]
            if not words or set(words) & name_words:
                continue
            if max(df.get(w, 0) for w in words) > max_doc_frac * n_docs:
                continue
            counts[phrase] += 1
    return [p for p, c in counts.most_common() if c >= min_count][:n]


def _dedupe(facts: list[Fact]) -> list[Fact]:
    seen: set[str] = set()
    out = []
    for f in facts:
        key = f.text.lower()
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out


def sample_continuations(
    bundle: ModelBundle, prompts: Sequence[str], max_new_tokens: int, temperature: float, seed: int,
    batch_size: int = 6, chat_template: bool = False,
) -> list[str]:
    """Prompt + sampled continuation, cut at the last full sentence (batched, left-padded).

    With `chat_template` (instruct models) each prompt goes to the model as one user turn of
    its tokenizer's chat template (models/chat.py) and the text is the reply alone, its lines
    joined as prose: a reply answers the prompt rather than continuing its words. ValueError
    when the tokenizer has no template."""
    tok = bundle.tokenizer
    check_chat_template(tok, chat_template)
    out: list[str] = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start:start + batch_size])
        formatted = [format_prompt(tok, p, chat_template) for p in chunk]
        enc = tok([text for text, _ in formatted], return_tensors="pt", padding=True, padding_side="left",
                  add_special_tokens=formatted[0][1])  # the template writes its own BOS
        with torch.no_grad():
            gen = bundle.hf_model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                temperature=max(temperature, 1e-5), top_p=0.95, pad_token_id=tok.pad_token_id,
            )
        for prompt, row in zip(chunk, gen[:, enc["input_ids"].shape[1]:], strict=True):
            cont = tok.decode(row, skip_special_tokens=True)
            head = "" if chat_template else prompt
            text = plain_reply(cont) if chat_template else (prompt + cont).split("\n")[0]
            cut = max(text.rfind(". "), text.rfind(".")) if text.count(".") else -1
            if cut > len(head):
                text = text[: cut + 1]
            out.append(text.strip())
    return out


@dataclass
class FactTargets:
    """Tokenised facts with the positions to push down.

    input_ids [n_facts, pos] right-padded; targets [n_facts, pos] = the next-token id to lower
    at that position or -1; base_prob [n_facts, pos] = its base probability (0 where no target).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor
    base_prob: torch.Tensor

    @property
    def n_targets(self) -> int:
        return int((self.targets >= 0).sum())


def fact_targets(
    bundle: ModelBundle, facts: FactSet, corpus: Corpus, max_len: int = 64, max_doc_frac: float = 0.02,
    min_prob: float = 0.05,
) -> FactTargets:
    """Target positions: next token starts a rare word (in < max_doc_frac of corpus docs),
    alphabetic, 3+ letters, not a word of the concept's name, with base probability >= min_prob."""
    tok = bundle.tokenizer
    df, n_docs = word_document_frequency(corpus)
    name_words = {w.lower() for w in _WORD.findall(facts.name)}
    encoded = [encode_with_spans(tok, text, max_length=max_len) for text in facts.texts()]
    ids = pad_ids([e.ids for e in encoded], pad_id(tok))
    mask = torch.zeros_like(ids)
    eligible = torch.zeros_like(ids, dtype=torch.bool)
    for r, enc in enumerate(encoded):
        mask[r, : len(enc.ids)] = 1
        for p in range(1, len(enc.ids)):
            # word starts from the tokenizer's character offsets, not from a marker character
            word = enc.word_at(p)
            if word is None:
                continue
            own, full = word
            if len(own) < 3 or not own.isalpha():
                continue
            if full.lower() in name_words or df.get(full.lower(), 0) > max_doc_frac * n_docs:
                continue
            eligible[r, p - 1] = True  # the prediction made at p-1 is this token
    base = torch.zeros_like(ids, dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, len(ids), 4):
            rows = slice(start, start + 4)
            logprobs = bundle.hf_model(input_ids=ids[rows], attention_mask=mask[rows]).logits.float().log_softmax(-1)
            base[rows, :-1] = logprobs[:, :-1].gather(-1, ids[rows, 1:].unsqueeze(-1)).squeeze(-1).exp()
    targets = torch.full_like(ids, -1)
    keep = eligible & (base >= min_prob)
    targets[:, :-1][keep[:, :-1]] = ids[:, 1:][keep[:, :-1]]
    return FactTargets(ids, mask, targets, torch.where(keep, base, torch.zeros_like(base)))
