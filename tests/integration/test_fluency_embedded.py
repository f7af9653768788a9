"""The `<start_of_image>` runs seen after an `ablate` erase of Paris, on the embedded Gemma 3 270M.

What was reported: an ablate edit continued "The Eiffel Tower is in the city of" with " Paris, France"
and then a run of `<start_of_image>` tokens, and the teacher-forced perplexity did not see it. What
this test pins down, in the scorecard's own greedy decode: the base's continuations are text, the
ablate edit's are not (the converted tokenizer does not mark `<start_of_image>` special, so only the
added-token rule sees it), and the fluency rule FAILS the edit with a sentence that says so."""

from __future__ import annotations

import pytest

from workbench.benchmark.fluency import FluencyConfig, degeneration, non_text_ids
from workbench.benchmark.scorecard import measure_fluency
from workbench.corpus import load_wiki
from workbench.edits.compile import compile_spec
from workbench.methods.erase import EraseOptions, erase

pytestmark = pytest.mark.integration

EIFFEL = "The Eiffel Tower is in the city of"


def test_the_degenerate_ablate_edit_fails_the_fluency_rule(embedded_bundle) -> None:  # type: ignore[no-untyped-def]
    bundle = embedded_bundle
    image = bundle.tokenizer.convert_tokens_to_ids("<start_of_image>")
    assert image not in bundle.tokenizer.all_special_ids  # not marked special: only the added-token rule sees it
    result = erase(bundle, load_wiki("en"), "Paris", "ablate", options=EraseOptions(score=False))
    adapter = compile_spec(result.spec, bundle, payload=result.payload or None)
    cfg = FluencyConfig()
    prompts = {"concept": [EIFFEL, "Paris is", "Here are some facts about Paris:"], "general": []}
    (base_ids, base), (edited_ids, edited) = measure_fluency(bundle, prompts, (None, adapter), cfg)
    assert base["concept"].special_fraction == 0.0, [bundle.tokenizer.decode(i) for i in base_ids["concept"]]
    edited_text = sum(edited_ids["concept"], [])
    assert image in non_text_ids(bundle.tokenizer, edited_text), [bundle.tokenizer.decode(i) for i in edited_ids["concept"]]
    broken = degeneration(base["concept"], edited["concept"], cfg)
    assert any("special tokens" in clause for clause in broken), broken  # the rule fails the degenerate edit
