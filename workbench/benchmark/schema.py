"""Wire formats of the dev benchmark and of a concept probe (pydantic, unknown keys are errors)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Dependence = Literal["name-dependent", "cue-answerable", "name-free", "unknown"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProbePrompt(_Strict):
    """One prompt and the answer the base model is expected to give."""

    prompt: str = Field(description="Text the model continues, e.g. 'The capital of Japan is'.")
    answer: str = Field(description="Expected continuation; its first token (after a space) is scored.")
    accept: list[str] = Field(
        default_factory=list,
        description="Strings any of which, found case-insensitively in the greedy continuation, "
        "count as correct. Empty means [answer].",
    )
    dependence: Dependence = Field(
        default="unknown",
        description="name-dependent: the base fails when the concept's name is replaced by made-up "
        "names; cue-answerable: it still answers; name-free: the prompt does not name the concept.",
    )

    @property
    def accepted(self) -> list[str]:
        return self.accept or [self.answer]


class BasePromptRecord(ProbePrompt):
    """A benchmark prompt with what the base model did on it when the file was built."""

    base_top_token: str
    base_answer_prob: float
    base_first_token_correct: bool
    base_continuation: str
    base_contains: bool
    floor_correct: list[bool] = Field(
        default_factory=list, description="Base correct with each made-up name substituted (in order)."
    )


class DevConcept(_Strict):
    name: str
    title: str = Field(description="Title of the concept's article in the embedded corpus.")
    kind: str
    aliases: list[str] = Field(description="Surface forms of the name replaced in the floor test.")
    fake_names: list[dict[str, str]] = Field(description="Per made-up name: alias -> replacement.")
    cloze: list[BasePromptRecord]
    questions: list[BasePromptRecord]
    neighbours: list[BasePromptRecord]
    fact_paragraph: str

    @model_validator(mode="after")
    def _fake_names_cover_aliases(self) -> DevConcept:
        for fake in self.fake_names:
            missing = set(self.aliases) - set(fake)
            if missing:
                raise ValueError(
                    f"{self.name}: made-up name {fake} has no replacement for {sorted(missing)}."
                )
        return self


class Provenance(_Strict):
    builder_command: str
    built_at: str
    model_id: str
    model_weights_sha256: str
    candidates_file: str
    candidates_sha256: str
    keep_rule: str
    floor_rule: str
    max_new_tokens: int
    counts: dict[str, int]


class DevBench(_Strict):
    provenance: Provenance
    concepts: list[DevConcept]
    general: list[BasePromptRecord]

    def concept(self, name: str) -> DevConcept:
        for c in self.concepts:
            if c.name.lower() == name.lower() or c.title.lower() == name.lower():
                return c
        raise KeyError(
            f"{name!r} is not a dev-benchmark concept; choose one of {[c.name for c in self.concepts]}."
        )
