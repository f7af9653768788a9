"""SAE recipe sweeps on cached activations: one forward pass over the corpus, then many SAELens
trainers on the same tokens.

On 2 CPU cores the forward pass up to the layer costs about twice the SAE's own training, so
the sweep collects the activations of every hook once (`collect_hook_activations`, fp16 in
memory) and trains each `SAETrainConfig` on them with the same `train_on_activations` that
`train_sae` uses (same tokens, same order for every recipe), then scores it on held-out
activations (`sae_quality`) and by the language-model loss with the SAE spliced in
(`ce_recovered`). The recipe that wins goes back into `SAETrainConfig`'s defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from workbench.lenses.tokens import pad_id
from workbench.models.hooks import hook_point, taps
from workbench.progress import NULL_PROGRESS, Progress
from workbench.sae.train import (
    SAEMetrics,
    SAETrainConfig,
    collect_hook_activations,
    sae_quality,
    train_on_activations,
)


@torch.no_grad()
def _replace_output(fn: Callable[[torch.Tensor, Any], torch.Tensor], _module: Any, _inputs: Any,
                    out: torch.Tensor) -> torch.Tensor:
    """A tap that returns fn(output): the module's output replaced for this forward."""
    return fn(out, None)


def ce_recovered(bundle: Any, sae: Any, hook_name: str, texts: Sequence[str], max_tokens: int = 8192,
                 context: int = 128) -> dict[str, float]:
    """Next-token loss of the model clean, with the hook's activation replaced by the SAE's
    reconstruction, and with it zeroed; recovered = (zero - spliced) / (zero - clean).

    Texts are packed into unpadded windows of `context` tokens (BOS first), so every position
    is a real prediction."""
    tok = bundle.tokenizer
    ids: list[int] = []
    for text in texts:
        ids += tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= max_tokens:
            break
    width = context - 1
    n_win = max(1, min(len(ids), max_tokens) // width)
    first = tok.bos_token_id if tok.bos_token_id is not None else pad_id(tok)  # Qwen/OLMo ship no BOS
    windows = torch.tensor([[first] + ids[i * width:(i + 1) * width] for i in range(n_win)])

    def splice(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return sae.decode(sae.encode(act.float())).to(act.dtype)

    def zero(act: torch.Tensor, hook: Any) -> torch.Tensor:
        return torch.zeros_like(act)

    totals = {"clean": 0.0, "spliced": 0.0, "zero": 0.0}
    point = hook_point(bundle.bridge, hook_name)
    for start in range(0, n_win, 4):
        batch = windows[start:start + 4]
        totals["clean"] += float(bundle.bridge(batch, return_type="loss")) * len(batch)
        for key, fn in (("spliced", splice), ("zero", zero)):
            with taps({point: partial(_replace_output, fn)}):  # this thread only
                totals[key] += float(bundle.bridge(batch, return_type="loss")) * len(batch)
    out = {k: v / n_win for k, v in totals.items()}
    gap = out["zero"] - out["clean"]
    out["recovered"] = (out["zero"] - out["spliced"]) / gap if abs(gap) > 1e-9 else float("nan")
    out["tokens"] = float(n_win * width)
    return out


@dataclass
class SweepRow:
    config: SAETrainConfig
    metrics: SAEMetrics
    ce: dict[str, float]
    seconds: float
    sae: Any

    def as_dict(self) -> dict[str, Any]:
        c = self.config
        return {"hook": c.hook_name, "width": c.width, "k": c.k, "lr": c.lr, "batch": c.train_batch_tokens,
                "tokens": c.tokens, "aux": c.aux_loss_coefficient, "dead_window": c.dead_feature_window,
                "b_dec_init": c.b_dec_init,
                "ev": self.metrics.explained_variance, "l0": self.metrics.l0, "dead": self.metrics.dead_fraction,
                "dense": self.metrics.dense_fraction, "ce_recovered": self.ce.get("recovered"),
                "ce_clean": self.ce.get("clean"), "ce_spliced": self.ce.get("spliced"), "seconds": round(self.seconds, 1)}


def sweep(
    bundle: Any, configs: Sequence[SAETrainConfig], train_texts: Sequence[str], held_out: Sequence[str],
    cache_tokens: int, eval_tokens: int = 20_000, ce_tokens: int = 4096, progress: Progress = NULL_PROGRESS,
) -> Iterator[SweepRow]:
    """Train and score every config on the same cached tokens (one forward pass per hook set).
    Configs train for cfg.tokens tokens, cycling the cache when it is shorter. Yields rows as
    they finish so a caller can print or store them."""
    hooks = list(dict.fromkeys(c.hook_name for c in configs))
    context = configs[0].context_size
    progress.stage(f"collecting activations of {', '.join(hooks)}", total=cache_tokens, unit="tok")
    train_acts = collect_hook_activations(bundle, hooks, train_texts, cache_tokens, context, progress=progress,
                                          dtype=torch.float16)
    progress.stage("held-out activations", total=eval_tokens, unit="tok")
    eval_acts = collect_hook_activations(bundle, hooks, held_out, eval_tokens, context, progress=progress)
    for cfg in configs:
        progress.stage(f"training {cfg.hook_name} w{cfg.width} k{cfg.k} lr{cfg.lr:g} b{cfg.train_batch_tokens}",
                       total=cfg.tokens, unit="tok")
        sae, losses, seconds = train_on_activations(train_acts[cfg.hook_name], cfg, progress)
        metrics = sae_quality(sae, eval_acts[cfg.hook_name])
        metrics.train_seconds, metrics.train_tokens = round(seconds, 1), cfg.tokens
        metrics.loss_first, metrics.loss_last = (losses[0], losses[-1]) if losses else (None, None)
        ce = ce_recovered(bundle, sae, cfg.hook_name, held_out, max_tokens=ce_tokens) if ce_tokens > 0 else {}
        yield SweepRow(cfg, metrics, ce, seconds, sae)
