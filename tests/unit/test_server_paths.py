"""What a browser may reach on the server (workbench/server_paths.py): SAE folders only under the
admin's roots (no `..` or symlink escape), one sentence that names no file, models likewise,
and the hub only when the admin allows it (the local HF cache always)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from workbench.config import Settings
from workbench.sae.sources import (
    HUB_OFF,
    NOT_AN_SAE_FOLDER,
    SAELoadError,
    check_sae_folder,
    load_pretrained_sae,
    local_hf_cache_only,
)
from workbench.sae.tiny import write_gemma_scope_2
from workbench.server_paths import (
    HUB_REFUSAL,
    MODEL_REFUSAL,
    SAE_REFUSAL,
    NotAllowed,
    browser_model_source,
    browser_sae_folder,
    describe_reach,
    resolve_under,
)


def write_sae_folder(folder: Path) -> Path:
    """The smallest folder check_sae_folder accepts: cfg.json and safetensors W_enc/W_dec/b_dec."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"d_in": 4, "d_sae": 8, "architecture": "standard"}))
    save_file({"W_enc": torch.zeros(4, 8), "W_dec": torch.zeros(8, 4), "b_dec": torch.zeros(4)},
              str(folder / "sae_weights.safetensors"))
    return folder


@pytest.fixture
def server(tmp_path: Path) -> Settings:
    cache = tmp_path / "cache"
    (cache / "saes").mkdir(parents=True)
    (cache / "models").mkdir()
    return Settings(cache_dir=cache)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A valid SAE folder outside every root, beside files whose names must never be shown."""
    folder = write_sae_folder(tmp_path / "private" / "their-sae")
    (folder / "secret_weights.pt").write_bytes(b"pickle")
    (tmp_path / "private" / "notes.txt").write_text("x")
    return folder


def assert_refused_quietly(settings: Settings, typed: str, names: list[str]) -> None:
    with pytest.raises(NotAllowed) as err:
        browser_sae_folder(settings, typed)
    message = str(err.value)
    assert message == SAE_REFUSAL
    assert not any(name in message for name in names), message


def test_a_folder_outside_the_roots_is_refused_in_one_sentence_naming_no_file(server: Settings, outside: Path) -> None:
    names = ["their-sae", "secret_weights.pt", "notes.txt", "private", "cfg.json"]
    assert_refused_quietly(server, str(outside), names)
    assert_refused_quietly(server, str(outside.parent / "no-such-folder"), names)  # missing: the same sentence
    assert_refused_quietly(server, "/etc", names)


def test_a_dotdot_escape_is_refused(server: Settings, outside: Path) -> None:
    escape = server.saes_dir / ".." / ".." / "private" / "their-sae"
    assert escape.resolve() == outside.resolve()
    assert_refused_quietly(server, str(escape), ["their-sae", "secret_weights.pt"])
    assert_refused_quietly(server, "../../private/their-sae", ["their-sae", "secret_weights.pt"])  # relative to the root


def test_a_symlink_escape_is_refused(server: Settings, outside: Path) -> None:
    link = server.saes_dir / "looks-local"
    link.symlink_to(outside, target_is_directory=True)
    assert_refused_quietly(server, str(link), ["their-sae", "secret_weights.pt"])
    assert_refused_quietly(server, "looks-local", ["their-sae", "secret_weights.pt"])


def test_a_folder_under_a_root_is_allowed_by_path_or_by_name(server: Settings) -> None:
    folder = write_sae_folder(server.saes_dir / "mine")
    assert browser_sae_folder(server, str(folder)) == folder.resolve()
    assert browser_sae_folder(server, "mine") == folder.resolve()  # a name: under the cache's SAE dir


def test_extra_roots_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outside: Path) -> None:
    other = tmp_path / "shared-saes"
    other.mkdir()
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORKBENCH_SAE_ROOTS", os.pathsep.join([str(outside.parent), str(other)]))
    monkeypatch.delenv("WORKBENCH_ALLOW_HUB", raising=False)
    monkeypatch.delenv("WORKBENCH_USER_MODELS", raising=False)
    settings = Settings.from_env()
    assert settings.sae_folders == (settings.saes_dir, outside.parent.resolve(), other.resolve())
    assert browser_sae_folder(settings, str(outside)) == outside.resolve()
    assert not settings.allow_hub
    assert describe_reach(settings) == ("SAE folders: cache/saes (+2 more) · hub downloads: off "
                                        "(the server's local HF cache only) · users' own models and placements: "
                                        "off (the server's model only)")
    monkeypatch.setenv("WORKBENCH_ALLOW_HUB", "1")
    monkeypatch.setenv("WORKBENCH_USER_MODELS", "yes")
    reach = describe_reach(Settings.from_env())
    assert Settings.from_env().allow_hub and "hub downloads: on ·" in reach
    assert Settings.from_env().user_models and reach.endswith("users' own models and placements: on")


def test_an_allowed_folder_with_pickles_gets_a_sentence_without_its_file_names(server: Settings) -> None:
    folder = server.saes_dir / "pickled"
    folder.mkdir()
    (folder / "secret_weights.pt").write_bytes(b"pickle")
    with pytest.raises(NotAllowed) as err:
        browser_sae_folder(server, str(folder))
    assert str(err.value) == NOT_AN_SAE_FOLDER and "secret_weights" not in str(err.value)
    with pytest.raises(SAELoadError, match="secret_weights.pt"):  # the CLI keeps the detail
        check_sae_folder(folder)


def test_resolve_under_needs_a_root_and_a_path() -> None:
    assert resolve_under("", [Path("/tmp")]) is None
    assert resolve_under("/tmp/x", []) is None
    assert resolve_under("/tmp/x\x00", [Path("/tmp")]) is None


def test_models_named_in_the_browser(server: Settings, tmp_path: Path) -> None:
    assert browser_model_source(server, "tiny").kind == "tiny"
    assert browser_model_source(server, "embedded").kind == "embedded"
    folder = server.models_dir / "my-model"
    folder.mkdir()
    assert browser_model_source(server, str(folder)).location == str(folder.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for typed in (str(elsewhere), str(server.models_dir / ".." / ".." / "elsewhere"), "/etc/passwd", "x.gguf"):
        with pytest.raises(NotAllowed) as err:
            browser_model_source(server, typed)
        assert str(err.value) in (MODEL_REFUSAL, "There is no model file or folder by that name in the server's "
                                  "model folders."), typed
    link = server.models_dir / "link"
    link.symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(NotAllowed, match="not in the server's model folders"):
        browser_model_source(server, str(link))
    own = Settings(cache_dir=server.cache_dir, model_source=str(elsewhere))  # the admin's WORKBENCH_MODEL
    assert browser_model_source(own, str(elsewhere)).location == str(elsewhere.resolve())
    for typed in ("hub:google/gemma-3-270m", "google/gemma-3-270m"):
        with pytest.raises(NotAllowed, match="WORKBENCH_ALLOW_HUB=1") as err:
            browser_model_source(server, typed)
        assert str(err.value) == HUB_REFUSAL
    hub_on = Settings(cache_dir=server.cache_dir, allow_hub=True)
    assert browser_model_source(hub_on, "hub:google/gemma-3-270m").kind == "hub"


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hf-hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    write_gemma_scope_2(cache, "mlp_out_all/layer_2_width_16k_l0_small", 64, 32)
    return cache


def test_hub_off_loads_from_the_local_cache_and_refuses_the_rest(hf_cache: Path) -> None:
    sae, sae_id, _ = load_pretrained_sae("gemma-scope-2-270m-pt-mlp-all", "layer_2_width_16k_l0_small", hub=False)
    assert sae_id.endswith("layer_2_width_16k_l0_small") and sae.W_dec.shape == (32, 64)
    with pytest.raises(SAELoadError) as err:
        load_pretrained_sae("gemma-scope-2-270m-pt-mlp-all", "layer_3_width_16k_l0_small", hub=False)
    assert str(err.value) == HUB_OFF and "WORKBENCH_ALLOW_HUB=1" in str(err.value)


def test_hub_off_never_opens_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as on a server with the network
    with local_hf_cache_only():
        assert constants.is_offline_mode()
        with local_hf_cache_only():  # nested (two jobs at once): still off until the last leaves
            pass
        assert constants.is_offline_mode()
    assert not constants.is_offline_mode()


def test_a_spec_names_its_sae_by_id_never_by_path(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from workbench.sae.sources import spec_sae_id, spec_sae_loader

    assert spec_sae_id("tiny-gemma3.l1.mlp_raw") == "tiny-gemma3.l1.mlp_raw"
    assert spec_sae_id("gemma-scope-2-270m-pt-mlp-all/layer_2_width_16k_l0_small").startswith("gemma-scope")
    load = spec_sae_loader(tmp_path / "saes")
    for ref in (str(tmp_path), "~/sae", "../outside", "a/../../b"):
        with pytest.raises(SAELoadError, match="not by a path"):
            load(SimpleNamespace(id=ref), 0)
