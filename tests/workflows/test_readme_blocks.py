"""The README's two python blocks run as written, on the tiny model: the notebook example
(load, erase with its scorecard, preview, score, save and load again) in this process, and the
own-loop block as a script in a folder outside the repository through the installed package.
Each takes tens of seconds (an erase with a scorecard; a fresh python that imports torch), so they
are in the full suite, not the tests/unit fast tier."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from workbench.config import REPO_ROOT


def readme_example() -> str:
    """The README's notebook example (the python block that starts with `import workbench as wb`)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (block,) = [b for b in blocks if b.startswith("import workbench as wb")]
    return block


def run_readme_example(source: str, cwd: Path) -> dict:
    code = readme_example()
    assert "wb.load()" in code
    namespace: dict = {}
    old = Path.cwd()
    os.chdir(cwd)
    try:
        exec(compile(code.replace("wb.load()", f"wb.load({source!r})"), "README.md", "exec"), namespace)  # noqa: S102
    finally:
        os.chdir(old)
    return namespace


def test_readme_notebook_example_runs(tiny_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    ns = run_readme_example("tiny", tmp_path)
    edit, card, same = ns["edit"], ns["card"], ns["same"]
    assert edit.spec.model.weights_sha256 == tiny_bundle.weights_sha256 and edit.spec.operations
    assert edit.scorecard is not None and card.rows() and 0.0 <= card.score <= 1.0
    assert card.verdicts  # the scorecard says in words what happened
    assert same.spec.sha256() == edit.spec.sha256()
    assert isinstance(ns["base"], str) and isinstance(ns["edited"], str)


MARKER = "<!-- notebook-api -->\n```python\n"


def readme_block() -> str:
    """The README's own-loop block: the fenced python block right after MARKER."""
    text = (REPO_ROOT / "README.md").read_text()
    assert text.count(MARKER) == 1, "README.md needs exactly one <!-- notebook-api --> block"
    return text.split(MARKER, 1)[1].split("```", 1)[0]


def test_readme_notebook_api_block_runs_from_outside_the_repository(tiny_bundle: Any, tmp_path: Path) -> None:
    """The block as written, as a script in a temporary folder, with the venv's python and the
    installed package. The one substitution: WORKBENCH_MODEL=tiny, which the block's `wb.load()`
    reads (the embedded model otherwise); its cache is a fresh folder sharing the built models."""
    code = readme_block()
    assert "wb.load()" in code and "model.edited(edit)" in code and "wb.capture(" in code
    work, cache = tmp_path / "work", tmp_path / "cache"
    work.mkdir()
    cache.mkdir()
    (cache / "models").symlink_to(tiny_bundle.path.parent.resolve(), target_is_directory=True)
    (work / "loop.py").write_text(code)
    env = {**os.environ, "WORKBENCH_MODEL": "tiny", "WORKBENCH_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # `import workbench` must come from the installed package, not the repo
    out = subprocess.run([sys.executable, "loop.py"], cwd=work, env=env, capture_output=True, text=True,
                         timeout=600)
    assert "No module named 'workbench'" not in out.stderr, "install the package: pip install --no-deps -e ."
    assert out.returncode == 0, out.stderr[-4000:]
    assert "ModelBundle('tiny-gemma3'" in out.stdout
    assert "Edit('top neurons', ops=[ablate_value_vectors]" in out.stdout
    change = re.search(r"max logit change: ([0-9.]+)", out.stdout)
    assert change and float(change.group(1)) > 0, out.stdout
    assert (work / "top-neurons.json").is_file()
    assert not (REPO_ROOT / "top-neurons.json").exists()
