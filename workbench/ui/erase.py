"""Presentation glue of the 'Erase a concept' page: the fact set as an editable table and back,
the methods' labels and descriptions (from the method registry) with what each was measured to
do, the candidate table. Plain Python (testable without Streamlit); the erasure itself is
workbench.methods.erase.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd

from workbench.methods.facts import Fact, FactSet
from workbench.models.depth import REFERENCE_LAYERS, describe_layers


def method_choices() -> list[str]:
    """The page's method options: every registered method (workbench/methods/registry.py), in
    registration order."""
    from workbench.methods.erase import METHODS

    return list(METHODS)


def method_label(method: str) -> str:
    """The option label of a registered method (its name when it has none registered)."""
    from workbench.methods.erase import METHODS

    registered = METHODS.get(method)
    return registered.label if registered is not None else method


def method_help(method: str, n_layers: int = REFERENCE_LAYERS) -> str:
    """The page's description of a registered method: what it does (its `what`, with layers and
    sizes read from the method's config at the depth of an `n_layers` model), then what
    bench/erasure.py measured (workbench/benchmark/results.py, the same file docs/results.md's tables are
    generated from), or that it has not been measured yet."""
    from workbench.benchmark.results import load_rows, measured_sentence, method_results
    from workbench.methods.erase import METHODS

    what = METHODS[method].what.format(**config_numbers(n_layers))
    return f"{what} {measured_sentence(method_results(load_rows()).get(method))}"


def settings_frame(method: str, n_layers: int) -> pd.DataFrame:
    """The settings a method runs with by default on this model (`Method.config_of`, layers
    placed at its depth where the config can say), one row per field, for the page to show."""
    from dataclasses import fields, is_dataclass

    from workbench.methods.erase import DEFAULT_OPTIONS, METHODS

    cfg = METHODS[method].config_of(DEFAULT_OPTIONS)
    if cfg is None or not is_dataclass(cfg):
        return pd.DataFrame(columns=["setting", "value"])
    if hasattr(cfg, "fitted"):
        cfg = cfg.fitted(n_layers)
    return pd.DataFrame([(f.name, repr(getattr(cfg, f.name))) for f in fields(cfg)], columns=["setting", "value"])


def config_numbers(n_layers: int = REFERENCE_LAYERS) -> dict[str, object]:
    """The numbers the method descriptions quote, read from the configs (never repeated in
    prose), with layers placed at the depth of an `n_layers` model."""
    from workbench.methods.elm import ElmConfig
    from workbench.methods.erase import AblateConfig, PiscesConfig, ProjectConfig
    from workbench.methods.key_rewrite import RewriteConfig
    from workbench.methods.optimise import OptimiseConfig
    from workbench.methods.rmu import RmuConfig

    opt, rew, proj = OptimiseConfig().fitted(n_layers), RewriteConfig().fitted(n_layers), ProjectConfig()
    rmu, elm = RmuConfig().fitted(n_layers), ElmConfig().fitted(n_layers)
    return {
        "rows": opt.n_rows, "optimise_layers": describe_layers(opt.layers or ()),
        "rewrite_layers": describe_layers(rew.layers or ()), "n_rewrite_layers": len(rew.layers or ()),
        "project_layers": describe_layers(proj.layers_for(n_layers)),
        "sae_layer": PiscesConfig().layer_for(n_layers), "ablate_rows": AblateConfig().n_rows,
        "rmu_layers": describe_layers(rmu.layers or ()), "rmu_layer": rmu.layer, "rmu_scale": f"{rmu.steering_scale:g}",
        "elm_layers": describe_layers(elm.layers or ()), "elm_rank": elm.rank,
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


COMPARE_BASELINES = ("rmu", "elm")  # the literature baselines 'Compare methods' sets beside the default method


def unavailable_methods(saes_dir: Path, model_id: str, n_layers: int) -> dict[str, str]:
    """{method: the sentence why it cannot run here} for the registered methods that need
    something this server lacks (a local SAE for the pisces methods); the others are absent."""
    from workbench.methods.erase import METHODS

    needs_sae = [name for name, m in METHODS.items() if m.needs_sae]
    missing = pisces_ready(saes_dir, model_id, n_layers) if needs_sae else None
    return {name: missing for name in needs_sae} if missing else {}


def compare_defaults(available: list[str]) -> list[str]:
    """The methods 'Compare methods' starts with: the default method and COMPARE_BASELINES, those
    of them that can run here, in the registry's order."""
    from workbench.methods.erase import DEFAULT_METHOD

    return [m for m in available if m == DEFAULT_METHOD or m in COMPARE_BASELINES]


def tier_style(tier: str) -> str:
    """CSS for a tier's table cell (benchmark/goals.py TIERS, or compare.NOT_SCORED): green our
    goal, blue PISCES acceptance, orange held but not erased, red broke."""
    from workbench.benchmark.goals import TIER_BROKE, TIER_GOAL, TIER_HELD, TIER_PISCES

    colour = {TIER_GOAL: "#1a7f37", TIER_PISCES: "#1f6feb", TIER_HELD: "#b35900", TIER_BROKE: "#cf222e"}.get(tier)
    return f"color: {colour}; font-weight: 600" if colour else ""


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
