"""Build the dev benchmark: run the base model on the hand-written candidates, keep what it
answers correctly, measure the name-substitution floor, and write JSON with provenance.

    python -m workbench.benchmark.build [--out workbench/benchmark/devbench.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from workbench import atomic
from workbench.benchmark.devbench import CANDIDATES, DEVBENCH, HERE
from workbench.benchmark.names import mentions, substitute
from workbench.benchmark.runner import greedy_continuations, next_tokens
from workbench.benchmark.schema import (
    BasePromptRecord,
    Dependence,
    DevBench,
    DevConcept,
    ProbePrompt,
    Provenance,
)
from workbench.benchmark.scoring import contains_any
from workbench.models import ModelBundle, ModelSource, load_bundle

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 8
KEEP_RULE = (
    "kept if the base model's greedy next token equals the answer's first token, or its greedy "
    f"{MAX_NEW_TOKENS}-token continuation contains an accepted string (case-insensitive)"
)
FLOOR_RULE = (
    "each alias of the concept's name is replaced by each of 3 made-up names of the same kind; "
    "cue-answerable if the base is still correct (same rule) for at least 2 of 3, else "
    "name-dependent; name-free if the prompt does not contain the name"
)


def parse_item(item: list[Any]) -> ProbePrompt:
    """[prompt, answer] or [prompt, answer, [accepted...]] -> ProbePrompt."""
    if len(item) not in (2, 3):
        raise ValueError(f"A candidate must be [prompt, answer] or [prompt, answer, [accepted]]: {item!r}")
    return ProbePrompt(prompt=item[0], answer=item[1], accept=list(item[2]) if len(item) == 3 else [])


def judge(bundle: ModelBundle, prompts: list[ProbePrompt]) -> list[tuple[Any, str, bool, bool]]:
    """(NextToken, continuation, first_token_correct, contains) for each prompt, batched."""
    nts = next_tokens(bundle, [p.prompt for p in prompts], [p.answer for p in prompts])
    conts = greedy_continuations(bundle, [p.prompt for p in prompts], MAX_NEW_TOKENS)
    return [
        (nt, c, nt.first_token_correct, contains_any(c, p.accepted))
        for nt, c, p in zip(nts, conts, prompts, strict=True)
    ]


def build(bundle: ModelBundle, candidates_path: Path = CANDIDATES, command: str = "") -> DevBench:
    raw = json.loads(candidates_path.read_text(encoding="utf-8"))
    sections: list[tuple[str, int | None, str, ProbePrompt]] = []  # (section, concept idx, key, prompt)
    for index, c in enumerate(raw["concepts"]):
        for key in ("cloze", "questions", "neighbours"):
            sections += [(key, index, key, parse_item(it)) for it in c[key]]
    sections += [("general", None, "general", parse_item(it)) for it in raw["general"]]
    t0 = time.perf_counter()
    results = judge(bundle, [s[3] for s in sections])
    log.info("judged %d candidates in %.0f s", len(sections), time.perf_counter() - t0)

    kept = [(s, r) for s, r in zip(sections, results, strict=True) if r[2] or r[3]]
    # Floor: made-up names in the kept concept prompts (cloze and questions only).
    floor_jobs: list[tuple[int, ProbePrompt]] = []
    for k, ((key, ci, _, p), _) in enumerate(kept):
        if ci is None or key == "neighbours":
            continue
        c = raw["concepts"][ci]
        if mentions(p.prompt, c["aliases"]):
            for fake in c["fake_names"]:
                floor_jobs.append((k, p.model_copy(update={"prompt": substitute(p.prompt, fake)})))
    t0 = time.perf_counter()
    floor_results = judge(bundle, [fp for _, fp in floor_jobs])
    log.info("judged %d floor prompts in %.0f s", len(floor_jobs), time.perf_counter() - t0)
    floors: dict[int, list[bool]] = {}
    for (k, _), r in zip(floor_jobs, floor_results, strict=True):
        floors.setdefault(k, []).append(bool(r[2] or r[3]))

    records: dict[tuple[str, int | None], list[BasePromptRecord]] = {}
    for k, ((key, ci, _, p), (nt, cont, first_ok, contains)) in enumerate(kept):
        floor = floors.get(k, [])
        dep: Dependence
        if key in ("neighbours", "general"):
            dep = "unknown"
        elif not floor:
            dep = "name-free"
        else:
            dep = "cue-answerable" if sum(floor) >= 2 else "name-dependent"
        rec = BasePromptRecord(
            **p.model_dump(exclude={"dependence"}),
            dependence=dep,
            base_top_token=nt.top_text,
            base_answer_prob=round(nt.answer_prob, 5),
            base_first_token_correct=first_ok,
            base_continuation=cont,
            base_contains=contains,
            floor_correct=floor,
        )
        records.setdefault((key, ci), []).append(rec)

    concepts = []
    for ci, c in enumerate(raw["concepts"]):
        concepts.append(
            DevConcept(
                name=c["name"],
                title=c["title"],
                kind=c["kind"],
                aliases=c["aliases"],
                fake_names=c["fake_names"],
                cloze=records.get(("cloze", ci), []),
                questions=records.get(("questions", ci), []),
                neighbours=records.get(("neighbours", ci), []),
                fact_paragraph=c["fact_paragraph"],
            )
        )
    general = records.get(("general", None), [])
    counts = {
        "candidates": len(sections),
        "kept": len(kept),
        "general": len(general),
        "floor_prompts": len(floor_jobs),
    }
    for c in concepts:
        counts[f"{c.name} cloze"] = len(c.cloze)
        counts[f"{c.name} questions"] = len(c.questions)
        counts[f"{c.name} neighbours"] = len(c.neighbours)
    provenance = Provenance(
        builder_command=command or "python -m workbench.benchmark.build",
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        model_id=bundle.model_id,
        model_weights_sha256=bundle.weights_sha256,
        candidates_file=str(candidates_path.relative_to(HERE.parent.parent))
        if candidates_path.is_relative_to(HERE.parent.parent)
        else str(candidates_path),
        candidates_sha256=hashlib.sha256(candidates_path.read_bytes()).hexdigest(),
        keep_rule=KEEP_RULE,
        floor_rule=FLOOR_RULE,
        max_new_tokens=MAX_NEW_TOKENS,
        counts=counts,
    )
    return DevBench(provenance=provenance, concepts=concepts, general=general)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEVBENCH)
    ap.add_argument("--candidates", type=Path, default=CANDIDATES)
    ap.add_argument("--source", default="embedded", help="model source kind (default: embedded)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a busy 2-core box)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    bundle = load_bundle(ModelSource(args.source))
    bench = build(
        bundle, args.candidates, command="python -m workbench.benchmark.build " + " ".join(argv or [])
    )
    # a scorecard reading the file meanwhile sees the old or the new one (workbench/atomic.py)
    atomic.write_text(args.out, bench.model_dump_json(indent=1) + "\n")
    log.info("wrote %s: %s", args.out, bench.provenance.counts)


if __name__ == "__main__":
    main()
