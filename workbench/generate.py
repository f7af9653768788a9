"""Generation on the immutable base model: base and edited rows in one batched forward pass.

Every generation is a batch of rows; each row carries its own prompt, sampling parameters and
adapter (None = base), routed per row by `workbench.adapters.route`. So a side-by-side preview
is one batch of 2 (the same prompt, base and edited), and `PreviewBatcher` merges the rows of
several users' previews that overlap in time into one batch. Nothing takes a lock: the weights
are only read, and the adapter taps are scoped to the decoding thread.

A manual decode loop with the KV cache (never HookedTransformer: ~9x slower), left padding when
prompts differ in length, greedy or seeded sampling per row, bounded by `Settings.limits`.
A row may ask for its prompt to go through the tokenizer's chat template (`chat_template`, off
by default: base models have no chat use); the wrapping is `workbench.models.chat`'s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from workbench.adapters import Adapter, route
from workbench.config import Limits, Settings
from workbench.models.chat import check_chat_template, prompt_ids
from workbench.models.memory import trim_heap
from workbench.models.plain import plain_view

StopReason = Literal["eos", "max_new_tokens", "time_limit"]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. `greedy` ignores the rest; sampling is seeded per row."""

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


@dataclass
class RowRequest:
    """One row of a batched generation. `prompt` is the user's text; with `chat_template` the
    model receives it as one user turn of its tokenizer's chat template (models/chat.py)."""

    prompt: str
    adapter: Adapter | None
    params: SamplingParams
    max_new: int
    timeout_s: float
    result: GenerationResult
    chat_template: bool = False


def validate_prompt(prompt: str, limits: Limits) -> str:
    """Return the prompt if usable, else raise ValueError with a sentence the user can act on."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("The prompt is empty; type some text to continue.")
    if len(prompt) > limits.max_prompt_chars:
        raise ValueError(
            f"The prompt has {len(prompt)} characters; the limit is {limits.max_prompt_chars}. Shorten it."
        )
    return prompt


def _check_params(params: SamplingParams, limits: Limits, cap: int | None = None) -> int:
    cap = limits.max_new_tokens if cap is None else cap
    n = limits.max_new_tokens if params.max_new_tokens is None else int(params.max_new_tokens)
    if not 1 <= n <= cap:
        raise ValueError(f"max_new_tokens must be between 1 and {cap} (got {n}).")
    if not params.greedy:
        if params.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling (got {params.temperature}); or use greedy.")
        if params.top_k is not None and params.top_k < 1:
            raise ValueError(f"top_k must be >= 1 (got {params.top_k}).")
    return n


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


def request(
    prompt: str,
    adapter: Adapter | None = None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    *,
    max_new_cap: int | None = None,
    chat_template: bool = False,
) -> RowRequest:
    """A validated row (ValueError with a sentence for a bad prompt or parameters).

    `max_new_cap` lifts the server's token limit for library callers (notebooks, benches).
    `chat_template` sends the prompt as a chat turn; whether the tokenizer has a template is
    checked by the callers that hold the model (`check_chat_template`), before decoding."""
    limits = (settings or Settings.from_env()).limits
    validate_prompt(prompt, limits)
    n = _check_params(params, limits, max_new_cap)
    return RowRequest(prompt, adapter, params, n, limits.generation_timeout_s,
                      GenerationResult(prompt=prompt, edited=adapter is not None), chat_template)


@torch.inference_mode()
def left_padded(seqs: Sequence[Sequence[int]], pad: int, device: torch.device | str = "cpu",
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token id lists of any lengths as one left-padded batch.

    Returns ids [b, width], attention mask [b, width] (0 on padding) and position ids [b, width]
    that start at 0 on each row's first real token, so a padded row computes what it would alone."""
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + list(s) for s in seqs], device=device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)
    return ids, mask, (mask.cumsum(-1) - 1).clamp_min(0)


