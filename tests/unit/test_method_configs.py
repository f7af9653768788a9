"""One config per idea (issue 30): every config dataclass of workbench/methods declares each of its
settings once. The retain text and the made-up/neighbour-name settings are `RetainConfig` and
`FramesConfig`, composed into the methods' configs as fields; a field name that two configs both
declare must be a genuinely per-method setting, listed here with the reason."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import itertools
import pkgutil

import pytest

import workbench.methods
from workbench.methods.frames import FramesConfig
from workbench.methods.retain import RetainConfig

# name -> why each config that declares it means its own method's setting, not a shared one
PER_METHOD = {
    "target": "what the method's own objective is (each method has its own choices)",
    "layers": "the layers the method edits, each method with its own defaults (models/depth.py)",
    "layer": "one layer of the method's own: the projected direction's (project), the SAE's (pisces)",
    "repr_layers": "the residual-target layer of each method's own edit; rewrite-optimise runs both with "
                   "different ones, and the rewrite moves its own past its last rewritten MLP",
    "steps": "the method's own optimisation steps (the value vectors vs the desired outputs)",
    "frame_batch": "frames per step of the method's own optimisation (8 vs 24)",
    "seed": "the method's own random stream (its batches); the retain sample has RetainConfig.sample_seed",
    "n_rows": "the rows the method edits: trained (optimise) or zeroed (ablate)",
    "min_target_prob": "the fact-target threshold of the method's own loss or search (optimise's unlikelihood, "
                       "PISCES's concept-token probability); each method sets its own",
    "lr": "the Adam step of the method's own optimisation, each relative to its own scale (the rewrite's "
          "desired outputs, RMU's dense and ELM's low-rank W_out deltas)",
    "batch_size": "texts per step of the method's own training (RMU's forget/retain batches, ELM's per loss), "
                  "as the papers name it",
}
SHARED = (RetainConfig, FramesConfig)


def _configs() -> list[type]:
    """Every dataclass named *Config or *Options defined in a module of workbench.methods."""
    found: dict[str, type] = {}
    for info in pkgutil.iter_modules(workbench.methods.__path__):
        module = importlib.import_module(f"workbench.methods.{info.name}")
        for name, obj in vars(module).items():
            if (inspect.isclass(obj) and dataclasses.is_dataclass(obj) and obj.__module__ == module.__name__
                    and name.endswith(("Config", "Options"))):
                found[f"{obj.__module__}.{name}"] = obj
    return list(found.values())


def _own_fields(cls: type) -> set[str]:
    """Field names a config declares itself: a composed shared config (a field whose default is
    a RetainConfig or FramesConfig) is the one declaration of its settings, not a second one."""
    out = set()
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if not isinstance(default, SHARED):
            out.add(f.name)
    return out


def test_the_walk_finds_every_method_config() -> None:
    names = {c.__name__ for c in _configs()}
    assert {"OptimiseConfig", "RewriteConfig", "AblateConfig", "ProjectConfig", "PiscesConfig", "EraseOptions",
            "RetainConfig", "FramesConfig"} <= names


@pytest.mark.parametrize("pair", list(itertools.combinations(_configs(), 2)), ids=lambda p: f"{p[0].__name__}-{p[1].__name__}")
def test_no_setting_is_declared_twice(pair: tuple[type, type]) -> None:
    a, b = pair
    twice = (_own_fields(a) & _own_fields(b)) - set(PER_METHOD)
    assert not twice, f"{a.__name__} and {b.__name__} both declare {sorted(twice)}: compose a shared config"


def test_optimise_and_rewrite_share_only_per_method_names() -> None:
    from workbench.methods.key_rewrite import RewriteConfig
    from workbench.methods.optimise import OptimiseConfig

    shared = {f.name for f in dataclasses.fields(OptimiseConfig)} & {f.name for f in dataclasses.fields(RewriteConfig)}
    assert shared == {"target", "layers", "repr_layers", "steps", "frame_batch", "seed", "retain", "frames"}
    for cls in (OptimiseConfig, RewriteConfig):
        assert isinstance(cls().retain, RetainConfig) and isinstance(cls().frames, FramesConfig)


def test_method_configs_are_frozen() -> None:
    for cls in _configs():
        assert cls.__dataclass_params__.frozen, cls.__name__  # type: ignore[attr-defined]


def test_the_shared_defaults_are_the_old_ones() -> None:
    """Same numbers as before the split: the retain sizes, text length and neutral sample of the
    old OptimiseConfig / RewriteConfig fields, and their counterfactual settings."""
    assert RetainConfig() == RetainConfig(n_neighbours=40, n_neutral=60, n_collisions=40, max_len=64, sample_seed=1)
    assert FramesConfig() == FramesConfig(cf_nonces=4, cf_topk=64, cf_batch=6, n_neighbour_names=6)


def test_params_of_a_composed_config_are_flat_and_dotted() -> None:
    from workbench.methods.optimise import OptimiseConfig, config_params

    params = config_params(OptimiseConfig(layers=(1, 2)))
    assert params["layers"] == "(1, 2)" and params["repr_layers"] == "None" and params["steps"] == 40
    assert params["retain.n_neutral"] == 60 and params["frames.cf_topk"] == 64
    assert all(isinstance(v, int | float | str | bool) for v in params.values())


def test_names_that_moved_out_of_optimise_still_import_from_it() -> None:
    """Every name imported from workbench.methods.optimise before the split still is."""
    import workbench.methods.optimise as optimise

    before = ["OptimiseConfig", "DEFAULT_LAYERS", "contrast_rows", "mlp_hidden_means", "optimise_value_vectors",
              "retain_documents", "retain_split", "to_operation", "selected_logits", "FRAMES", "CounterfactualBatch",
              "DownProjEdit", "FrameBatch", "OptimiseResult", "build_counterfactual", "build_frames",
              "counterfactual_cross_entropy", "counterfactual_loss", "counterfactual_texts", "down_proj_edits",
              "last_name_position", "name_frames", "residuals_after", "bake", "delta_hooks", "top_rows",
              "collision_mask", "Target"]
    assert not [name for name in before if not hasattr(optimise, name)]
    assert set(before) <= set(optimise.__all__)
