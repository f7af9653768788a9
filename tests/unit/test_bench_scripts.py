"""Every bench/ script imports cleanly and has a `main`: a bench that breaks on import is found here,
not an hour into a measurement (bench/optimise_speed.py once imported a name that did not exist)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("script", sorted(BENCH.glob("*.py")), ids=lambda p: p.name)
def test_bench_script_imports_and_has_main(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up there
    spec.loader.exec_module(module)  # runs the imports, not main (each script guards it)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