def decode_rows(
    bundle: Any, rows: Sequence[RowRequest], on_logits: Callable[[int, torch.Tensor], None] | None = None,
) -> Iterator[tuple[int, str]]:
    """Decode all rows as one batch; yields (row index, new text) as whole characters arrive.

    Prompts of different lengths are left-padded (attention mask and position ids follow the
    padding); a row with `chat_template` is tokenised through the template (models/chat.py).
    Finished rows ride along until every row is done. `on_logits(step, logits)` sees
    each step's next-token logits [b, vocab] (step 0 = after the prompt), for callers that
    score the prompt and continue it in the same passes."""
    tok, model = bundle.tokenizer, plain_view(bundle.hf_model)  # no bridge wrappers: ~20% of a step (models/plain.py)
    device = next(model.parameters()).device
    eos = _eos_ids(bundle)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids, mask, positions = left_padded([prompt_ids(tok, r.prompt, r.chat_template) for r in rows], pad,
                                       device)  # [b, width]
    gens = [torch.Generator().manual_seed(int(r.params.seed)) for r in rows]
    emitted = [""] * len(rows)
    done = [False] * len(rows)
    for r in rows:
        r.result.stop_reason = "max_new_tokens"
    t0 = time.monotonic()
    past: Any = None
    cur: torch.Tensor | None = ids
    logits: torch.Tensor | None = None
    adapters = [r.adapter for r in rows]
    try:
        for step in range(max(r.max_new for r in rows)):
            with route(bundle, adapters):
                out = model(input_ids=cur, attention_mask=mask, position_ids=positions, past_key_values=past,
                            use_cache=True, logits_to_keep=1)
            past, logits = out.past_key_values, out.logits[:, -1]  # [b, vocab]
            del out  # the step's logits ([b, vocab], 16.8 MB at 16 rows) must not live through the next forward
            if on_logits is not None:
                on_logits(step, logits)
            now = time.monotonic()
            nxt = [_pick(logits[i], r.params, gens[i]) if not done[i] else pad for i, r in enumerate(rows)]
            for i, r in enumerate(rows):
                if done[i]:
                    continue
                piece, done[i] = _take(tok, r, nxt[i], eos, emitted[i], now - t0)
                if piece:
                    emitted[i] += piece
                    yield i, piece
            logits = None
            if all(done):
                break
            cur = torch.tensor(nxt, device=device).unsqueeze(1)  # [b, 1]
            mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=device)], dim=1)
            positions = positions[:, -1:] + 1
        past = None  # the KV cache goes before the last pieces are handed out
        yield from _final_pieces(tok, rows, emitted, time.monotonic() - t0)
    finally:  # also when the reader stops early: the step's tensors, then their freed pages back to the OS
        past = cur = logits = None
        trim_heap()  # (models/memory.py)


def _take(tok: Any, r: RowRequest, t: int, eos: set[int], emitted: str, elapsed: float) -> tuple[str, bool]:
    """Row r's next token t: (the new whole characters it completes, whether the row is done).
    EOS ends the row without a token; otherwise the token is kept and the row ends at its
    token budget or time limit."""
    res = r.result
    if t in eos:
        res.stop_reason = "eos"
        return "", True
    res.token_ids.append(t)
    res.seconds = elapsed
    text = tok.decode(res.token_ids, skip_special_tokens=True)
    piece = ""
    if not text.endswith("\ufffd") and len(text) > len(emitted):  # wait for whole characters
        piece, res.text = text[len(emitted):], text
    if len(res.token_ids) >= r.max_new:
        return piece, True
    if elapsed > r.timeout_s:
        res.stop_reason = "time_limit"
        return piece, True
    return piece, False


def _final_pieces(tok: Any, rows: Sequence[RowRequest], emitted: list[str], elapsed: float
                  ) -> Iterator[tuple[int, str]]:
    """Each row's last text (characters held back while incomplete), and its final result."""
    for i, r in enumerate(rows):
        final = tok.decode(r.result.token_ids, skip_special_tokens=True)
        r.result.seconds = r.result.seconds or elapsed
        if len(final) > len(emitted[i]) and final.startswith(emitted[i]):
            yield i, final[len(emitted[i]):]
        r.result.text = final


def stream_generate(
    bundle: Any,
    prompt: str,
    adapter: Adapter | None = None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    result: GenerationResult | None = None,
    *,
    chat_template: bool = False,
) -> Iterator[str]:
    """Yield new text pieces of one generation (the base model when adapter is None).

    Validation happens before anything runs. Pass `result` to collect ids, stop reason, timing;
    `chat_template` sends the prompt as a chat turn (ValueError when the tokenizer has none)."""
    check_chat_template(bundle.tokenizer, chat_template)
    row = request(prompt, adapter, params, settings, chat_template=chat_template)
    if result is not None:
        result.edited = adapter is not None
        row.result = result
    return (piece for _, piece in decode_rows(bundle, [row]))


def _pair_rows(bundle: Any, prompt: str, adapter: Adapter | None, params: SamplingParams,
               settings: Settings | None, max_new_cap: int | None = None, chat_template: bool = False,
               ) -> list[RowRequest]:
    """The base row and the edited row of a side-by-side pair (same prompt, seed, limits and
    chat template). A template the tokenizer lacks is refused here, before the rows can join
    a batch shared with other users."""
    check_chat_template(bundle.tokenizer, chat_template)
    return [request(prompt, a, params, settings, max_new_cap=max_new_cap, chat_template=chat_template)
            for a in (None, adapter)]


