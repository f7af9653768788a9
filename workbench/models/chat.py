"""Chat templates: a user's prompt as one user turn of the model's own chat template.

Instruct models answer a prompt much better when it reaches them the way they were tuned on:
wrapped in their tokenizer's chat template (`tokenizer.chat_template`, a Jinja string) with the
assistant's turn opened. Base models, the embedded one included, have no chat use, so every
caller takes `chat` as an option that defaults to off and goes through `format_prompt` or
`prompt_ids` here, the one place that wraps prompts.

The template writes the special tokens itself (BOS first, as a rule), so templated text is
tokenised without adding special tokens again, as `apply_chat_template(tokenize=True)` does;
otherwise the ids would start with BOS twice. A plain prompt keeps the tokenizer's usual BOS.
`plain_reply` turns a reply (often a Markdown list) back into prose, for the fact set's samples.
"""

from __future__ import annotations

import re
from typing import Any

NO_TEMPLATE = ("This model's tokenizer has no chat template, so the prompt cannot be sent as a chat turn; "
               "turn 'use the chat template' off.")


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer carries a chat template (a non-empty Jinja string, or a dict of named
    templates with a non-empty 'default', the form some tokenizers save)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return isinstance(template, str) and bool(template.strip())


def check_chat_template(tokenizer: Any, chat: bool) -> None:
    """Raise ValueError with one sentence when `chat` is asked of a tokenizer without a template,
    so callers can refuse before any work (or a shared batch) starts."""
    if chat and not has_chat_template(tokenizer):
        raise ValueError(NO_TEMPLATE)


def format_prompt(tokenizer: Any, prompt: str, chat: bool) -> tuple[str, bool]:
    """The text to tokenise for `prompt` and whether to add the tokenizer's special tokens to it.

    `chat=False`: (prompt, True), the prompt as it is, BOS added by the tokenizer.
    `chat=True`: the prompt as a single user turn with the generation prompt opened, and False:
    the template wrote its special tokens already. ValueError (NO_TEMPLATE) without a template."""
    if not chat:
        return prompt, True
    check_chat_template(tokenizer, chat)
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return str(text), False


def prompt_ids(tokenizer: Any, prompt: str, chat: bool) -> list[int]:
    """Token ids of `prompt`, through the chat template when `chat` (see `format_prompt`)."""
    text, add_special_tokens = format_prompt(tokenizer, prompt, chat)
    return list(tokenizer(text, add_special_tokens=add_special_tokens).input_ids)


_LIST_MARKER = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|#+)\s+")


def plain_reply(reply: str) -> str:
    """A chat reply as one line of prose: its non-empty lines joined by spaces, with Markdown list,
    numbering and heading markers and bold/italic stars dropped. Instruct models answer in lists
    ("Here are some facts about X:\\n\\n* He was born ..."); a fact set wants sentences."""
    lines = (_LIST_MARKER.sub("", line).replace("**", "").replace("__", "").strip() for line in reply.splitlines())
    return " ".join(line for line in lines if line)
