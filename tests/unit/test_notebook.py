"""The notebook API: a light import, an edit made by hand that generates, saves and loads again
(the README's notebook block itself runs in tests/workflows/test_readme_blocks.py)."""

from __future__ import annotations

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
