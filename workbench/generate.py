"""Base vs edited generation with the HF model, streaming, under the model lock.

One generation = acquire bundle.lock -> apply overlay (if any) -> decode token by token ->
revert -> release. The lock is held while a stream is consumed, so close a stream you abandon
(`contextlib.closing`, or just exhaust it); `lock_busy` tells a UI to show "queued".
A manual decode loop with the KV cache (never HookedTransformer, DESIGN.md speeds), greedy or
seeded sampling, bounded by `Settings.limits` (max new tokens, wall-clock timeout).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from workbench.config import Limits, Settings
from workbench.edits.overlay import Overlay, maybe_overlay

StopReason = Literal["eos", "max_new_tokens", "time_limit"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. `greedy` ignores the rest; sampling is seeded."""

    max_new_tokens: int | None = None  # None = Settings.limits.max_new_tokens
    greedy: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0


@dataclass
class GenerationResult:
    """The outcome of one generation (filled in as a stream runs)."""

    prompt: str
    edited: bool
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    stop_reason: StopReason | None = None
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return len(self.token_ids) / self.seconds if self.seconds > 0 else 0.0


def validate_prompt(prompt: str, limits: Limits) -> str:
    """Return the prompt if usable, else raise ValueError with a sentence the user can act on."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("The prompt is empty; type some text to continue.")
    if len(prompt) > limits.max_prompt_chars:
        raise ValueError(
            f"The prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}. Shorten it."
        )
    return prompt


def _check_params(params: SamplingParams, limits: Limits) -> int:
    n = limits.max_new_tokens if params.max_new_tokens is None else int(params.max_new_tokens)
    if not 1 <= n <= limits.max_new_tokens:
        raise ValueError(f"max_new_tokens must be between 1 and {limits.max_new_tokens} (got {n}).")
    if not params.greedy:
        if params.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling (got {params.temperature}); or use greedy.")
        if params.top_k is not None and params.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {params.top_k}).")
    return n


def lock_busy(bundle: Any) -> bool:
    """True when another thread holds the model lock (the caller would wait: show 'queued')."""
    got = bundle.lock.acquire(blocking=False)
    if got:
        bundle.lock.release()
    return not got


def _eos_ids(bundle: Any) -> set[int]:
    ids: set[int] = set()
    for src in (getattr(bundle.hf_model, "generation_config", None), bundle.hf_model.config):
        eos = getattr(src, "eos_token_id", None)
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, list | tuple):
            ids.update(int(e) for e in eos)
    if bundle.tokenizer.eos_token_id is not None:
        ids.add(int(bundle.tokenizer.eos_token_id))
    return ids


def _pick(logits: torch.Tensor, params: SamplingParams, gen: torch.Generator) -> int:  # logits [vocab]
    if params.greedy:
        return int(torch.argmax(logits))
    scaled = logits.float().cpu() / params.temperature
    if params.top_k is not None and params.top_k < scaled.numel():
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = torch.where(scaled < kth, torch.tensor(float("-inf")), scaled)
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=gen))


def stream_generate(
    bundle: Any,
    prompt: str,
    overlay: Overlay | None = None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    result: GenerationResult | None = None,
) -> Iterator[str]:
    """Yield new text pieces as they are decoded (base model if overlay is None).

    Validation happens before the lock is taken. Pass `result` to collect ids, stop reason and
    timing. The lock is held (and the overlay applied) until the stream ends or is closed.
    """
    settings = settings or Settings.from_env()
    limits = settings.limits
    validate_prompt(prompt, limits)
    max_new = _check_params(params, limits)
    res = result if result is not None else GenerationResult(prompt=prompt, edited=overlay is not None)
    res.edited = overlay is not None
    return _stream(bundle, prompt, overlay, params, max_new, limits.generation_timeout_s, res)


def _stream(
    bundle: Any,
    prompt: str,
    overlay: Overlay | None,
    params: SamplingParams,
    max_new: int,
    timeout_s: float,
    res: GenerationResult,
) -> Iterator[str]:
    tok = bundle.tokenizer
    eos = _eos_ids(bundle)
    gen = torch.Generator().manual_seed(int(params.seed))
    with maybe_overlay(bundle, overlay), torch.inference_mode():
        model = bundle.hf_model
        device = next(model.parameters()).device
        ids = tok(prompt, return_tensors="pt").input_ids.to(device)  # [1, pos]
        t0 = time.monotonic()
        past = None
        cur = ids
        emitted = ""
        res.stop_reason = "max_new_tokens"
        for _ in range(max_new):
            out = model(input_ids=cur, past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = _pick(out.logits[0, -1], params, gen)
            if nxt in eos:
                res.stop_reason = "eos"
                break
            res.token_ids.append(nxt)
            text = tok.decode(res.token_ids, skip_special_tokens=True)
            res.seconds = time.monotonic() - t0
            if not text.endswith("\ufffd") and len(text) > len(emitted):  # wait for whole characters
                piece, emitted = text[len(emitted) :], text
                res.text = emitted
                yield piece
            if time.monotonic() - t0 > timeout_s:
                res.stop_reason = "time_limit"
                break
            cur = torch.tensor([[nxt]], device=device)
        res.seconds = time.monotonic() - t0
        final = tok.decode(res.token_ids, skip_special_tokens=True)
        if len(final) > len(emitted) and final.startswith(emitted):
            res.text = final
            yield final[len(emitted) :]
        res.text = final


def generate(
    bundle: Any,
    prompt: str,
    overlay: Overlay | None = None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
) -> GenerationResult:
    """Generate to completion; returns text, token ids, stop reason and timing."""
    res = GenerationResult(prompt=prompt, edited=overlay is not None)
    for _ in stream_generate(bundle, prompt, overlay, params, settings, res):
        pass
    return res


def generate_pair(
    bundle: Any,
    prompt: str,
    overlay: Overlay | None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
) -> tuple[GenerationResult, GenerationResult]:
    """Base and edited generations with the same prompt, seed and limits, side by side."""
    base = generate(bundle, prompt, None, params, settings)
    edited = generate(bundle, prompt, overlay, params, settings)
    return base, edited
