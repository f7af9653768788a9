"""Edits CLI end to end on the tiny model: erase -> spec + payload, apply, evaluate inputs,
export-checkpoint, export-adapter, and every bad-input case exits 2 with a sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench.cli import main
from workbench.config import Settings
from workbench.edits.spec import load_spec


@pytest.fixture
def cli_cache(settings: Settings) -> str:
    return str(settings.cache_dir)


def run(cache: str, *args: str) -> int:
    return main(["--model", "tiny", "--cache", cache, *args])


def test_erase_writes_a_spec_that_applies_and_exports(cli_cache: str, tmp_path: Path, capsys):
    out = tmp_path / "hp.json"
    assert run(cli_cache, "erase", "--concept", "Harry Potter", "--method", "ablate", "--out", str(out), "--no-eval") == 0
    spec, payload = load_spec(out)
    assert spec.operations and spec.operations[0].kind == "ablate_value_vectors"
    facts = json.loads(out.with_suffix(".facts.json").read_text())
    assert facts["concept"] == "Harry Potter" and facts["facts"]
    printed = capsys.readouterr().out
    assert "Candidates (top 10" in printed and "contrast z" in printed
    assert run(cli_cache, "apply", str(out), "--prompt", "Harry Potter is", "--max-new-tokens", "4") == 0
    assert "edited:" in capsys.readouterr().out
    assert run(cli_cache, "evaluate", str(out), "--concept", "Harry Potter", "--json", str(tmp_path / "card.json")) == 0
    assert "Scorecard: Harry Potter" in capsys.readouterr().out
    assert json.loads((tmp_path / "card.json").read_text())["concept"]
    assert run(cli_cache, "evaluate", str(out), "--concept", "Harry Pottr") == 2
    assert "Did you mean" in capsys.readouterr().err
    ckpt = tmp_path / "ckpt"
    assert run(cli_cache, "export-checkpoint", str(out), "--out", str(ckpt)) == 0
    assert (ckpt / "model.safetensors").exists() or list(ckpt.glob("*.safetensors"))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ckpt).config.num_hidden_layers == 4  # plain transformers loads it
    lora = tmp_path / "lora"
    assert run(cli_cache, "export-adapter", str(out), "--out", str(lora)) == 0
    assert "PeftModel.from_pretrained" in capsys.readouterr().out
    cfg = json.loads((lora / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == cfg["lora_alpha"] >= 1
    assert run(cli_cache, "export-adapter", str(out), "--out", str(lora)) == 2  # never overwritten silently
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("content,suffix,message", [
    ('{"schema": ', ".json", "not valid JSON"),
    ("not used", ".pkl", "pickle"),
    (None, ".json", "does not exist"),
])
def test_bad_spec_inputs_exit_2_with_a_sentence(cli_cache: str, tmp_path: Path, capsys, content, suffix, message):
    path = tmp_path / f"spec{suffix}"
    if content is not None:
        path.write_text(content)
    assert run(cli_cache, "apply", str(path), "--prompt", "x") == 2
    assert message in capsys.readouterr().err


def test_spec_for_another_model_is_refused(cli_cache: str, tmp_path: Path, capsys):
    out = tmp_path / "hp.json"
    assert run(cli_cache, "erase", "--concept", "Harry Potter", "--method", "ablate", "--out", str(out), "--no-eval") == 0
    raw = json.loads(out.read_text())
    raw["model"]["weights_sha256"] = "0" * 64
    out.write_text(json.dumps(raw))
    assert run(cli_cache, "apply", str(out), "--prompt", "x") == 2
    assert "weights" in capsys.readouterr().err.lower()
    assert run(cli_cache, "evaluate", str(out), "--concept", "Harry Potter") == 2
    assert "weights" in capsys.readouterr().err.lower()
    assert run(cli_cache, "export-checkpoint", str(out), "--out", str(tmp_path / "ckpt")) == 2


def test_unknown_concept_suggests_titles(cli_cache: str, tmp_path: Path, capsys):
    assert run(cli_cache, "erase", "--concept", "Harry Pottr", "--out", str(tmp_path / "x.json")) == 2
    assert "Did you mean" in capsys.readouterr().err


def test_pisces_without_a_local_sae_says_how_to_train_one(cli_cache: str, tmp_path: Path, capsys):
    assert run(cli_cache, "erase", "--concept", "Paris", "--method", "pisces", "--out", str(tmp_path / "p.json")) == 2
    err = capsys.readouterr().err
    assert "No local SAE" in err and "sae train" in err
