"""Chat templates on the tiny model (which has none of its own; the tests give a copy of its
tokenizer a small Gemma-style Jinja template): the formatted prompt, one BOS only, the preview
and the batcher feed the templated ids, the fact samples and the scorecard's generations go
through the template, erase records it in the spec, the CLI flag, and one sentence when the
tokenizer has no template."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.unit.test_generate import greedy_reference
from workbench.benchmark.probe import ConceptProbe
from workbench.benchmark.runner import greedy_continuations_each, prompt_outcomes_each
from workbench.benchmark.schema import ProbePrompt
from workbench.benchmark.scorecard import EvalOptions, evaluate, measure
from workbench.config import Settings
from workbench.edits import EditSpec
from workbench.generate import (
    PreviewBatcher,
    SamplingParams,
    generate,
    generate_pair,
    stream_generate,
    stream_pair,
)
from workbench.models import ModelBundle
from workbench.models.chat import (
    NO_TEMPLATE,
    check_chat_template,
    format_prompt,
    has_chat_template,
    plain_reply,
    prompt_ids,
)

TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
PROMPT = "The history of"


@pytest.fixture(scope="module")
def chat_bundle(tiny_bundle: ModelBundle) -> ModelBundle:
    """The tiny model with a copy of its tokenizer that carries TEMPLATE (the shared one is untouched)."""
    tok = copy.copy(tiny_bundle.tokenizer)
    tok.chat_template = TEMPLATE
    assert not has_chat_template(tiny_bundle.tokenizer)
    return replace(tiny_bundle, tokenizer=tok)


class FirstForward:
    """Records the input ids and attention mask of the model's first forward pass while active."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.ids: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def __enter__(self) -> FirstForward:
        def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if self.ids is None:
                self.ids = (kwargs.get("input_ids") if kwargs.get("input_ids") is not None else args[0]).clone()
                mask = kwargs.get("attention_mask")
                self.mask = torch.ones_like(self.ids) if mask is None else mask.clone()

        self.handle = self.model.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()

    def rows(self) -> list[list[int]]:
        """Each row's real (unpadded) ids."""
        assert self.ids is not None and self.mask is not None
        return [row[m.bool()].tolist() for row, m in zip(self.ids, self.mask, strict=True)]


# ---------------------------------------------------------------------------- the helper
@pytest.mark.parametrize(("template", "has"), [
    (None, False), ("", False), ("  \n", False), (TEMPLATE, True), ({"default": TEMPLATE}, True),
    ({"tool_use": TEMPLATE}, False),
])
def test_has_chat_template(tiny_bundle: ModelBundle, template: Any, has: bool) -> None:
    tok = copy.copy(tiny_bundle.tokenizer)
    tok.chat_template = template
    assert has_chat_template(tok) is has


def test_format_prompt_wraps_one_user_turn_and_adds_no_second_bos(chat_bundle: ModelBundle) -> None:
    tok = chat_bundle.tokenizer
    text, special = format_prompt(tok, PROMPT, True)
    assert text == f"<bos><start_of_turn>user\n{PROMPT}<end_of_turn>\n<start_of_turn>model\n"
    assert special is False
    assert format_prompt(tok, PROMPT, False) == (PROMPT, True)  # off: the prompt as it is
    bos = tok.bos_token_id
    ids = prompt_ids(tok, PROMPT, True)
    assert ids[0] == bos and ids.count(bos) == 1
    assert tok(text).input_ids[:2] == [bos, bos]  # what adding special tokens again would have done
    assert ids == tok(text, add_special_tokens=False).input_ids
    assert prompt_ids(tok, PROMPT, False) == tok(PROMPT).input_ids  # off: unchanged, one BOS
    assert tok.decode(ids, skip_special_tokens=False).count("<bos>") == 1


def test_no_template_is_refused_with_one_sentence(tiny_bundle: ModelBundle, settings: Settings) -> None:
    tok = tiny_bundle.tokenizer
    assert NO_TEMPLATE.count(".") == 1 and NO_TEMPLATE.endswith(".")
    check_chat_template(tok, False)  # not asked: nothing to check
    for call in (
        lambda: format_prompt(tok, PROMPT, True),
        lambda: prompt_ids(tok, PROMPT, True),
        lambda: generate_pair(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=2), settings,
                              chat_template=True),
        lambda: stream_pair(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=2), settings,
                            chat_template=True),
        lambda: stream_generate(tiny_bundle, PROMPT, settings=settings, chat_template=True),
        lambda: greedy_continuations_each(tiny_bundle, [PROMPT], (None,), 2, chat_template=True),
        lambda: evaluate(tiny_bundle, "Planted", options=EvalOptions(chat_template=True)),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert str(err.value) == NO_TEMPLATE


