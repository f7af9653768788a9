"""Where SAEs come from: a local folder in SAELens format, or a pretrained SAELens release
(from the files already in the local HF cache, or from the hub when it is reachable and the
caller allows it: the app only with WORKBENCH_ALLOW_HUB=1).

Every loader returns (SAE, sae_id, `sae_sha256`: the one SAE hash, on its tensors) so an EditSpec can bind an SAE
by content. Weights are read from safetensors only; a folder holding pickles is refused.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from workbench.atomic import is_leftover, recover_children
from workbench.models.hashing import sae_sha256

WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")


class SAELoadError(RuntimeError):
    """An SAE could not be loaded; the message says what to do."""


NOT_AN_SAE_FOLDER = ("That folder is not an SAE folder the workbench can load: it needs cfg.json and "
                     f"{WEIGHTS_FILE} (SAELens format; pickled weights are never loaded).")


def check_sae_folder(path: Path, detail: bool = True) -> None:
    """Raise SAELoadError unless `path` is an SAELens folder with safetensors weights and a
    readable cfg.json. `detail=False` (a folder named in the browser) says so in one sentence
    that names no file found there; the CLI keeps the detail."""
    path = Path(path)
    if not detail:
        try:
            check_sae_folder(path)
        except SAELoadError as err:
            raise SAELoadError(NOT_AN_SAE_FOLDER) from err
        return
    if not path.is_dir():
        raise SAELoadError(f"SAE folder {path} does not exist. Train one with "
                           "`python -m workbench sae train` or give an SAELens folder.")
    weights = path / WEIGHTS_FILE
    pickles = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if not weights.exists():
        if pickles:
            raise SAELoadError(f"SAE folder {path} holds pickled weights ({', '.join(pickles)}), "
                               "which the workbench never loads; convert them to "
                               f"{WEIGHTS_FILE} (safetensors).")
        raise SAELoadError(f"SAE folder {path} has no {WEIGHTS_FILE}: it is not an SAELens SAE folder.")
    cfg = path / CONFIG_FILE
    if not cfg.exists():
        raise SAELoadError(f"SAE folder {path} has no {CONFIG_FILE}.")
    try:
        data = json.loads(cfg.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SAELoadError(f"{cfg} is not valid JSON ({err}); the SAE folder is corrupt.") from err
    for key in ("d_in", "d_sae", "architecture"):
        if key not in data:
            raise SAELoadError(f"{cfg} lacks {key!r}; the SAE folder is corrupt or not SAELens format.")
    keys = safetensors_keys(weights, "; the SAE folder is corrupt: delete it and train again")
    missing = {"W_enc", "W_dec", "b_dec"} - keys
    if missing:
        raise SAELoadError(f"{weights} lacks tensors {sorted(missing)}; the SAE folder is corrupt.")


def load_local_sae(path: Path, device: str = "cpu") -> tuple[Any, str, str]:
    """Load an SAELens folder -> (SAE, sae_id = folder name, sae_sha256)."""
    from sae_lens import SAE

    path = Path(path)
    check_sae_folder(path)
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except Exception as err:  # shape mismatches, unknown architectures ...
        raise SAELoadError(f"SAELens could not load {path}: {err}") from err
    sae.eval()
    return sae, path.name, sae_sha256(sae)


def list_local_saes(saes_dir: Path) -> list[dict[str, Any]]:
    """Trained/imported SAE folders under `saes_dir` with their training config and metrics."""
    out: list[dict[str, Any]] = []
    if not Path(saes_dir).is_dir():
        return out
    recover_children(Path(saes_dir))  # a killed publish's leftovers (workbench/atomic.py)
    for folder in sorted(Path(saes_dir).iterdir()):
        if not folder.is_dir() or folder.name.endswith(".partial") or is_leftover(folder):
            continue
        entry: dict[str, Any] = {"sae_id": folder.name, "path": str(folder)}
        for name in ("workbench_train_config.json", "workbench_metrics.json", CONFIG_FILE):
            f = folder / name
            if f.exists():
                try:
                    entry[name.removesuffix(".json")] = json.loads(f.read_text())
                except json.JSONDecodeError:
                    entry["error"] = f"{name} is not valid JSON"
        if not (folder / WEIGHTS_FILE).exists():
            entry["error"] = f"no {WEIGHTS_FILE}"
        out.append(entry)
    return out


PRETRAINED_PREFIX = "pretrained:"


def parse_pretrained(ref: str) -> tuple[str, str] | None:
    """'pretrained:RELEASE/SAE_ID' -> (release, sae_id); None for anything else (a folder).
    The release is the part before the first '/' (registry release names have none); the rest,
    slashes included, is the SAE id."""
    if not ref.startswith(PRETRAINED_PREFIX):
        return None
    body = ref.removeprefix(PRETRAINED_PREFIX).strip("/")
    release, _, sae_id = body.partition("/")
    if not release or not sae_id:
        raise SAELoadError(f"{ref!r} is not like 'pretrained:RELEASE/SAE_ID' "
                           "(e.g. pretrained:gemma-scope-2-270m-pt-mlp-all/layer_6_width_16k_l0_small).")
    return release, sae_id


def load_sae(ref: str, saes_dir: Path, device: str = "cpu", hub: bool = True) -> tuple[Any, str, str]:
    """The one entry point for every SAE reference -> (SAE, sae_id, sae_sha256):
    'pretrained:RELEASE/SAE_ID', a folder path, a folder name under `saes_dir`, or a
    catalogued pretrained id 'RELEASE/SAE_ID' (what specs and the store name them by).
    `hub=False`: a pretrained SAE loads from the local HF cache only (`load_pretrained_sae`)."""
    pre = parse_pretrained(ref)
    if pre is not None:
        return load_pretrained_sae(*pre, device=device, hub=hub)
    path = Path(ref)
    if path.is_dir():
        return load_local_sae(path, device)
    if (Path(saes_dir) / ref).is_dir():
        return load_local_sae(Path(saes_dir) / ref, device)
    release, _, sae_id = ref.partition("/")
    if sae_id and _registry_has(release):
        return load_pretrained_sae(release, sae_id, device=device, hub=hub)
    return load_local_sae(Path(saes_dir) / ref, device)  # says the folder does not exist


def spec_sae_id(ref_id: str) -> str:
    """A spec's SAE id as given, after refusing one that is a path (absolute, `~` or with `..`):
    specs name SAEs by folder name under the SAE dir or 'RELEASE/SAE_ID', so an uploaded spec
    never makes the server open a folder of its choosing."""
    parts = Path(ref_id).parts
    if not ref_id or Path(ref_id).is_absolute() or ref_id.startswith("~") or ".." in parts or "\x00" in ref_id:
        raise SAELoadError("A spec names its SAE by a folder name under the SAE folder or a pretrained "
                           "'RELEASE/SAE_ID', not by a path.")
    return ref_id


def spec_sae_loader(saes_dir: Path, hub: bool = True) -> Any:
    """The `sae_loader` compile_spec takes: a spec's SAE by its id (a folder name under
    `saes_dir`, or a pretrained 'RELEASE/SAE_ID'), loaded once per loader. The CLI, the
    notebook API and the methods use it; the app wraps `load_sae` in its per-server cache."""
    cache: dict[str, Any] = {}

    def load(ref: Any, _layer: int) -> Any:
        if ref.id not in cache:
            cache[ref.id] = load_sae(spec_sae_id(ref.id), saes_dir, hub=hub)[0]
        return cache[ref.id]

    return load


def _registry_has(release: str) -> bool:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return release in get_pretrained_saes_directory()


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read at call time ($HF_HUB_CACHE, else $HF_HOME/hub)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(repo_id: str, filename: str) -> Path | None:
    """A repo file's path in the local HF cache (models--org--name/snapshots/<refs/main>/...), or
    None when it is not there. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    got = try_to_load_from_cache(repo_id, filename, cache_dir=str(hf_cache_dir()))
    return Path(got) if isinstance(got, str) else None


