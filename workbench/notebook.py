"""The notebook API: `import workbench as wb`, then a few lines per step.

    import workbench as wb

    model = wb.load()                                   # the embedded Gemma 3 270M (or "tiny", a folder)
    edit = wb.erase(model, "Harry Potter", method="ablate", score=False)
    # ... or by hand:
    edit = wb.edit(model, [wb.AblateValueVectors(layer=6, neurons=[12, 40])], name="two rows")
    base, edited = wb.preview(model, "Harry Potter is a", edit, max_new_tokens=100)
    acts = wb.capture(model, ["Harry Potter is a"], ["blocks.6.hook_mlp_out"], edit=edit)
    ids = model.tokenizer("Harry Potter is a", return_tensors="pt").input_ids
    with model.edited(edit):                            # any forward pass of this thread, HF or bridge
        logits, cache = model.bridge.run_with_cache(ids)
    card = wb.score(model, "Harry Potter", edit)        # the scorecard, base and edited in one pass
    edit.save("hp.json")                                # the spec (and its .safetensors payload)
    again = wb.Edit.load(model, "hp.json")

Everything here calls the same library functions as the CLI and the pages (erase, compile_spec,
generate_pair, evaluate, save_spec/load_spec); nothing is computed differently. The only
difference is that notebook generations are not capped at the server's per-request token limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench.adapters import Adapter
from workbench.benchmark.scorecard import EvalOptions, Scorecard, evaluate
from workbench.config import Settings
from workbench.edits.compile import compile_spec
from workbench.edits.spec import EditSpec, ModelRef, SaeRef, load_spec, save_spec
from workbench.generate import SamplingParams, generate_pair
from workbench.models import ModelBundle, load_bundle, parse_source
from workbench.models.hooks import capture as capture_hooks
from workbench.progress import NullProgress, Progress, TqdmProgress
from workbench.sae.sources import spec_sae_loader

NOTEBOOK_MAX_NEW_TOKENS = 2048  # a notebook is one user: no server-wide cap


@dataclass(repr=False)  # __repr__ below: one line, never the tensors or the model
class Edit:
    """An edit of one model: its spec (what is shared), payload tensors, and the compiled
    adapter (what runs). `result` keeps the erase run (candidates, fact set) when there was one.
    `with model.edited(edit):` applies it to any forward pass this thread runs in the block."""

    model: ModelBundle
    spec: EditSpec
    payload: dict[str, torch.Tensor] = field(default_factory=dict)
    adapter: Adapter | None = None
    result: Any = None  # workbench.methods.erase.EraseResult for edits made by `erase`

    def __post_init__(self) -> None:
        if self.adapter is None:
            # the SAE folder of the cache the model was loaded from (wb.load(cache_dir=...)),
            # not whatever the environment says now
            settings = getattr(self.model, "settings", None) or Settings.from_env()
            self.adapter = compile_spec(self.spec, self.model, payload=self.payload or None,
                                        sae_loader=spec_sae_loader(settings.saes_dir))

    def __repr__(self) -> str:
        kinds: dict[str, int] = {}
        for op in self.spec.operations:
            kinds[op.kind] = kinds.get(op.kind, 0) + 1
        ops = ", ".join(k if n == 1 else f"{k} x{n}" for k, n in kinds.items())
        name = self.spec.name if len(self.spec.name) <= 60 else self.spec.name[:57] + "..."
        layers = _ranges(self.adapter.layers if self.adapter is not None else [])
        return f"Edit({name!r}, ops=[{ops}], layers=[{layers}])"

    @property
    def scorecard(self) -> Scorecard | None:
        """The scorecard `erase` measured (None when it ran with score=False)."""
        return getattr(self.result, "scorecard", None)

    def save(self, path: str | Path) -> Path:
        """Write the spec JSON (and, when the edit has tensors, `<name>.payload.safetensors` beside it)."""
        save_spec(self.spec, Path(path), self.payload or None)
        return Path(path)

    @classmethod
    def load(cls, model: ModelBundle, path: str | Path) -> Edit:
        """Read a spec (and its payload), check it fits `model`, and compile it."""
        spec, payload = load_spec(Path(path))
        return cls(model=model, spec=spec, payload=payload)


def load(source: str | None = None, *, cache_dir: str | Path | None = None, device: str | None = None,
         dtype: str | None = None, tune_process: bool = False) -> ModelBundle:
    """Load a model: 'embedded', 'tiny', a local Hugging Face folder, a .gguf file, or 'hub:<id>'
    (default: $WORKBENCH_MODEL, else 'embedded', as the CLI and the app); `device` 'cpu' | 'cuda' |
    'auto', `dtype` 'float32' | 'bfloat16' (default: the settings'). The bundle keeps the settings
    (`model.settings`), so edits made on it later read the same cache.

    `tune_process=True` applies the app's speed and memory settings, which reach beyond the model:
    `MKL_DISABLE_FAST_MM=1` in `os.environ` and glibc's `mallopt` for the whole process (for its
    life), a measured CPU unembedding in place of the model's `lm_head.forward`, the tokenizer's
    unused vocabulary tables dropped (workbench/models/process.py). Off by default: loading leaves
    your process as it was; none of them changes a result."""
    overrides: dict[str, Any] = {}
    if source is not None:
        overrides["model_source"] = source
    if device is not None:
        overrides["device"] = device
    if dtype is not None:
        overrides["dtype"] = dtype
    if cache_dir is not None:
        overrides["cache_dir"] = Path(cache_dir).expanduser().resolve()
    settings = Settings.from_env(**overrides)
    return load_bundle(parse_source(settings.model_source), settings, tune_process=tune_process)


def capture(model: ModelBundle, texts: str | Sequence[str], hooks: str | Sequence[str],
            edit: Edit | EditSpec | Adapter | None = None) -> dict[str, torch.Tensor]:
    """Activations at TransformerLens hook names ('blocks.6.mlp.hook_post', ...) for `texts`, with
    `edit` applied when given (the same activations `model.bridge.run_with_cache` gives inside
    `with model.edited(edit):`).

    Returns {hook name: float32 tensor}, detached, in the hook's own layout: [batch, pos, ...] for
    residual, MLP and per-head hooks (attention patterns are [batch, head, pos, pos]). batch is
    len(texts); pos is the longest text's token count, BOS included. The batch is right-padded
    and the padded positions are INCLUDED: row i's first n_i positions are text i's tokens
    (n_i = len(model.tokenizer(texts[i]).input_ids)), the rest are the model's activations on
    pad tokens, which are meaningless. Padding is masked out of attention and comes after the
    text, so it never changes a real position: row i's first n_i positions equal capturing
    text i alone. Slice them off (or mask by n_i) before averaging over positions.

    Built on `workbench.models.hooks.capture`: this thread only, and the pass stops after the
    last layer any hook needs."""
    from workbench.lenses.tokens import pad_id, pad_ids

    batch = [texts] if isinstance(texts, str) else list(texts)
    names = [hooks] if isinstance(hooks, str) else list(hooks)
    if not batch or not names:
        raise ValueError("capture needs at least one text and one hook name.")
    seqs = [list(model.tokenizer(text)["input_ids"]) for text in batch]
    lengths = torch.tensor([len(s) for s in seqs])
    ids = pad_ids(seqs, pad_id(model.tokenizer))
    mask = (torch.arange(ids.shape[1])[None, :] < lengths[:, None]).long()
    with torch.no_grad(), model.edited(edit):
        return capture_hooks(model.bridge, ids.to(model.device), names, attention_mask=mask.to(model.device))


def erase(model: ModelBundle, concept: str, method: str | None = None, *, score: bool = True,
          progress: bool | Progress = True, about: str = "", as_name: bool = False, **options: Any) -> Edit:
    """Erase a concept with one method: a corpus title, or any name (`about`: one line on what it
    is; `as_name`: erase the name as given where close titles exist). `options` are EraseOptions
    fields (optimise=OptimiseConfig(steps=...), ablate=AblateConfig(...), ...)."""
    from workbench.corpus import load_wiki
    from workbench.methods.erase import DEFAULT_METHOD, EraseOptions
    from workbench.methods.erase import erase as run_erase

    bar = _progress(progress)
    try:
        result = run_erase(model, load_wiki("en"), concept, method or DEFAULT_METHOD, bar,
                           options=EraseOptions(score=score, **options), about=about, as_name=as_name)
    finally:
        bar.close()
    return Edit(model=model, spec=result.spec, payload=result.payload, result=result)


def edit(model: ModelBundle, operations: Sequence[Any], *, name: str = "hand-made edit",
         sae: SaeRef | None = None, payload: dict[str, torch.Tensor] | None = None, notes: str = "") -> Edit:
    """An edit built by hand from operations (`wb.AblateValueVectors(...)`, ...), bound to `model`."""
    spec = EditSpec(name=name, model=ModelRef(id=model.model_id, weights_sha256=model.weights_sha256),
                    sae=sae, operations=list(operations), notes=notes)
    return Edit(model=model, spec=spec, payload=dict(payload or {}))


def preview(model: ModelBundle, prompt: str, edit: Edit | None = None, *, max_new_tokens: int = 64,
             greedy: bool = True, temperature: float = 1.0, top_k: int | None = None, seed: int = 0,
             chat_template: bool = False) -> tuple[str, str]:
    """(base text, edited text) for one prompt, decoded side by side in one batch of 2. (Named
    `preview`, as on the Edit page, because `workbench.generate` is the module it calls.)
    `chat_template`: the prompt as one user turn of the tokenizer's chat template (instruct models)."""
    params = SamplingParams(max_new_tokens=max_new_tokens, greedy=greedy, temperature=temperature,
                            top_k=top_k, seed=seed)
    base, edited = generate_pair(model, prompt, None if edit is None else edit.adapter, params,
                                 max_new_cap=NOTEBOOK_MAX_NEW_TOKENS, chat_template=chat_template)
    return base.text, edited.text


def score(model: ModelBundle, concept: str, edit: Edit | None = None, *, progress: bool | Progress = True,
          options: EvalOptions | None = None) -> Scorecard:
    """The scorecard of `edit` on `concept` (forget, neighbours, general, coherence; verdicts)."""
    bar = _progress(progress)
    try:
        return evaluate(model, concept, None if edit is None else edit.adapter, options=options or EvalOptions(),
                        progress=bar)
    finally:
        bar.close()


def _ranges(values: Iterable[int]) -> str:
    """'0-3, 6' for [0, 1, 2, 3, 6]: layer lists stay short in reprs."""
    out: list[str] = []
    for v in sorted(set(values)):
        if out and out[-1].split("-")[-1] == str(v - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{v}"
        else:
            out.append(str(v))
    return ", ".join(out)


def _progress(progress: bool | Progress) -> Any:
    if progress is True:
        return TqdmProgress()
    if progress is False:
        return NullProgress()
    return progress