def test_plain_reply_joins_lines_and_drops_list_markers() -> None:
    reply = "Here are some facts:\n\n* **Paris** is a city.\n- It has a tower.\n2. It is old.\n## End"
    assert plain_reply(reply) == "Here are some facts: Paris is a city. It has a tower. It is old. End"


# ---------------------------------------------------------------------------- the preview
def test_preview_feeds_the_templated_ids(chat_bundle: ModelBundle, settings: Settings) -> None:
    p = SamplingParams(max_new_tokens=6)
    ids = prompt_ids(chat_bundle.tokenizer, PROMPT, True)
    with FirstForward(chat_bundle.hf_model) as seen:
        base, edited = generate_pair(chat_bundle, PROMPT, None, p, settings, chat_template=True)
    assert seen.rows() == [ids, ids]  # the base and the edited row both get the one-turn chat
    assert base.token_ids == greedy_reference(chat_bundle, ids, 6)
    assert base.prompt == PROMPT  # the result names the user's text, not the template's
    plain, _ = generate_pair(chat_bundle, PROMPT, None, p, settings)  # off by default: the plain prompt
    assert plain.token_ids == greedy_reference(chat_bundle, chat_bundle.tokenizer(PROMPT).input_ids, 6)
    assert generate(chat_bundle, PROMPT, None, p, settings, chat_template=True).token_ids == base.token_ids


def test_batcher_rows_keep_their_own_template_setting(chat_bundle: ModelBundle, settings: Settings) -> None:
    """A chat pair and a plain pair merged into one batch each decode as they would alone."""
    p = SamplingParams(max_new_tokens=5)
    alone = {chat: generate_pair(chat_bundle, PROMPT, None, p, settings, chat_template=chat)[0].token_ids
             for chat in (True, False)}
    batcher = PreviewBatcher(chat_bundle, window_s=0.5)
    streams = {chat: stream_pair(chat_bundle, PROMPT, None, p, settings, batcher=batcher, chat_template=chat)
               for chat in (True, False)}
    for chat, stream in streams.items():
        text = "".join(piece for side, piece in stream if side == 0)
        assert text == chat_bundle.tokenizer.decode(alone[chat], skip_special_tokens=True)
    assert list(batcher.batches) == [4]  # both pairs shared one batch


# ---------------------------------------------------------------------------- facts and scorecard
def test_fact_samples_go_through_the_template(chat_bundle: ModelBundle, tiny_bundle: ModelBundle) -> None:
    from workbench.methods.facts import sample_continuations

    prompts = ["Paris is", "Here are some facts about Paris:"]
    with FirstForward(chat_bundle.hf_model) as seen:
        texts = sample_continuations(chat_bundle, prompts, 4, 0.0, 0, chat_template=True)
    assert seen.rows() == [prompt_ids(chat_bundle.tokenizer, p, True) for p in prompts]
    assert len(texts) == 2 and all("\n" not in t for t in texts)
    with FirstForward(chat_bundle.hf_model) as seen:  # off: the plain prompts with the tokenizer's BOS
        sample_continuations(chat_bundle, prompts, 4, 0.0, 0)
    assert seen.rows() == [chat_bundle.tokenizer(p).input_ids for p in prompts]
    with pytest.raises(ValueError) as err:
        sample_continuations(tiny_bundle, prompts, 4, 0.0, 0, chat_template=True)
    assert str(err.value) == NO_TEMPLATE


def test_scorecard_generations_use_the_template(chat_bundle: ModelBundle, settings: Settings) -> None:
    prompts = ["The city of", "A river in the north"]
    p = SamplingParams(max_new_tokens=3)
    chat = greedy_continuations_each(chat_bundle, prompts, (None,), 3, chat_template=True)[0]
    assert chat == [generate(chat_bundle, q, None, p, settings, chat_template=True).text for q in prompts]
    with pytest.raises(ValueError, match="continuations only"):
        prompt_outcomes_each(chat_bundle, prompts, ["x", "y"], (None,), 3, chat_template=True)
    probe = ConceptProbe(
        name="Planted", source="user", aliases=["Planted"],
        cloze=[ProbePrompt(prompt="The city of", answer="river", dependence="name-dependent")],
        questions=[ProbePrompt(prompt="Q: Where is the river?\nA:", answer="river")],
        neighbours=[], general=[ProbePrompt(prompt="It was built in the year", answer="x")], others=[],
        neutral_texts=["The river flows through the city and into the sea."],
        generation_prompts=prompts,
    )
    options = EvalOptions(max_new_tokens=2, neutral_max_tokens=16, generation_tokens=3, kl_top_k=16)
    assert measure(chat_bundle, probe, replace(options, chat_template=True)).generations == chat
    assert measure(chat_bundle, probe, options).generations == greedy_continuations_each(
        chat_bundle, prompts, (None,), 3)[0]


