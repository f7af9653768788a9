"""The embedded model built by two processes at once into one empty cache (issue: a second process
read the first one's half-written GGUF and crashed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_build_once import build_in_two_processes, digests

pytestmark = pytest.mark.integration


def test_two_processes_building_the_embedded_model_at_once_both_succeed(tmp_path: Path, embedded_bundle) -> None:  # type: ignore[no-untyped-def]
    results = build_in_two_processes(tmp_path, "embedded", "build_embedded_checkpoint")
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]
    folder = tmp_path / "gemma-3-270m-fp32"
    assert {r.stdout.strip().splitlines()[-1] for r in results} == {str(folder)}
    files = digests(folder)
    assert {"model.safetensors", "tokenizer.json", "config.json"} <= set(files)
    assert not (folder / "gguf").exists()  # the 240 MB GGUF does not stay in the checkpoint
    reference = digests(Path(embedded_bundle.path))
    assert files["model.safetensors"] == reference["model.safetensors"]  # the same weights as the session's build
