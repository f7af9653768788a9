"""The research API (issue 30): `with model.edited(edit):` around any forward pass, HF or
TransformerLens; `wb.capture` at hook names; short reprs; the settings a model was loaded with.
The README's own-loop block runs as a script from a folder outside the repository in
tests/workflows/test_readme_blocks.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import workbench as wb
from workbench.config import Settings
from workbench.models import hooks

TEXT = "The river flows past the old mill"
LAYER = 1  # the tiny model has 4 layers: hooks of layer 0 and layer 1's MLP input run before the edit


@pytest.fixture(scope="module")
def edit(tiny_bundle: Any) -> wb.Edit:
    """Ablate half of layer 1's value vectors: a large, certain change from layer 1's MLP out on."""
    return wb.edit(tiny_bundle, [wb.AblateValueVectors(layer=LAYER, neurons=list(range(0, tiny_bundle.d_mlp, 2)))],
                   name="half of layer 1")


def ids_of(model: Any, text: str = TEXT) -> torch.Tensor:
    return model.tokenizer(text, return_tensors="pt").input_ids.to(model.device)


# ------------------------------------------------------------------ model.edited(...)

def test_edited_changes_hf_and_bridge_logits_only_inside_the_block(tiny_bundle: Any, edit: wb.Edit) -> None:
    model, ids = tiny_bundle, ids_of(tiny_bundle)
    with torch.no_grad():
        base_hf, base_tl = model.hf_model(input_ids=ids).logits, model.bridge(ids)
        with model.edited(edit):
            edited_hf, edited_tl = model.hf_model(input_ids=ids).logits, model.bridge(ids)
        after_hf, after_tl = model.hf_model(input_ids=ids).logits, model.bridge(ids)
    assert not hooks.has_taps()  # the block leaves nothing behind in this thread
    assert (edited_hf - base_hf).abs().max() > 1e-3 and (edited_tl - base_tl).abs().max() > 1e-3
    torch.testing.assert_close(edited_tl, edited_hf)  # the bridge runs the same edited modules
    assert torch.equal(after_hf, base_hf) and torch.equal(after_tl, base_tl)  # the base, bit for bit


def test_edited_takes_an_edit_a_spec_with_payload_or_an_adapter(tiny_bundle: Any, edit: wb.Edit) -> None:
    model, ids = tiny_bundle, ids_of(tiny_bundle)
    got = []
    with torch.no_grad():
        for what in (edit, edit.adapter, edit.spec):
            with model.edited(what, payload=edit.payload):
                got.append(model.hf_model(input_ids=ids).logits)
        with model.edited(None):
            base = model.hf_model(input_ids=ids).logits
    assert torch.equal(got[0], got[1]) and torch.equal(got[0], got[2])
    assert torch.equal(base, model.hf_model(input_ids=ids).logits)
    with pytest.raises(TypeError, match="wb.Edit, an EditSpec or an Adapter"):
        model.edited("half of layer 1")


def test_run_with_cache_inside_edited_sees_the_edit_after_its_layer_only(tiny_bundle: Any, edit: wb.Edit) -> None:
    model, ids = tiny_bundle, ids_of(tiny_bundle)
    before = ["blocks.0.hook_resid_post", f"blocks.{LAYER}.hook_resid_pre", f"blocks.{LAYER}.mlp.hook_post"]
    after = [f"blocks.{LAYER}.hook_mlp_out", f"blocks.{LAYER + 1}.hook_resid_pre", "ln_final.hook_normalized"]
    with torch.no_grad():
        _, base = model.bridge.run_with_cache(ids)
        with model.edited(edit):
            _, edited = model.bridge.run_with_cache(ids)
    for name in before:
        assert torch.equal(edited[name], base[name]), name
    for name in after:
        assert (edited[name] - base[name]).abs().max() > 1e-3, name


# ------------------------------------------------------------------ wb.capture

def test_capture_with_edit_equals_run_with_cache_inside_edited(tiny_bundle: Any, edit: wb.Edit) -> None:
    model, ids = tiny_bundle, ids_of(tiny_bundle)
    names = [f"blocks.{LAYER}.mlp.hook_post", f"blocks.{LAYER}.hook_mlp_out", "blocks.3.hook_resid_post"]
    with torch.no_grad():
        _, base = model.bridge.run_with_cache(ids)
        with model.edited(edit):
            _, edited = model.bridge.run_with_cache(ids)
    got_base = wb.capture(model, [TEXT], names)
    got_edited = wb.capture(model, TEXT, names, edit=edit)  # one text, one hook: a str works as well as a list
    for name in names:
        torch.testing.assert_close(got_edited[name], edited[name].float())
        torch.testing.assert_close(got_base[name], base[name].float())
    assert (got_edited[names[1]] - got_base[names[1]]).abs().max() > 1e-3
    torch.testing.assert_close(wb.capture(model, TEXT, names[1], edit=edit.spec)[names[1]], got_edited[names[1]])


def test_capture_right_pads_and_includes_the_padded_positions(tiny_bundle: Any) -> None:
    model, hook = tiny_bundle, "blocks.2.hook_resid_post"
    short, long = "A mill", TEXT + " and into the sea"
    n_short, n_long = (len(model.tokenizer(t).input_ids) for t in (short, long))
    assert n_short < n_long
    acts = wb.capture(model, [short, long], [hook])[hook]
    assert acts.shape == (2, n_long, model.d_model) and acts.dtype == torch.float32
    alone = wb.capture(model, [short], [hook])[hook]
    assert alone.shape == (1, n_short, model.d_model)
    # right padding never changes a real position; the padded ones are there, computed on pad tokens
    torch.testing.assert_close(acts[0, :n_short], alone[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(acts[1], wb.capture(model, [long], [hook])[hook][0], rtol=1e-4, atol=1e-5)
    with pytest.raises(KeyError, match="no hook"):
        wb.capture(model, [short], ["blocks.2.hook_nothing"])


# ------------------------------------------------------------------ reprs, settings, exports

def test_reprs_are_short_and_never_show_tensors(tiny_bundle: Any, edit: wb.Edit) -> None:
    model = tiny_bundle
    text = repr(model)
    assert len(text) < 200 and text.startswith("ModelBundle('tiny-gemma3'")
    assert f"layers={model.n_layers}" in text and f"d_model={model.d_model}" in text and "float32" in text
    assert "cpu" in text or "cuda" in text
    text = repr(edit)
    assert text == "Edit('half of layer 1', ops=[ablate_value_vectors], layers=[1])"
    everything = wb.edit(model, [wb.PruneNeurons(layer=layer, neurons=list(range(model.d_mlp)))
                                 for layer in range(model.n_layers)], name="x" * 200)  # the longest name a spec takes
    text = repr(everything)
    assert len(text) < 200 and "prune_neurons x4" in text and "layers=[0-3]" in text
    assert "tensor" not in text and "ModelBundle" not in text


def test_an_edit_reads_saes_from_the_cache_the_model_was_loaded_with(
        tiny_bundle: Any, session_settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert tiny_bundle.settings == session_settings  # load_bundle keeps them on the bundle
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "elsewhere"))  # what the environment says later
    seen: list[Path] = []
    import workbench.notebook as notebook

    real = notebook.spec_sae_loader
    monkeypatch.setattr(notebook, "spec_sae_loader", lambda saes_dir: seen.append(saes_dir) or real(saes_dir))
    wb.edit(tiny_bundle, [wb.AblateValueVectors(layer=0, neurons=[1])])
    assert seen == [session_settings.saes_dir]


def test_load_defaults_to_the_configured_model_and_keeps_its_settings(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import workbench.notebook as notebook

    calls: list[tuple[Any, Settings, bool]] = []
    monkeypatch.setattr(notebook, "load_bundle",
                        lambda source, settings, *, tune_process: calls.append((source, settings, tune_process)))
    monkeypatch.setenv("WORKBENCH_MODEL", "tiny")
    wb.load(cache_dir=tmp_path)
    wb.load("embedded", tune_process=True)
    monkeypatch.delenv("WORKBENCH_MODEL")
    wb.load()
    (tiny, settings, tuned), (named, _, named_tuned), (default, _, _) = calls
    assert tiny.kind == "tiny" and settings.cache_dir == tmp_path.resolve()
    assert named.kind == "embedded" and default.kind == "embedded"
    assert (tuned, named_tuned) == (False, True)  # the process-wide settings only when asked (models/process.py)


def test_top_level_exports_and_subpackages() -> None:
    import workbench.adapters
    import workbench.notebook

    assert wb.capture is workbench.notebook.capture
    assert wb.use is workbench.adapters.use and wb.route is workbench.adapters.route
    assert callable(wb.exports.intervene)  # the docstring example in workbench/exports/trace.py
    assert {"capture", "use", "route"} <= set(wb.__all__)
    with pytest.raises(AttributeError):
        _ = wb.no_such_thing


def test_edited_without_with_is_a_handle_over_the_untouched_base(tiny_bundle: Any, edit: wb.Edit) -> None:
    """nnsight's model.edit() shape: the handle's calls are edited, the model stays the base."""
    model = tiny_bundle
    ids = model.tokenizer("Paris is the capital of", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        base = model.hf(input_ids=ids).logits
        handle = model.edited(edit)
        assert isinstance(handle, wb.EditedModel) and isinstance(model, wb.Model)
        edited = handle(input_ids=ids).logits
        with model.edited(edit):
            in_block = model.hf_model(input_ids=ids).logits
        after = model.hf(input_ids=ids).logits
        _, cache = handle.run_with_cache(ids)
    assert (edited - base).abs().max() > 1e-3
    torch.testing.assert_close(edited, in_block)
    torch.testing.assert_close(after, base)  # the handle never changed the model
    assert model.layout is model.architecture and "edited layer" in repr(handle)
    assert cache["blocks.0.hook_resid_post"].shape[1] == ids.shape[1]
