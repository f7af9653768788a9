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
from workbench.models.depth import REFERENCE_LAYERS, describe_layers


@dataclass(frozen=True)
class MethodInfo:
    label: str
    what: str  # what the method does and its trade-off in words; the numbers come from the results file
    needs_sae: bool = False
    optimises: bool = False  # runs the localized optimisation, so 'Optimisation steps' applies

    def help(self, method: str, n_layers: int = REFERENCE_LAYERS) -> str:
        """The page's description: what it does (its layers and sizes read from the method's
        config, at the depth of an `n_layers` model), then what bench/erasure.py measured
        (workbench/benchmark/results.py, the same file the README's table is generated from)."""
        from workbench.benchmark.results import load_rows, measured_sentence, method_results

        what = self.what.format(**config_numbers(n_layers))
        return f"{what} {measured_sentence(method_results(load_rows()).get(method))}"


def config_numbers(n_layers: int = REFERENCE_LAYERS) -> dict[str, object]:
    """The numbers the method descriptions quote, read from the configs (never repeated in
    prose), with layers placed at the depth of an `n_layers` model."""
    from workbench.methods.erase import AblateConfig, PiscesConfig, ProjectConfig
    from workbench.methods.key_rewrite import RewriteConfig
    from workbench.methods.optimise import OptimiseConfig

    opt, rew, proj = OptimiseConfig().fitted(n_layers), RewriteConfig().fitted(n_layers), ProjectConfig()
    return {
        "rows": opt.n_rows, "optimise_layers": describe_layers(opt.layers),
        "rewrite_layers": describe_layers(rew.layers), "n_rewrite_layers": len(rew.layers),
        "project_layers": describe_layers(proj.layers_for(n_layers)),
        "sae_layer": PiscesConfig().layer_for(n_layers), "ablate_rows": AblateConfig().n_rows,
    }


# name-dep = prompts that need the concept's name; base is 1.00 on every prompt of the benchmark.
METHOD_INFO: dict[str, MethodInfo] = {
    "optimise": MethodInfo(
        "Localized optimisation (default)",
        "Optimises additive deltas on {rows} value vectors (layers {optimise_layers}) so the concept's facts become "
        "unlikely and its name stops looking like itself, with a KL penalty on neutral, neighbour and "
        "'collision' text. Holds every control on the most concepts of any method; broad concepts "
        "(countries, sports) are barely erased and same-genre places lose neighbours. ~4 min of "
        "optimisation + ~1 min scorecard on 2 idle CPU cores.", optimises=True),
    "rewrite-optimise": MethodInfo(
        "Key rewrite + optimisation (strongest, costs neighbours)",
        "The key rewrite below, then the localized optimisation trained on top of it. Comes closest to "
        "the concept goal and resists facts restated in the prompt best, but breaks a control (neighbours, "
        "general prompts) on most concepts. ~7-15 min on 2 CPU cores.", optimises=True),
    "rewrite": MethodInfo(
        "Key rewrite (closed form, MEMIT-style)",
        "Rewrites MLPs {rewrite_layers} so the residual at the concept name looks like that of made-up names of the "
        "same kind; no fact list needed. Reaches broad concepts the optimisation misses and keeps "
        "neighbours, but costs general prompts; cue-answerable prompts stay. Every row of the {n_rewrite_layers} layers "
        "changes. ~4 min."),
    "rewrite-cf": MethodInfo(
        "Key rewrite to the counterfactual name",
        "Rewrites MLPs {rewrite_layers} at the concept name so that the model's next-token distributions after the "
        "name match its own with made-up names of the same kind (\"never heard of X\"), while other "
        "names of the same kind (other countries for Japan) keep their keys. Acts on the name, so it "
        "reaches broad concepts (countries, cities, sports); a rank-1 change per layer. ~5 min."),
    "optimise-facts": MethodInfo(
        "Localized optimisation, fact target only",
        "Only the unlikelihood on the fact set (no representation target): the facts' answer words are "
        "also the neighbours', so neighbours suffer.", optimises=True),
    "optimise-repr": MethodInfo(
        "Localized optimisation, representation target only",
        "Only 'make the name look like made-up names' (no fact list): keeps every control but erases "
        "little.", optimises=True),
    "optimise-cf": MethodInfo(
        "Localized optimisation, counterfactual-name target",
        "Trains the same value vectors so that, on text about the concept, the model's next-token "
        "distributions after the name match its own distributions with made-up names of the same kind "
        "(\"never heard of X\"), with other same-topic names in the retain set; no unlikelihood on answer "
        "words.", optimises=True),
    "pisces": MethodInfo(
        "PISCES (SAE features, closed form)",
        "Removes SAE features of the value vectors in parameter space with the tau/mu rule and a small "
        "tau x mu search. Needs a local SAE of layer {sae_layer} (Home → Train an SAE). Not specific with our 270M "
        "SAE: it costs general prompts and perplexity.", needs_sae=True),
    "pisces-rows": MethodInfo(
        "SAE feature rows + localized optimisation",
        "PISCES's selection (SAE features that fire on the fact set; their W_out rows by the tau rule) "
        "as the rows the localized optimisation edits. Keeps neighbours and perplexity but erases less "
        "than the contrast rows. Needs a local SAE of layer {sae_layer}.", needs_sae=True, optimises=True),
    "ablate": MethodInfo(
        "Zero contrast-ranked value vectors",
        "Zeroes the {ablate_rows} W_out rows that fire most on the concept vs neutral text (ConceptVectors-style). "
        "Fast (seconds) but weak."),
    "project": MethodInfo(
        "Project out the concept direction",
        "Removes the difference-of-means direction from W_out rows of layers {project_layers}. Weak and costly in "
        "perplexity."),
}


AS_NAME = " (as a name)"  # the picker's suffix for a typed name that is not a corpus title


def is_name(choice: str | None) -> bool:
    """Whether the concept picker's choice is a typed name rather than a corpus title."""
    return bool(choice) and str(choice).endswith(AS_NAME)


def concept_of(choice: str | None) -> str | None:
    """The concept a picker choice stands for (the title, or the typed name without the suffix)."""
    return None if not choice else str(choice).removesuffix(AS_NAME)


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


def pisces_ready(saes_dir: Path, model_id: str, n_layers: int) -> str | None:
    """None when a local SAE for PISCES exists at the model's default SAE layer, else the
    sentence saying what to do."""
    from workbench.methods.erase import PiscesConfig

    layer = PiscesConfig().layer_for(n_layers)
    from workbench.methods.pisces_search import find_local_sae

    try:
        find_local_sae(saes_dir, model_id, layer)
    except (FileNotFoundError, ValueError) as err:
        return str(err)
    return None
