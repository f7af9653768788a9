"""The process-wide speed and memory settings are opt-in (workbench/models/process.py): importing
the package and `wb.load` leave the environment, glibc, the model's unembedding and the
tokenizer as they were; `tune_process=True` applies each of them."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import workbench as wb
from workbench.config import Settings
from workbench.models import bundle as bundle_module
from workbench.models import load_bundle, memory, parse_source, skinny
from workbench.models.process import MKL_FAST_MM


class FakeLibc:
    """Stands in for glibc: records mallopt and malloc_trim calls (mallopt cannot be read back)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[int, ...]]] = []

    def mallopt(self, *args: int) -> int:
        self.calls.append(("mallopt", args))
        return 1

    def malloc_trim(self, *args: int) -> int:
        self.calls.append(("malloc_trim", args))
        return 1


@pytest.fixture
def libc(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLibc]:
    fake = FakeLibc()
    monkeypatch.setattr(memory, "_libc", lambda: fake)
    memory.tune_allocator.cache_clear()  # an earlier tuned load in this process cached its answer
    yield fake
    memory.tune_allocator.cache_clear()


@pytest.fixture
def dropped(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The tokenizers whose private construction tables the load freed (bundle._drop_construction_tables;
    the tiny models' tokenizer class keeps none, so the call itself is what is observed)."""
    calls: list[Any] = []
    monkeypatch.setattr(bundle_module, "_drop_construction_tables", calls.append)
    return calls


def _head(model: Any) -> Any:
    head = model.hf_model.get_output_embeddings()
    return getattr(head, "_original_component", head)


def _environ() -> dict[str, str]:
    """os.environ without torch's own entry (inductor records its cache folder there the first
    time transformers imports it, whoever loads)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("TORCHINDUCTOR_")}


def _load(session_settings: Settings, **kw: Any) -> Any:
    return wb.load("tiny", cache_dir=session_settings.cache_dir, **kw)


def test_importing_workbench_sets_nothing() -> None:
    env = {k: v for k, v in os.environ.items() if k != MKL_FAST_MM}
    code = f"import os, workbench; print({MKL_FAST_MM!r} in os.environ)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path.home(), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("entry", ["wb.load", "load_bundle"])
def test_a_library_load_leaves_the_process_as_it_was(entry: str, session_settings: Settings, libc: FakeLibc,
                                                     dropped: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    installs: list[Any] = []
    monkeypatch.setattr(skinny, "measure_plan", lambda w: installs.append(w) or skinny.ALWAYS_SKINNY)
    monkeypatch.delenv(MKL_FAST_MM, raising=False)  # an earlier tuned load in this process set it
    environ = _environ()
    gc.unfreeze()
    model = _load(session_settings) if entry == "wb.load" else load_bundle(parse_source("tiny"), session_settings)
    assert gc.get_freeze_count() == 0  # the garbage collector sees everything, as in any process
    assert _environ() == environ and MKL_FAST_MM not in os.environ
    assert libc.calls == [] and installs == []  # no mallopt, no malloc_trim, no timing of the unembedding
    assert "forward" not in vars(_head(model)) and not hasattr(_head(model), "_workbench_skinny")
    assert dropped == []  # the tokenizer as transformers built it


def test_tune_process_applies_every_setting(session_settings: Settings, libc: FakeLibc, dropped: list[Any],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MKL_FAST_MM, raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(skinny, "measure_plan", lambda w: skinny.ALWAYS_SKINNY)  # as if it measured faster here
    gc.unfreeze()
    try:
        model = _load(session_settings, tune_process=True)
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert frozen > sum(p.numel() > 0 for p in model.hf_model.parameters())  # the load's objects, out of the GC
    assert os.environ[MKL_FAST_MM] == "1"
    assert [c for c in libc.calls if c[0] == "mallopt"] == [
        ("mallopt", (memory.M_MMAP_THRESHOLD, memory.MMAP_THRESHOLD_BYTES)), ("mallopt", (memory.M_ARENA_MAX, memory.ARENA_MAX))]
    assert ("malloc_trim", (0,)) in libc.calls
    head = _head(model)
    assert "forward" in vars(head) and head._workbench_skinny == skinny.ALWAYS_SKINNY
    assert len(dropped) == 1 and model.tokenizer("Paris is").input_ids
