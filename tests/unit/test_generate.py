"""Generation on the tiny model: greedy equals a no-cache reference, streaming, seeds, limits,
batched rows (left padding, per-row adapters) equal to each row alone, the side-by-side pair
as one batch of 2, cross-user batching, and no adapter left behind by an abandoned stream."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch

from workbench.adapters import Adapter
from workbench.config import Limits, Settings
from workbench.edits import EditSpec, compile_spec
from workbench.generate import (
    GenerationResult,
    PreviewBatcher,
    SamplingParams,
    decode_rows,
    generate,
    generate_pair,
    request,
    stream_generate,
    stream_pair,
    validate_prompt,
)
from workbench.models import ModelBundle, hooks
from workbench.models.hashing import model_weights_sha256

PROMPT = "The history of"


def greedy_reference(bundle: ModelBundle, ids: list[int], n: int) -> list[int]:
    """Greedy decoding of the given ids by full forward passes, no KV cache."""
    cur = torch.tensor([ids])
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(bundle.hf_model(cur).logits[0, -1].argmax())
            out.append(nxt)
            cur = torch.cat([cur, torch.tensor([[nxt]])], dim=1)
    return out


def strong_adapter(bundle: ModelBundle, scale: float = -20.0) -> Adapter:
    spec = EditSpec.from_dict(
        {
            "name": "strong",
            "model": {"id": "tiny", "weights_sha256": bundle.weights_sha256},
            "operations": [
                {"kind": "ablate_value_vectors", "layer": layer, "neurons": list(range(64)), "mode": "scale", "scale": scale}
                for layer in range(bundle.n_layers)
            ],
        }
    )
    return compile_spec(spec, bundle)


def test_greedy_matches_reference_and_streams(tiny_bundle: ModelBundle, settings: Settings) -> None:
    res = GenerationResult(prompt=PROMPT, edited=False)
    pieces = list(stream_generate(tiny_bundle, PROMPT, params=SamplingParams(max_new_tokens=12), settings=settings, result=res))
    ref = greedy_reference(tiny_bundle, tiny_bundle.tokenizer(PROMPT).input_ids, 12)
    eos = tiny_bundle.tokenizer.eos_token_id
    expected = ref[: ref.index(eos)] if eos in ref else ref
    assert res.token_ids == expected
    assert "".join(pieces) == res.text == tiny_bundle.tokenizer.decode(expected, skip_special_tokens=True)
    assert len(pieces) > 1
    assert res.stop_reason in ("max_new_tokens", "eos")


def test_pair_is_one_batch_equal_to_each_side_alone(tiny_bundle: ModelBundle, settings: Settings) -> None:
    before = model_weights_sha256(tiny_bundle.hf_model)
    ad = strong_adapter(tiny_bundle)
    p = SamplingParams(max_new_tokens=10)
    base, edited = generate_pair(tiny_bundle, PROMPT, ad, p, settings)
    assert not base.edited and edited.edited
    assert base.token_ids != edited.token_ids
    assert generate(tiny_bundle, PROMPT, None, p, settings).token_ids == base.token_ids
    assert generate(tiny_bundle, PROMPT, ad, p, settings).token_ids == edited.token_ids
    assert model_weights_sha256(tiny_bundle.hf_model) == before


def test_stream_pair_interleaves_both_sides(tiny_bundle: ModelBundle, settings: Settings) -> None:
    ad = strong_adapter(tiny_bundle)
    results = (GenerationResult(PROMPT, False), GenerationResult(PROMPT, True))
    sides = [side for side, _ in stream_pair(tiny_bundle, PROMPT, ad, SamplingParams(max_new_tokens=8), settings, results)]
    assert set(sides) == {0, 1}
    assert sides not in (sorted(sides), sorted(sides, reverse=True))  # side by side, not one after the other
    text = {0: "", 1: ""}
    for side, piece in stream_pair(tiny_bundle, PROMPT, ad, SamplingParams(max_new_tokens=8), settings):
        text[side] += piece
    assert text[0] == results[0].text and text[1] == results[1].text


def test_padded_batch_rows_equal_single_runs(tiny_bundle: ModelBundle, settings: Settings) -> None:
    """Prompts of different lengths (left padding), different adapters and sampling per row."""
    weak = strong_adapter(tiny_bundle, scale=3.0)
    rows = [
        request("A", None, SamplingParams(max_new_tokens=6), settings),
        request("In the middle of the long winter the", weak, SamplingParams(max_new_tokens=9), settings),
        request("The history of", strong_adapter(tiny_bundle), SamplingParams(max_new_tokens=7, greedy=False, seed=3), settings),
    ]
    for _ in decode_rows(tiny_bundle, rows):
        pass
    for r in rows:
        alone = generate(tiny_bundle, r.prompt, r.adapter, r.params, settings)
        assert r.result.token_ids == alone.token_ids, r.prompt
        assert r.result.text == alone.text


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
    # library callers may lift the server's token cap
    long = generate_pair(tiny_bundle, "hi", None, SamplingParams(max_new_tokens=8), small, max_new_cap=8)
    assert all(len(r.token_ids) <= 8 for r in long)


def test_time_limit_stops_generation(tiny_bundle: ModelBundle, settings: Settings) -> None:
    fast = replace(settings, limits=replace(settings.limits, generation_timeout_s=0.0))
    res = generate(tiny_bundle, PROMPT, params=SamplingParams(max_new_tokens=20), settings=fast)
    assert res.stop_reason == "time_limit"
    assert len(res.token_ids) == 1


def test_abandoned_stream_leaves_no_adapter_behind(tiny_bundle: ModelBundle, settings: Settings) -> None:
    ad = strong_adapter(tiny_bundle)
    base = generate(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=6), settings)
    stream = stream_generate(tiny_bundle, PROMPT, ad, SamplingParams(max_new_tokens=20), settings)
    next(stream)
    assert not hooks.has_taps()  # the taps live only inside each forward step
    stream.close()
    assert not hooks.has_taps()
    assert generate(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=6), settings).token_ids == base.token_ids


def test_decode_hands_freed_heap_back_when_it_ends(tiny_bundle: ModelBundle, settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Every decode ends with one trim of the freed heap, also when the reader stops early (a
    closed preview), and after the KV cache is dropped."""
    import workbench.generate as gen

    seen: list[int] = []
    monkeypatch.setattr(gen, "trim_heap", lambda: seen.append(1) or True)
    generate(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=4), settings)
    assert seen == [1]
    stream = stream_generate(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=20), settings)
    next(stream)
    assert seen == [1]
    stream.close()
    assert seen == [1, 1]


