"""The erase methods that train or average run through the CLI in bf16 on the tiny model (erase,
apply), and the spec they write is bound to the bf16 weights: the fp32 model refuses it with a
sentence. A CLI process per step and a key rewrite each take tens of seconds, so these are in
the full suite (bf16 loading, hashing and compiling: tests/unit/test_dtype.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.cli import main
from workbench.config import Settings


@pytest.mark.parametrize("method", ["ablate", "project", "rewrite"])
def test_erase_methods_run_in_bf16(method: str, session_settings: Settings, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    cli = ["--model", "tiny", "--cache", str(session_settings.cache_dir), "--dtype", "bfloat16"]
    out = tmp_path / f"{method}.json"
    assert main([*cli, "erase", "--concept", "Harry Potter", "--method", method, "--out", str(out), "--no-eval"]) == 0, \
        capsys.readouterr().err
    assert main([*cli, "apply", str(out), "--prompt", "Harry Potter is", "--max-new-tokens", "3"]) == 0
    assert "edited:" in capsys.readouterr().out
    # the spec is bound to the bf16 weights: the fp32 model refuses it with a sentence
    assert main(["--model", "tiny", "--cache", str(session_settings.cache_dir), "apply", str(out),
                 "--prompt", "x"]) == 2
    assert "same --dtype" in capsys.readouterr().err
