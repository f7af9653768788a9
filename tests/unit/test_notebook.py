"""The notebook API runs as the README shows it: load, edit by hand or erase, generate base vs
edited, score, save and load again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import workbench as wb
from workbench.config import REPO_ROOT


def test_lazy_api_keeps_plain_imports_light() -> None:
    code = "import sys, workbench; print('torch' in sys.modules, 'workbench.notebook' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_hand_made_edit_generates_saves_and_loads(tiny_bundle, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_bundle
    # rows that matter for this prompt: the strongest hidden activations at its last position
    edit = wb.edit(model, [wb.PruneNeurons(layer=layer, neurons=list(range(model.d_mlp)))
                           for layer in range(model.n_layers)], name="prune everything")
    base, edited = wb.preview(model, "The river", edit, max_new_tokens=80)
    assert base != edited  # the edit changes what the model says
    plain, same = wb.preview(model, "The river", None, max_new_tokens=80)
    assert plain == base and same == base  # no edit: base on both sides
    assert len(model.tokenizer(base, add_special_tokens=False)["input_ids"]) > 64  # not capped at the server's 64
    path = edit.save(tmp_path / "prune.json")
    again = wb.Edit.load(model, path)
    assert again.spec.sha256() == edit.spec.sha256()
    assert wb.preview(model, "The river", again, max_new_tokens=20)[1] == wb.preview(model, "The river", edit,
                                                                                       max_new_tokens=20)[1]


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
