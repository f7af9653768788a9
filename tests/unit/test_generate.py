"""Generation on the tiny model: greedy equals a no-cache reference, streaming, seeds, limits,
the lock (queued status) and the overlay being reverted even when a stream is abandoned."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from workbench.config import Limits, Settings
from workbench.edits import EditSpec, compile_spec
from workbench.edits.overlay import Overlay, resolve_attr
from workbench.generate import (
    GenerationResult,
    SamplingParams,
    generate,
    generate_pair,
    lock_busy,
    stream_generate,
    validate_prompt,
)
from workbench.models import ModelBundle, layout
from workbench.models.hashing import tensor_sha256

PROMPT = "The history of"


def greedy_reference(bundle: ModelBundle, prompt: str, n: int) -> list[int]:
    """Greedy decoding without KV cache, by full forward passes."""
    cur = bundle.tokenizer(prompt, return_tensors="pt").input_ids
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(bundle.hf_model(cur).logits[0, -1].argmax())
            out.append(nxt)
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    return out


def strong_overlay(bundle: ModelBundle) -> Overlay:
    spec = EditSpec.from_dict(
        {
            "name": "strong",
            "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256},
            "operations": [
                {"kind": "ablate_value_vectors", "layer": layer, "neurons": list(range(64)), "mode": "scale", "scale": -20.0}
                for layer in range(bundle.n_layers)
            ],
        }
    )
    return compile_spec(spec, bundle)


def test_greedy_matches_reference_and_streams(tiny_bundle: ModelBundle, settings: Settings) -> None:
    res = GenerationResult(prompt=PROMPT, edited=False)
    pieces = list(stream_generate(tiny_bundle, PROMPT, params=SamplingParams(max_new_tokens=12), settings=settings, result=res))
    ref = greedy_reference(tiny_bundle, PROMPT, 12)
    eos = tiny_bundle.tokenizer.eos_token_id
    expected = ref[: ref.index(eos)] if eos in ref else ref
    assert res.token_ids == expected
    assert "".join(pieces) == res.text == tiny_bundle.tokenizer.decode(expected, skip_special_tokens=True)
    assert len(pieces) > 1
    assert res.stop_reason in ("max_new_tokens", "eos")


def test_edited_differs_and_base_is_restored(tiny_bundle: ModelBundle, settings: Settings) -> None:
    ov = strong_overlay(tiny_bundle)
    before = {n: tensor_sha256(layout.w_out(tiny_bundle.hf_model, int(n.split(".")[2]))) for n in ov.tensors}
    base, edited = generate_pair(tiny_bundle, PROMPT, ov, SamplingParams(max_new_tokens=10), settings)
    assert not base.edited and edited.edited
    assert base.token_ids != edited.token_ids
    again = generate(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=10), settings)
    assert again.token_ids == base.token_ids
    assert before == {n: tensor_sha256(layout.w_out(tiny_bundle.hf_model, int(n.split(".")[2]))) for n in ov.tensors}


def test_sampling_is_seeded(tiny_bundle: ModelBundle, settings: Settings) -> None:
    p = SamplingParams(max_new_tokens=15, greedy=False, temperature=1.5, seed=4)
    a = generate(tiny_bundle, PROMPT, params=p, settings=settings)
    b = generate(tiny_bundle, PROMPT, params=p, settings=settings)
    c = generate(tiny_bundle, PROMPT, params=replace(p, seed=5), settings=settings)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids
    k1 = generate(tiny_bundle, PROMPT, params=replace(p, top_k=1), settings=settings)
    assert k1.token_ids == generate(tiny_bundle, PROMPT, params=SamplingParams(max_new_tokens=15), settings=settings).token_ids


def test_prompt_and_parameter_validation(tiny_bundle: ModelBundle, settings: Settings) -> None:
    limits = Limits(max_prompt_chars=10, max_new_tokens=5)
    assert validate_prompt("hello", limits) == "hello"
    with pytest.raises(ValueError, match="empty"):
        validate_prompt("   ", limits)
    with pytest.raises(ValueError, match="11 characters; the limit is 10"):
        validate_prompt("x" * 11, limits)
    small = replace(settings, limits=limits)
    with pytest.raises(ValueError, match="between 1 and 5"):
        generate(tiny_bundle, "hi", params=SamplingParams(max_new_tokens=6), settings=small)
    with pytest.raises(ValueError, match="temperature"):
        generate(tiny_bundle, "hi", params=SamplingParams(greedy=False, temperature=0), settings=small)
    assert not lock_busy(tiny_bundle)  # validation errors never take the lock


def test_time_limit_stops_generation(tiny_bundle: ModelBundle, settings: Settings) -> None:
    fast = replace(settings, limits=replace(settings.limits, generation_timeout_s=0.0))
    res = generate(tiny_bundle, PROMPT, params=SamplingParams(max_new_tokens=20), settings=fast)
    assert res.stop_reason == "time_limit"
    assert len(res.token_ids) == 1


def test_lock_is_held_while_streaming_and_released_when_closed(tiny_bundle: ModelBundle, settings: Settings) -> None:
    ov = strong_overlay(tiny_bundle)
    name = next(iter(ov.tensors))
    seen: list[bool] = []

    def probe() -> None:
        seen.append(lock_busy(tiny_bundle))

    stream = stream_generate(tiny_bundle, PROMPT, ov, SamplingParams(max_new_tokens=20), settings)
    next(stream)
    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen == [True]
    param = resolve_attr(tiny_bundle.hf_model, name)
    assert tensor_sha256(param) != ov.base_sha256[name]  # overlay applied during the stream
    stream.close()  # abandoned stream: lock released, overlay reverted
    t = threading.Thread(target=probe)
    t.start()
    t.join()
    assert seen == [True, False]
    assert tensor_sha256(param) == ov.base_sha256[name]