HUB_OFF = ("Downloads from the Hugging Face hub are off on this server and this SAE is not in its local HF "
           "cache; ask the admin to start the server with WORKBENCH_ALLOW_HUB=1 or to put the SAE in the "
           "HF cache.")
_offline_lock = threading.Lock()
_offline_users = 0  # callers inside local_hf_cache_only
_offline_before = False  # huggingface_hub's flag before the first of them entered


@contextmanager
def local_hf_cache_only() -> Iterator[None]:
    """Within the block, huggingface_hub serves files from the local cache and never opens a
    connection (what HF_HUB_OFFLINE=1 does, switched on for this process while any caller is
    inside; the flag is read at each request)."""
    global _offline_users, _offline_before
    from huggingface_hub import constants

    with _offline_lock:
        if _offline_users == 0:
            _offline_before = constants.HF_HUB_OFFLINE
        _offline_users += 1
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        with _offline_lock:
            _offline_users -= 1
            if _offline_users == 0:
                constants.HF_HUB_OFFLINE = _offline_before


def load_pretrained_sae(release: str, sae_id: str, device: str = "cpu", hub: bool = True) -> tuple[Any, str, str]:
    """A release from SAELens's registry (e.g. Gemma Scope 2). Loads from the local HF cache
    (offline too) or, with `hub=True`, the hub; otherwise raises SAELoadError saying what is
    missing. The app passes `hub=Settings.allow_hub` (off by default: the local cache only,
    never the network); the CLI and the notebook API pass nothing (the hub when reachable).

    SAELens's Gemma 3 loader asks the hub's HTTP API for the tensor shapes, which fails offline
    even when the files are cached; for those releases `gemma_scope_2_loader` reads the shapes
    from the cached file instead."""
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    if release not in directory:
        close = [r for r in directory if release.lower() in r.lower()][:8]
        hint = f" Releases like it: {', '.join(close)}." if close else ""
        raise SAELoadError(f"SAELens has no release {release!r}.{hint}")
    entry = directory[release]
    known = entry.saes_map
    if sae_id not in known:
        raise SAELoadError(f"Release {release!r} has no SAE {sae_id!r}; it has e.g. {list(known)[:5]}.")
    converter = None
    if entry.conversion_func == "gemma_3" and cached_file(entry.repo_id, f"{known[sae_id]}/params.safetensors"):
        converter = gemma_scope_2_loader
    try:
        with local_hf_cache_only() if not hub else nullcontext():
            sae = SAE.from_pretrained(release, sae_id, device=device, converter=converter)
    except Exception as err:  # offline hub, missing cache, HTTP errors ...
        if not hub:
            raise SAELoadError(HUB_OFF) from err
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        why = "the hub is switched off (HF_HUB_OFFLINE=1) and the files are not in the local HF cache" \
            if offline else "the hub is unreachable and the files are not in the local HF cache"
        raise SAELoadError(f"Cannot load {release}/{sae_id}: {why} ({type(err).__name__}: {err}); looked in "
                           f"{hf_cache_dir()}/models--{entry.repo_id.replace('/', '--')}. Train a local SAE "
                           "instead (`python -m workbench sae train`).") from err
    sae.eval()
    return sae, f"{release}/{sae_id}", sae_sha256(sae)


