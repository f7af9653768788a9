"""'use the chat template' on the Edit & preview and Erase pages: hidden for a tokenizer without a
template (the tiny model's), shown when the loaded model's tokenizer has one; the preview then
replies to the prompt as a chat turn and an erasure made through it is recorded in its spec."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apptest_helpers import app, ok

from workbench.ui.draft import EditDraft, prune

TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n"
    "{{ message['content'] }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


@pytest.fixture(scope="module")
def bundle(ui_env: Path) -> Any:
    """The app's own shared tiny bundle (after a first Home run)."""
    ok(app("app.py"))
    from workbench.ui import resources

    return resources.bundle("tiny")


@pytest.fixture
def with_template(bundle: Any) -> Iterator[Any]:
    """The shared bundle's tokenizer carries TEMPLATE for one test, then none again."""
    bundle.tokenizer.chat_template = TEMPLATE
    try:
        yield bundle
    finally:
        bundle.tokenizer.chat_template = None


def test_no_checkbox_without_a_template(bundle: Any) -> None:
    assert not bundle.tokenizer.chat_template
    edit = ok(app("pages/4_Edit_and_preview.py", EditDraft()))
    assert "ed_chat" not in [c.key for c in edit.checkbox]
    erase = ok(app("pages/5_Erase_a_concept.py", EditDraft()))
    assert "er_chat" not in [c.key for c in erase.checkbox]


def test_edit_page_previews_through_the_template(with_template: Any) -> None:
    from workbench.generate import SamplingParams, generate_pair

    d = EditDraft(name="chat")
    d.add(prune(1, [3]))
    d.chat_template = True  # an edit made through the template: the box starts ticked
    at = ok(app("pages/4_Edit_and_preview.py", d))
    assert at.checkbox(key="ed_chat").value is True
    at.text_area(key="ed_prompt").input("Paris is").run()
    at.slider(key="ed_max_new").set_value(4).run()
    at.button(key="ed_generate").click().run()
    history = ok(at).session_state["ed_history"][-2:]
    base, _ = generate_pair(with_template, "Paris is", None, SamplingParams(max_new_tokens=4), chat_template=True)
    assert history[0]["output"] == base.text
    assert any("as a chat turn" in c.value for c in at.caption)
    at.checkbox(key="ed_chat").uncheck().run()
    at.button(key="ed_generate").click().run()
    plain, _ = generate_pair(with_template, "Paris is", None, SamplingParams(max_new_tokens=4))
    assert ok(at).session_state["ed_history"][-2]["output"] == plain.text


def test_erase_page_samples_through_the_template_and_records_it(with_template: Any) -> None:
    from workbench.ui import resources

    manager = resources.jobs()
    at = ok(app("pages/5_Erase_a_concept.py", EditDraft()))
    at.text_input(key="er_query").input("Paris").run()
    at.checkbox(key="er_chat").check().run()
    at.button(key="er_build_facts").click().run()
    assert at.session_state["er_facts_chat"] is True
    assert manager.wait(at.session_state["er_facts_job"], timeout_s=300).state == "done"
    at.run()
    at.checkbox(key="er_chat").uncheck().run()  # the samples no longer match: said so
    assert any("with the chat template" in i.value for i in ok(at).info)
    at.checkbox(key="er_chat").check().run()
    at.selectbox(key="er_method").set_value("ablate").run()
    at.checkbox(key="er_score").uncheck().run()
    at.button(key="er_run").click().run()
    final = manager.wait(at.session_state["er_job"], timeout_s=600)
    assert final is not None and final.state == "done", final
    at.run()
    assert manager.result(at.session_state["er_job"], final.owner).spec.chat_template is True
    at.button(key="er_replace").click().run()
    assert ok(at).session_state["edit_draft"].chat_template is True
