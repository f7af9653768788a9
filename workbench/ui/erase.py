"""Presentation glue of the 'Erase a concept' page: the fact set as an editable table and back,
the methods with what each was measured to do, the candidate table. Plain Python (testable
without Streamlit); the erasure itself is workbench.methods.erase.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.methods.facts import Fact, FactSet


@dataclass(frozen=True)
class MethodInfo:
    label: str
    help: str
    needs_sae: bool = False
    optimises: bool = False  # runs the localized optimisation, so 'Optimisation steps' applies


# Numbers are bench/erasure.py means on the 9 dev concepts (README, "Erasure methods measured").
# name-dep = prompts that need the concept's name; base is 1.00 on every prompt of the benchmark.
METHOD_INFO: dict[str, MethodInfo] = {
    "optimise": MethodInfo(
        "Localized optimisation (default)",
        "Optimises additive deltas on 256 value vectors (layers 1-8) so the concept's facts become "
        "unlikely and its name stops looking like itself, with a KL penalty on neutral, neighbour and "
        "'collision' text. Measured on 9 dev concepts: name-dep prompts 0.29 answered (0.00 on Einstein, "
        "the Beatles and Star Wars), neighbours 0.88 (Paris 0.44, Eiffel Tower 0.67), general 0.95, "
        "perplexity +0.4%; every control held on 5 of 9 concepts, the most of any method. Broad concepts "
        "(Japan 0.77, football 0.60) are barely erased. ~2 min of optimisation + ~1.5 min scorecard on 2 "
        "idle CPU cores.", optimises=True),
    "rewrite-optimise": MethodInfo(
        "Key rewrite + optimisation (strongest, costs neighbours)",
        "The key rewrite below, then the localized optimisation trained on top of it. Comes closest to "
        "the concept goal (name-dep 0.10 answered, first token 0.32) but breaks a control on 8 of 9 "
        "concepts: neighbours 0.85, general 0.91, perplexity +1.4%. Facts restated in the prompt come "
        "back less (0.78 answered in context vs 0.86 for the default). "
        "~7-15 min on 2 CPU cores.", optimises=True),
    "rewrite": MethodInfo(
        "Key rewrite (closed form, MEMIT-style)",
        "Rewrites MLPs 3-7 so the residual at the concept name looks like that of made-up names of the "
        "same kind; no fact list needed. Name-dep 0.28 answered (Paris 0.14, Japan 0.23 where the "
        "optimisation fails), neighbours 0.96, general 0.93, perplexity +1.1%; cue-answerable prompts "
        "stay (0.90). Every row of the five layers changes (6.6M weights). ~4 min."),
    "optimise-facts": MethodInfo(
        "Localized optimisation, fact target only",
        "Only the unlikelihood on the fact set (no representation target). On 6 concepts: name-dep 0.41 "
        "answered (the default 0.26 on the same 6), neighbours 0.93 (Paris 0.67): the facts' answer "
        "words are also the neighbours'.", optimises=True),
    "optimise-repr": MethodInfo(
        "Localized optimisation, representation target only",
        "Only 'make the name look like made-up names' (no fact list). On 5 concepts: keeps every "
        "control (neighbours 1.00, general 0.98, perplexity +0.0%) but erases little: name-dep 0.66 "
        "answered.", optimises=True),
    "pisces": MethodInfo(
        "PISCES (SAE features, closed form)",
        "Removes SAE features of the value vectors in parameter space with the tau/mu rule and a small "
        "tau x mu search. Needs a local SAE of layer 6 (Home → Train an SAE). Not specific with our 270M "
        "SAE: name-dep 0.42 answered, but general 0.62, neighbours 0.70, perplexity +56%.",
        needs_sae=True),
    "pisces-rows": MethodInfo(
        "SAE feature rows + localized optimisation",
        "PISCES's selection (SAE features that fire on the fact set; their W_out rows by the tau rule) "
        "as the rows the localized optimisation edits. Keeps neighbours (0.93) and perplexity (+0.5%) "
        "but erases less than the contrast rows: name-dep 0.64 answered. Needs a local SAE of layer 6.", needs_sae=True,
        optimises=True),
    "ablate": MethodInfo(
        "Zero contrast-ranked value vectors",
        "Zeroes the 256 W_out rows that fire most on the concept vs neutral text (ConceptVectors-style). "
        "Fast (seconds) but weak: name-dep 0.68 answered, neighbours 0.91, perplexity +2.2%."),
    "project": MethodInfo(
        "Project out the concept direction",
        "Removes the difference-of-means direction from W_out rows of layers 2-6. Weak and costly: "
        "name-dep 0.81 answered, general 0.91, perplexity +5.1%."),
}


def facts_frame(facts: FactSet) -> pd.DataFrame:
    """The fact set as rows a user ticks off or edits: keep, text, source."""
    return pd.DataFrame({"keep": [True] * len(facts.facts), "text": [f.text for f in facts.facts],
                         "source": [f.source for f in facts.facts]})


def facts_from_frame(facts: FactSet, frame: pd.DataFrame) -> FactSet:
    """The edited table back as a FactSet: unticked rows dropped, blank rows ignored, rows the
    user added marked 'user'. Raises ValueError if nothing is left to erase."""
    out = copy.deepcopy(facts)
    out.facts = []
    for row in frame.to_dict("records"):
        text = str(row.get("text") or "").strip()
        keep = row.get("keep")
        if not text or keep is False:
            continue
        source = row.get("source")
        out.facts.append(Fact(text, str(source) if isinstance(source, str) and source else "user"))
    if not out.facts:
        raise ValueError("The fact set is empty: keep or add at least one fact about the concept.")
    return out


def parse_names(text: str) -> list[str]:
    """'A, B,, C ' -> ['A', 'B', 'C'] (order kept, duplicates dropped)."""
    return list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))


def suggested_key_names(facts: FactSet, corpus: Any) -> list[str]:
    """Key-name suggestions for the fact set (methods.facts.key_names), not yet chosen ones."""
    from workbench.methods.facts import key_names

    return [n for n in key_names(facts.texts(), facts.name, corpus) if n not in facts.key_names]


def candidates_frame(candidates: list[Any], limit: int = 200) -> pd.DataFrame:
    """The rows / SAE features an erasure touched (selected first), as a table."""
    from dataclasses import asdict

    rows = [asdict(c) for c in candidates[:limit]]
    return pd.DataFrame(rows)


def pisces_ready(saes_dir: Path, model_id: str, layer: int = 6) -> str | None:
    """None when a local SAE for PISCES exists, else the sentence saying what to do."""
    from workbench.methods.pisces_search import find_local_sae

    try:
        find_local_sae(saes_dir, model_id, layer)
    except (FileNotFoundError, ValueError) as err:
        return str(err)
    return None
