"""Imports run down the layers, never up: kernels and adapters know nothing of methods, the UI or
the CLI; the CLI's subcommand modules share `cli.common` and never import `cli.main` (the old
cycle). Read from the source with `ast`, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from workbench.config import REPO_ROOT

PKG = REPO_ROOT / "workbench"
# folder or module -> packages it must not import
RULES: dict[str, tuple[str, ...]] = {
    "models": ("workbench.methods", "workbench.edits", "workbench.ui", "workbench.cli", "workbench.benchmark"),
    "ops": ("workbench.methods", "workbench.edits", "workbench.ui", "workbench.cli", "workbench.benchmark"),
    "adapters": ("workbench.methods", "workbench.edits", "workbench.ui", "workbench.cli", "workbench.generate"),
    "edits": ("workbench.methods", "workbench.ui", "workbench.cli"),
    "store": ("workbench.methods", "workbench.ui", "workbench.cli", "workbench.models"),
    "methods": ("workbench.ui", "workbench.cli"),
    "benchmark": ("workbench.ui", "workbench.cli"),
    "generate.py": ("workbench.methods", "workbench.edits", "workbench.ui", "workbench.cli"),
}


def imported(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("where", sorted(RULES))
def test_imports_run_down_the_layers(where: str) -> None:
    files = [PKG / where] if where.endswith(".py") else sorted((PKG / where).rglob("*.py"))
    assert files and all(f.exists() for f in files)
    bad = {f"{f.relative_to(REPO_ROOT)} imports {name}"
           for f in files for name in imported(f) for banned in RULES[where]
           if name == banned or name.startswith(banned + ".")}
    assert not bad, sorted(bad)


def test_cli_subcommands_share_common_and_never_import_main() -> None:
    for name in ("edits.py", "sae.py", "library.py", "common.py"):
        names = imported(PKG / "cli" / name)
        assert not any(n in ("workbench.cli.main", "workbench.cli.main.main") for n in names), name
        assert "workbench.cli" not in names or name == "common.py", name  # not the package's own names