def test_batcher_merges_overlapping_previews(tiny_bundle: ModelBundle, settings: Settings) -> None:
    """Three users preview at once: their rows share batches, and each user gets exactly what a
    lone pair would give them."""
    batcher = PreviewBatcher(tiny_bundle, window_s=0.5)
    users = [(PROMPT, strong_adapter(tiny_bundle)), ("Once upon a time", None),
             ("A river in the", strong_adapter(tiny_bundle, scale=4.0))]
    p = SamplingParams(max_new_tokens=6)
    got: dict[int, dict[int, str]] = {}
    barrier = threading.Barrier(len(users))
    errors: list[BaseException] = []

    def user(i: int) -> None:
        try:
            prompt, ad = users[i]
            barrier.wait()
            text = {0: "", 1: ""}
            for side, piece in stream_pair(tiny_bundle, prompt, ad, p, settings, batcher=batcher):
                text[side] += piece
            got[i] = text
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(users))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert max(batcher.batches) > 2  # at least two users' pairs shared a batch
    assert sum(batcher.batches) == 2 * len(users)
    for i, (prompt, ad) in enumerate(users):
        base, edited = generate_pair(tiny_bundle, prompt, ad, p, settings)
        assert got[i] == {0: base.text, 1: edited.text}, i


def test_batcher_keeps_a_bounded_history(tiny_bundle: ModelBundle, settings: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A server decodes for days: the batch history keeps the last BATCHES_KEPT and a count."""
    import workbench.generate as generate

    monkeypatch.setattr(generate, "BATCHES_KEPT", 2)
    batcher = PreviewBatcher(tiny_bundle, window_s=0.0)
    for _ in range(3):
        for _piece in stream_pair(tiny_bundle, PROMPT, None, SamplingParams(max_new_tokens=1), settings,
                                  batcher=batcher):
            pass
    assert batcher.n_batches == 3 and list(batcher.batches) == [2, 2]
