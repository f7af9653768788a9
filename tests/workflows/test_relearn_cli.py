"""`evaluate --relearn` on the tiny model: the relearning row and INFO line are printed and stored in
the scorecard JSON beside the fluency rows; `erase --relearn --no-eval` is refused with a sentence."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from workbench.benchmark.relearn import RelearnConfig
from workbench.config import Settings
from workbench.edits import EditSpec
from workbench.models import load_bundle, parse_source


def test_cli_evaluate_relearn_on_the_tiny_model(settings: Settings, tmp_path: Path, capsys,  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import workbench.benchmark.scorecard as scorecard
    from workbench.benchmark.fluency import FluencyConfig
    from workbench.cli import main
    from workbench.edits.spec import save_spec

    # the CLI's scorecard with short continuations (the wiring is what is tested here, not the card)
    monkeypatch.setattr(scorecard, "EvalOptions", functools.partial(
        scorecard.EvalOptions, max_new_tokens=2, continuation_sets=("cloze",), neutral_max_tokens=16,
        generation_tokens=3, kl_top_k=16, fluency=FluencyConfig(max_new_tokens=6, max_prompts=2)))
    cache = str(settings.cache_dir)
    bundle = load_bundle(parse_source("tiny"), settings)
    spec = EditSpec.from_dict({
        "name": "zero", "model": {"id": bundle.model_id, "weights_sha256": bundle.weights_sha256},
        "operations": [{"kind": "ablate_value_vectors", "layer": 1, "neurons": list(range(32)), "mode": "zero"}]})
    out = tmp_path / "hp.json"
    save_spec(spec, out)
    assert main(["--model", "tiny", "--cache", cache, "erase", "--concept", "Harry Potter", "--method", "ablate",
                 "--out", str(out), "--no-eval", "--relearn"]) == 2
    assert "drop --no-eval" in capsys.readouterr().err
    card_path = tmp_path / "card.json"
    assert main(["--model", "tiny", "--cache", cache, "evaluate", str(out), "--concept", "Harry Potter", "--relearn",
                 "--json", str(card_path)]) == 0
    printed = capsys.readouterr().out
    assert "relearned (2 epochs, " in printed and "INFO: relearned (2 epochs, " in printed
    card = json.loads(card_path.read_text())
    rel = card["relearn"]
    assert 1 <= rel["paragraphs"] <= RelearnConfig().max_paragraphs and rel["epochs"] == 2 and rel["lr"] == 1e-5
    assert {"base", "edited", "relearned", "recovered", "steps", "excluded"} <= set(rel)
    assert any(m["metric"].startswith("relearned (2 epochs") and m["group"] == "robustness" for m in card["metrics"])
    assert any(m["metric"].startswith("concept generations: ") for m in card["metrics"])  # fluency rows too
