"""Process-wide resources shared by every session: one model bundle, one Store (DuckDB allows
one writing process), one JobManager (one queue for every user's jobs), the embedded corpus.
Loaded once via st.cache_resource."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from workbench.config import Settings
from workbench.jobs import JobManager
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.store import Store, open_store


def settings() -> Settings:
    return Settings.from_env()


@st.cache_resource(show_spinner="Loading the model (about 45 s the first time, seconds after) ...")
def _bundle(source_text: str, cache_dir: str, device: str, dtype: str) -> ModelBundle:
    return load_bundle(parse_source(source_text),
                       Settings.from_env(model_source=source_text, device=device, dtype=dtype),
                       tune_process=True)  # one model served to every session (models/process.py)


def bundle(source_text: str | None = None) -> ModelBundle:
    return _bundle(source_text or current_source(), str(settings().cache_dir), *current_placement())


@st.cache_resource
def _batcher(source_text: str, cache_dir: str, device: str, dtype: str) -> Any:
    from workbench.generate import PreviewBatcher

    return PreviewBatcher(_bundle(source_text, cache_dir, device, dtype))


def batcher() -> Any:
    """The server's one PreviewBatcher for this model: previews of all users that overlap in
    time share their forward passes, each row with its own user's adapter."""
    return _batcher(current_source(), str(settings().cache_dir), *current_placement())


@st.cache_resource(show_spinner="Opening the store ...")
def _store(path: str) -> Store:
    return open_store(settings().store_path, retries=4)


def store() -> Store:
    return _store(str(settings().store_path))


@st.cache_resource
def _jobs(path: str) -> JobManager:
    from workbench.exports.disk import expire_exports

    current = settings()  # the sweep also deletes exports past their expiry (ExportLimits.ttl_s)
    return JobManager(Path(path), current.jobs, device=current.device,
                      on_sweep=lambda now: expire_exports(current.exports_dir, current.exports, now))


def jobs() -> JobManager:
    """The server's one job manager: every user's jobs in one fair queue (workbench/jobs/manager.py).
    Previews never go through it (`batcher`), so they never wait behind a job."""
    return _jobs(str(settings().jobs_dir))


@st.cache_resource(show_spinner="Loading the corpus ...")
def wiki() -> Any:
    from workbench.corpus import load_wiki

    return load_wiki("en")


def current_source() -> str:
    """The model source this session uses: the server's (`Settings.model_source`), or the Home
    page's choice where the admin lets users choose (`Settings.user_models`)."""
    current = settings()
    chosen = st.session_state.get("model_source") if current.user_models else None
    return str(chosen or current.model_source)


def devices() -> list[str]:
    """Device choices this server can honour."""
    import torch

    return ["auto", "cpu", "cuda"] if torch.cuda.is_available() else ["auto", "cpu"]


def current_placement() -> tuple[str, str]:
    """(device, dtype) this session uses: the server's settings, or the Home page's choice where
    the admin lets users choose (`Settings.user_models`). Each distinct choice is one more model
    in the server's memory, shared by the users who pick it."""
    current = settings()
    state = st.session_state if current.user_models else {}
    return str(state.get("device") or current.device), str(state.get("dtype") or current.dtype)


@st.cache_resource(show_spinner="Loading the SAE ...")
def _sae(ref: str, saes_dir: str) -> Any:
    from workbench.sae.sources import load_sae

    return load_sae(ref, Path(saes_dir), hub=settings().allow_hub)[0]  # WORKBENCH_ALLOW_HUB (server_paths.py)


def sae(ref: str) -> Any:
    """An SAE or transcoder by reference (a folder, a folder name under the SAE directory,
    'pretrained:RELEASE/SAE_ID' or a catalogued 'RELEASE/SAE_ID'), loaded once per server.
    Raises SAELoadError with a sentence."""
    return _sae(str(ref), str(settings().saes_dir))


def sae_loader() -> Any:
    """An adapter `sae_loader` (compile_spec) backed by the same per-server SAE cache: a spec's
    SAE by its id (local folder name or pretrained RELEASE/SAE_ID)."""
    from workbench.sae.sources import spec_sae_id

    return lambda ref, _layer: sae(spec_sae_id(ref.id))  # an uploaded spec names no server path
