"""Finding and replacing a concept's name in prompts (the name-substitution floor)."""

from __future__ import annotations

import re


def substitute(text: str, mapping: dict[str, str]) -> str:
    """Replace whole-word occurrences of each alias (longest first) by its replacement."""
    aliases = sorted(mapping, key=len, reverse=True)
    pattern = re.compile("|".join(rf"(?<!\w){re.escape(a)}(?!\w)" for a in aliases))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def mentions(text: str, aliases: list[str]) -> bool:
    """True when any alias occurs as a whole word (case-sensitive)."""
    return any(re.search(rf"(?<!\w){re.escape(a)}(?!\w)", text) for a in aliases)
