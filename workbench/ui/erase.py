"""Presentation glue of the 'Erase a concept' page: the fact set as an editable table and back,
the methods with what each was measured to do, the candidate table. Plain Python (testable
without Streamlit); the erasure itself is workbench.edits.erase.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.edits.facts import Fact, FactSet


@dataclass(frozen=True)
class MethodInfo:
    label: str
    help: str
    needs_sae: bool = False


# Numbers are bench/erasure.py means on the dev benchmark (README, "The default method").
METHOD_INFO: dict[str, MethodInfo] = {
    "optimise": MethodInfo(
        "Localized optimisation (default, best measured)",
        "Optimises additive deltas on ~256 value vectors (layers 1-8) so the concept's facts become "
        "unlikely and its name stops looking like itself, with a KL penalty on neutral, neighbour and "
        "'collision' text (other articles using the same answer words). Measured on 9 dev concepts: "
        "neighbours 0.95, general 0.95, perplexity +0.4%; prompts that need the name 0.28 answered "
        "(0.00 on Einstein and Star Wars), broad concepts (Japan, football, Paris) barely erased. "
        "~2 min of optimisation + ~1.5 min scorecard on 2 idle CPU cores."),
    "optimise-facts": MethodInfo(
        "Localized optimisation, fact target only",
        "Only the unlikelihood on the fact set (no representation target). Erases about as much, keeps "
        "neighbours slightly better on the two concepts measured."),
    "optimise-repr": MethodInfo(
        "Localized optimisation, representation target only",
        "Only 'make the name look like made-up names'. Keeps neighbours (1.00) but erases little (0.66 answered)."),
    "pisces": MethodInfo(
        "PISCES (SAE features, closed form)",
        "Removes SAE features of the value vectors in parameter space with the tau/mu rule and a small "
        "tau x mu search. Needs a local SAE of layer 6 (Home → Train an SAE). With our 270M SAE it was "
        "not specific (perplexity +34% on Harry Potter).", needs_sae=True),
    "pisces-rows": MethodInfo(
        "SAE feature rows + localized optimisation",
        "PISCES's selection (SAE features that fire on the fact set; their W_out rows by the tau rule) "
        "as the rows the localized optimisation edits. Needs a local SAE of layer 6.", needs_sae=True),
    "ablate": MethodInfo(
        "Zero contrast-ranked value vectors",
        "Zeroes the 256 W_out rows that fire most on the concept vs neutral text (ConceptVectors-style). "
        "Fast (seconds) but weak: 0.61 answered, perplexity +2.4%."),
    "project": MethodInfo(
        "Project out the concept direction",
        "Removes the difference-of-means direction from W_out rows of layers 2-6. Weak and costly: 0.66 "
        "answered, perplexity +6.7%."),
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
    """Key-name suggestions for the fact set (edits.facts.key_names), not yet chosen ones."""
    from workbench.edits.facts import key_names

    return [n for n in key_names(facts.texts(), facts.name, corpus) if n not in facts.key_names]


def candidates_frame(candidates: list[Any], limit: int = 200) -> pd.DataFrame:
    """The rows / SAE features an erasure touched (selected first), as a table."""
    from dataclasses import asdict

    rows = [asdict(c) for c in candidates[:limit]]
    return pd.DataFrame(rows)


def pisces_ready(saes_dir: Path, model_id: str, layer: int = 6) -> str | None:
    """None when a local SAE for PISCES exists, else the sentence saying what to do."""
    from workbench.edits.pisces_search import find_local_sae

    try:
        find_local_sae(saes_dir, model_id, layer)
    except (FileNotFoundError, ValueError) as err:
        return str(err)
    return None
