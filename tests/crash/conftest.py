"""The crash tests: real `python -m workbench` subprocesses killed with SIGKILL at named points
(workbench/pause.py), then the store and the folders checked and the command rerun. Minutes on
the tiny model; run them with `pytest tests/crash` (marker `crash`); the fast tier (tests/unit)
leaves them out."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "crash: SIGKILLs real workbench subprocesses mid-build (tests/crash)")