def stream_pair(
    bundle: Any,
    prompt: str,
    adapter: Adapter | None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    results: tuple[GenerationResult, GenerationResult] | None = None,
    *,
    batcher: PreviewBatcher | None = None,
    chat_template: bool = False,
) -> Iterator[tuple[int, str]]:
    """Base (side 0) and edited (side 1) generations of one prompt as one batch of 2; yields
    (side, new text) as both stream side by side. With a `batcher`, the two rows also share
    their forward passes with other users' previews running at the same time. `chat_template`
    sends the prompt as a chat turn (ValueError when the tokenizer has no template)."""
    rows = _pair_rows(bundle, prompt, adapter, params, settings, chat_template=chat_template)
    if results is not None:
        for row, res in zip(rows, results, strict=True):
            res.edited = row.adapter is not None
            row.result = res
    if batcher is not None:
        return batcher.submit(rows)
    return decode_rows(bundle, rows)


def generate(
    bundle: Any,
    prompt: str,
    adapter: Adapter | None = None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    *,
    chat_template: bool = False,
) -> GenerationResult:
    """Generate to completion; returns text, token ids, stop reason and timing (`chat_template`:
    the prompt as a chat turn)."""
    res = GenerationResult(prompt=prompt, edited=adapter is not None)
    for _ in stream_generate(bundle, prompt, adapter, params, settings, res, chat_template=chat_template):
        pass
    return res


def generate_pair(
    bundle: Any,
    prompt: str,
    adapter: Adapter | None,
    params: SamplingParams = SamplingParams(),
    settings: Settings | None = None,
    *,
    max_new_cap: int | None = None,
    chat_template: bool = False,
) -> tuple[GenerationResult, GenerationResult]:
    """Base and edited generations with the same prompt, seed and limits, in one batch of 2
    (`chat_template`: the prompt as a chat turn, ValueError when the tokenizer has none)."""
    rows = _pair_rows(bundle, prompt, adapter, params, settings, max_new_cap, chat_template)
    for _ in decode_rows(bundle, rows):
        pass
    return rows[0].result, rows[1].result


# ---------------------------------------------------------------------------- cross-user batching
_DONE = object()


@dataclass
class _Ticket:
    rows: list[RowRequest]
    out: queue.Queue[Any] = field(default_factory=queue.Queue)


BATCHES_KEPT = 256


class PreviewBatcher:
    """Merges previews of many users that overlap in time into one batched decode.

    One worker thread per model decodes; requests that arrive while a batch runs wait for the
    next batch (`window_s` gathers requests that arrive together). This is the one serialised
    step on a shared server, and it is serialised on purpose: batching the rows is faster than
    running them side by side on the same cores. Each user's rows carry their own adapter."""

    def __init__(self, bundle: Any, *, window_s: float = 0.05, max_rows: int = 16) -> None:
        self.bundle, self.window_s, self.max_rows = bundle, window_s, max_rows
        self._pending: queue.Queue[_Ticket] = queue.Queue()
        self._worker = threading.Thread(target=self._run, name="preview-batcher", daemon=True)
        self._worker.start()
        # rows of the last BATCHES_KEPT batches (tests, the bench), and how many batches ran in all:
        # a server decodes for days, so the history is bounded
        self.batches: deque[int] = deque(maxlen=BATCHES_KEPT)
        self.n_batches = 0

    def submit(self, rows: list[RowRequest]) -> Iterator[tuple[int, str]]:
        """Queue rows; yields (row index within `rows`, new text) as the shared batch decodes."""
        ticket = _Ticket(list(rows))
        self._pending.put(ticket)
        return self._drain(ticket)

    @staticmethod
    def _drain(ticket: _Ticket) -> Iterator[tuple[int, str]]:
        while True:
            item = ticket.out.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _run(self) -> None:
        while True:
            first = self._pending.get()
            tickets = [first]
            deadline = time.monotonic() + self.window_s
            n = len(first.rows)
            while n < self.max_rows:
                try:
                    t = self._pending.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                tickets.append(t)
                n += len(t.rows)
            self._decode(tickets)

    def _decode(self, tickets: list[_Ticket]) -> None:
        owner: list[tuple[_Ticket, int]] = [(t, i) for t in tickets for i in range(len(t.rows))]
        rows = [t.rows[i] for t, i in owner]
        self.batches.append(len(rows))
        self.n_batches += 1
        try:
            for j, piece in decode_rows(self.bundle, rows):
                t, i = owner[j]
                t.out.put((i, piece))
        except Exception as err:  # handed to every waiting user as their own error  # noqa: BLE001
            for t in tickets:
                t.out.put(err)
        finally:
            for t in tickets:
                t.out.put(_DONE)
