"""The load bench's short version (bench/server_load.py): 2 headless-Chromium users on a real
server (tiny model) for 2 minutes, each importing their own edit, previewing it and starting
erase and scorecard jobs. No page error, no failed wait, no failed job, and no user ever sees
another user's edited text."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from workbench.config import REPO_ROOT

pytestmark = pytest.mark.e2e


def load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("server_load", REPO_ROOT / "bench" / "server_load.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_two_users_for_two_minutes(pristine_cache: Path, browser: object) -> None:  # browser: skips without chromium
    bench = load_bench()
    report = bench.run_load(users=2, minutes=2, model="tiny", cache=pristine_cache, wait_s=300)
    bench.print_report(report)  # in the test's output when it fails
    assert report.errors == 0, report.error_details
    assert report.leaks == 0, report.leak_details
    assert report.previews >= 2  # each user previewed at least once
    assert report.first_token_p95_s is not None and report.first_token_p95_s > 0
    assert len(set(report.owners)) == 2 and all(report.owners)  # two people, each with their own cookie
    assert report.last_line().startswith("server load: 2 users, 2 min: 0 errors, 0 leaks, p95 first token ")