def gemma_scope_2_loader(
    repo_id: str,
    folder_name: str,
    device: str = "cpu",
    force_download: bool = False,  # noqa: ARG001  (SAELens's converter signature; cached files only)
    cfg_overrides: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any], None]:
    """A SAELens converter for Gemma Scope 2 folders in the local HF cache: (cfg, state dict, None).

    The facts it relies on (SAELens's gemma_3 conversion): `params.safetensors` holds w_enc
    [d_in, d_sae], w_dec [d_sae, d_out], b_enc, b_dec and threshold (a JumpReLU), plus
    affine_skip_connection [d_in, d_out] for affine transcoders; `config.json` (optional) names
    the architecture and hooks. SAEs on `mlp_out` read `blocks.L.hook_mlp_out` (after the post-FFN
    norm); transcoders read `blocks.L.hook_mlp_in` and write `blocks.L.hook_mlp_out`."""
    import re

    from safetensors.torch import load_file

    params = cached_file(repo_id, f"{folder_name}/params.safetensors")
    if params is None:
        raise SAELoadError(f"{repo_id}/{folder_name}/params.safetensors is not in the local HF cache.")
    safetensors_keys(params)
    raw = load_file(str(params), device=device)
    raw_cfg: dict[str, Any] = {}
    cfg_file = cached_file(repo_id, f"{folder_name}/config.json")
    if cfg_file is not None:
        raw_cfg = json.loads(cfg_file.read_text())
    if raw_cfg.get("architecture", "jump_relu") != "jump_relu":
        raise SAELoadError(f"{repo_id}/{folder_name} is a {raw_cfg['architecture']!r} SAE; Gemma Scope 2 "
                           "folders are JumpReLU.")
    layer_match = re.search(r"layer_(\d+)", folder_name)
    if layer_match is None:
        raise SAELoadError(f"No layer number in {folder_name!r}.")
    layer = int(layer_match.group(1))
    missing = {"w_enc", "w_dec", "b_enc", "b_dec", "threshold"} - set(raw)
    if missing:
        raise SAELoadError(f"{params} lacks tensors {sorted(missing)}.")
    d_in, d_sae = raw["w_enc"].shape
    transcoder = "transcoder" in folder_name
    if "mlp_out" in folder_name:
        hook = f"blocks.{layer}.hook_mlp_out"
    elif transcoder:
        hook = f"blocks.{layer}.hook_mlp_in"
    else:
        raise SAELoadError(f"{folder_name!r} is neither an mlp_out SAE nor a transcoder; the workbench "
                           "catalogues MLP features only.")
    model_name = repo_id.replace("gemma-scope-2", "gemma-3").replace("-270m-pt", "-270m")
    cfg: dict[str, Any] = {
        "architecture": "jumprelu", "d_in": int(d_in), "d_sae": int(d_sae), "dtype": "float32",
        "model_name": model_name, "hook_name": hook, "hook_head_index": None, "prepend_bos": True,
        "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
        "context_size": 1024, "dataset_path": "monology/pile-uncopyrighted", "device": device,
    }
    state = {"W_enc": raw["w_enc"], "W_dec": raw["w_dec"], "b_enc": raw["b_enc"], "b_dec": raw["b_dec"],
             "threshold": raw["threshold"]}
    if transcoder:
        affine = "affine_skip_connection" in raw
        cfg.update(architecture="jumprelu_skip_transcoder" if affine else "jumprelu_transcoder",
                   d_out=int(raw["w_dec"].shape[-1]), hook_name_out=f"blocks.{layer}.hook_mlp_out")
        if affine:
            state["W_skip"] = raw["affine_skip_connection"].T.contiguous()  # stored [d_in, d_out]
    cfg.update(cfg_overrides or {})
    return cfg, state, None


def safetensors_keys(path: Path, advice: str = "") -> set[str]:
    """The tensor names of a safetensors file; SAELoadError for a file that is not one (a pickle
    renamed, a truncated download), with `advice` appended to the sentence."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    except Exception as err:  # safetensors raises several types on a damaged header
        raise SAELoadError(f"{path} is not a readable safetensors file ({err}){advice}.") from err