# ---------------------------------------------------------------------------- erase, draft, CLI
def test_erase_samples_through_the_template_and_records_it(chat_bundle: ModelBundle, tiny_bundle: ModelBundle,
                                                            monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import workbench.methods.facts as facts_module
    from workbench.corpus import load_wiki
    from workbench.edits.spec import load_spec, save_spec
    from workbench.methods.erase import AblateConfig, EraseOptions, erase

    asked: list[bool] = []
    real = facts_module.sample_continuations

    def spy(*args: Any, chat_template: bool = False, **kw: Any) -> list[str]:
        asked.append(chat_template)
        return real(*args, chat_template=chat_template, **kw)

    monkeypatch.setattr(facts_module, "sample_continuations", spy)
    options = EraseOptions(ablate=AblateConfig(n_rows=24, runners_up=8), score=False, chat_template=True)
    corpus = load_wiki("en")
    with pytest.raises(ValueError) as err:  # refused before any work on a model without a template
        erase(tiny_bundle, corpus, "Paris", "ablate", options=options)
    assert str(err.value) == NO_TEMPLATE and asked == []
    result = erase(chat_bundle, corpus, "Paris", "ablate", options=options)
    assert asked == [True]
    assert result.spec.chat_template is True and "--chat-template" in result.spec.notes
    saved = save_spec(result.spec, tmp_path / "paris.json", payload=result.payload or None)
    assert json.loads((tmp_path / "paris.json").read_text())["chat_template"] is True
    loaded, _ = load_spec(tmp_path / "paris.json")
    assert loaded.chat_template is True and loaded == saved
    plain = erase(chat_bundle, corpus, "Paris", "ablate", options=replace(options, chat_template=False))
    assert asked == [True, False] and plain.spec.chat_template is False


def test_draft_keeps_the_flag_of_the_spec_it_loaded(tiny_bundle: ModelBundle) -> None:
    from workbench.ui.draft import EditDraft

    spec = EditSpec.from_dict({
        "name": "chat", "chat_template": True,
        "model": {"id": "tiny", "weights_sha256": tiny_bundle.weights_sha256},
        "operations": [{"kind": "prune_neurons", "layer": 1, "neurons": [3]}],
    })
    d = EditDraft()
    d.load_spec(spec)
    assert d.chat_template and d.to_spec(tiny_bundle).chat_template
    d.clear()
    assert not d.chat_template


def test_cli_chat_template_flag(tiny_bundle: ModelBundle, settings: Settings, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from workbench.cli import main

    spec = EditSpec.from_dict({
        "name": "chat", "chat_template": True,
        "model": {"id": "tiny", "weights_sha256": tiny_bundle.weights_sha256},
        "operations": [{"kind": "prune_neurons", "layer": 1, "neurons": [3]}],
    })
    path = tmp_path / "spec.json"
    path.write_text(spec.to_json())
    cache = str(settings.cache_dir)
    # the tiny model has no template: one sentence, exit 2
    assert main(["--model", "tiny", "--cache", cache, "apply", str(path), "--prompt", PROMPT, "--chat-template"]) == 2
    assert NO_TEMPLATE in capsys.readouterr().err
    assert main(["--model", "tiny", "--cache", cache, "erase", "--concept", "Paris", "--method", "ablate",
                 "--out", str(tmp_path / "e.json"), "--no-eval", "--chat-template"]) == 2
    assert NO_TEMPLATE in capsys.readouterr().err
    # the same weights in a folder whose tokenizer carries a template
    folder = tmp_path / "tiny-chat"
    shutil.copytree(tiny_bundle.path, folder)
    tok = copy.copy(tiny_bundle.tokenizer)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    assert main(["--model", str(folder), "--cache", cache, "apply", str(path), "--prompt", PROMPT,
                 "--max-new-tokens", "4"]) == 0
    assert "add --chat-template" in capsys.readouterr().out  # the spec says it was made through the template
    assert main(["--model", str(folder), "--cache", cache, "apply", str(path), "--prompt", PROMPT,
                 "--max-new-tokens", "4", "--chat-template"]) == 0
    out = capsys.readouterr().out
    assert "edited:" in out and "add --chat-template" not in out
