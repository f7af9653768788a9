"""The Home page's model box takes a GGUF file: a garbage one gets its sentence, a tiny Llama GGUF
is converted and loaded, and the page says what it was converted from."""

from __future__ import annotations

from pathlib import Path

import pytest
from apptest_helpers import app, ok
from conftest import MODELS_CACHE, environ
from gguf_helpers import write_llama_gguf

from workbench.models.tiny import TinyConfig, build_tiny_checkpoint, tiny_dir


@pytest.fixture
def gguf_cache(tmp_path: Path) -> Path:
    """A cache whose model folder is its own (the conversion lands here, not in the shared
    cache) and holds the shared tiny Gemma 3 the page loads first."""
    models = tmp_path / "cache" / "models"
    models.mkdir(parents=True)
    tiny = build_tiny_checkpoint(MODELS_CACHE)
    (models / tiny.name).symlink_to(tiny.resolve(), target_is_directory=True)
    assert tiny_dir(MODELS_CACHE) == tiny
    return tmp_path / "cache"


def test_home_model_box_takes_a_gguf_file(gguf_cache: Path, tmp_path: Path) -> None:
    gguf = write_llama_gguf(build_tiny_checkpoint(MODELS_CACHE, TinyConfig(family="llama")), tmp_path / "tiny.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"not a model" * 100)
    with environ(WORKBENCH_MODEL="tiny", WORKBENCH_CACHE=str(gguf_cache), WORKBENCH_MODEL_ROOTS=str(tmp_path),
                 WORKBENCH_USER_MODELS="1"):  # the admin lets users pick a model
        at = ok(app("pages/0_Home.py"))
        at.text_input(key="model_source_path").input(str(garbage)).run()
        assert any("garbage.gguf is not a GGUF file" in e.value for e in at.error)
        at.text_input(key="model_source_path").input(str(gguf)).run()
        ok(at)
        assert not at.error
        assert any(m.value.startswith("**gguf:tiny**") for m in at.markdown)
        assert any("converted from F32 GGUF (tiny.gguf) to float32" in c.value for c in at.caption)
