"""The `<start_of_image>` runs seen after an `ablate` erase of Paris, on the embedded Gemma 3 270M.

What was reported: an ablate edit continued "The Eiffel Tower is in the city of" with " Paris, France"
and then a run of `<start_of_image>` tokens, and the teacher-forced perplexity did not see it. What
this test pins down: the base model writes the same run on that prompt, the fluency measure counts
those tokens as non-text (the converted tokenizer does not mark `<start_of_image>` special), and the
ablate edit writes what the base writes, so the rule, which judges an edit against the base on the
same prompts, passes it; a run the edit itself made would fail it (tests/unit/test_fluency.py)."""

from __future__ import annotations

import pytest

from workbench.benchmark.fluency import FluencyConfig, degeneration, non_text_ids
from workbench.benchmark.scorecard import measure_fluency
from workbench.corpus import load_wiki
from workbench.edits.compile import compile_spec
from workbench.methods.erase import EraseOptions, erase

pytestmark = pytest.mark.integration

EIFFEL = "The Eiffel Tower is in the city of"


def test_the_image_token_run_is_the_base_models_and_the_ablate_edit_passes(embedded_bundle) -> None:  # type: ignore[no-untyped-def]
    bundle = embedded_bundle
    image = bundle.tokenizer.convert_tokens_to_ids("<start_of_image>")
    assert image not in bundle.tokenizer.all_special_ids  # not marked special: only the added-token rule sees it
    result = erase(bundle, load_wiki("en"), "Paris", "ablate", options=EraseOptions(score=False))
    adapter = compile_spec(result.spec, bundle, payload=result.payload or None)
    cfg = FluencyConfig()
    prompts = {"concept": [EIFFEL, "Paris is", "Here are some facts about Paris:"], "general": []}
    (base_ids, base), (edited_ids, edited) = measure_fluency(bundle, prompts, (None, adapter), cfg)
    eiffel = base_ids["concept"][0]
    assert eiffel.count(image) >= 10, bundle.tokenizer.decode(eiffel)  # the base writes the run itself
    assert image in non_text_ids(bundle.tokenizer, eiffel)
    assert base["concept"].special_fraction > 0.1 and base["concept"].longest_run >= 10
    assert degeneration(base["concept"], edited["concept"], cfg) == []  # the edit is judged against that base
