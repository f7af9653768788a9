"""Tiny randomly initialised models with their family's real tokenizer kind, saved as local HF folders.

Unit tests and UI tests use the tiny Gemma 3: the embedded model's architecture (gated GELU
MLP, pre/post-FFN RMSNorms, tied embeddings, sliding + full attention) at a size that runs in
milliseconds. `family` builds the same size in every other family of the architecture map
(`python -m workbench --model tiny:gpt2 ...`), so each goes through prepare, erase and the
exports in the tests without a download. Every one loads through the local-folder path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.models.build_once import build_once
from workbench.models.layout import architecture_for


@dataclass(frozen=True)
class TinyConfig:
    vocab_size: int = 2048
    d_model: int = 64
    d_mlp: int = 128
    n_layers: int = 4
    n_heads: int = 2
    d_head: int = 32
    seed: int = 0
    tokenizer_docs: int = 800
    family: str = "gemma3"  # a key of FAMILIES
    # a corpus title the random model is then trained on until it completes that article's
    # sentences: a tiny model that "knows" one concept, so the erasure methods, which need the
    # base model to predict a concept's facts, have something to erase ('' = random weights only)
    taught: str = ""
    teach_steps: int = 80


FAMILIES = ("gemma3", "gemma2", "llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gpt2", "gpt_neox")


def tiny_dir(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    # t2: each family's own tokenizer kind (before, every family shared Gemma's)
    taught = f"-taught-{cfg.taught.lower().replace(' ', '_')}-{cfg.teach_steps}" if cfg.taught else ""
    return models_dir / f"tiny-{cfg.family}-t2-v{cfg.vocab_size}-d{cfg.d_model}-l{cfg.n_layers}-s{cfg.seed}{taught}"


def build_tiny_checkpoint(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Build (once) a tiny checkpoint folder of `cfg.family` with safetensors weights and a tokenizer."""
    if cfg.family not in FAMILIES:
        raise ValueError(f"No tiny model of family {cfg.family!r}; choose one of {', '.join(FAMILIES)}.")
    return build_once(tiny_dir(models_dir, cfg), lambda tmp: _build_into(tmp, cfg))


@dataclass(frozen=True)
class TokenizerSpec:
    """A family's real tokenizer kind and special tokens, mirrored at a small vocabulary.

    `bos`/`eos`/`pad`/`unk` are the token strings the real tokenizer uses (None where it has
    none: GPT-2, Llama 3 and GPT-NeoX ship no pad token; Qwen, OLMo and GPT-2 add no BOS);
    `add_bos` says whether a BOS is put before every text."""

    kind: str  # 'byte_level' (GPT-2 style byte-to-unicode BPE) or 'sentencepiece' ('▁' for spaces)
    eos: str
    bos: str | None = None
    pad: str | None = None
    unk: str | None = None
    add_bos: bool = False
    extra: tuple[str, ...] = ()  # other special tokens the real vocabulary has (chat markers)


_GEMMA = TokenizerSpec("sentencepiece", eos="<eos>", bos="<bos>", pad="<pad>", unk="<unk>", add_bos=True)
TOKENIZERS: dict[str, TokenizerSpec] = {
    "gemma3": _GEMMA,
    "gemma2": _GEMMA,
    # Mistral (v0.1) shares Llama 2's SentencePiece vocabulary layout: <unk> <s> </s>, no pad
    "mistral": TokenizerSpec("sentencepiece", eos="</s>", bos="<s>", unk="<unk>", add_bos=True),
    # Llama 3: byte-level BPE, BOS on every text, no pad token
    "llama": TokenizerSpec("byte_level", eos="<|end_of_text|>", bos="<|begin_of_text|>", add_bos=True,
                           extra=("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
    # Qwen 2/3: byte-level BPE, no BOS, <|endoftext|> pads and ends
    "qwen2": TokenizerSpec("byte_level", eos="<|endoftext|>", pad="<|endoftext|>", extra=("<|im_start|>", "<|im_end|>")),
    "qwen3": TokenizerSpec("byte_level", eos="<|endoftext|>", pad="<|endoftext|>", extra=("<|im_start|>", "<|im_end|>")),
    # OLMo: GPT-NeoX-style byte-level BPE, no BOS, a pad token of its own
    "olmo": TokenizerSpec("byte_level", eos="<|endoftext|>", pad="<|padding|>"),
    "olmo2": TokenizerSpec("byte_level", eos="<|endoftext|>", pad="<|pad|>"),
    # GPT-2 and GPT-NeoX (Pythia): one <|endoftext|> for BOS/EOS/UNK, no pad, no BOS added
    "gpt2": TokenizerSpec("byte_level", eos="<|endoftext|>", bos="<|endoftext|>", unk="<|endoftext|>"),
    "gpt_neox": TokenizerSpec("byte_level", eos="<|endoftext|>", bos="<|endoftext|>", extra=("<|padding|>",)),
}


def _build_into(tmp: Path, cfg: TinyConfig) -> None:
    tok = build_tokenizer(TOKENIZERS[cfg.family], cfg.vocab_size, cfg.tokenizer_docs)
    torch.manual_seed(cfg.seed)
    model = _random_model(cfg, tok).eval()
    with torch.no_grad():
        # Random norm weights so the gain-aware code paths are exercised (Gemma multiplies by
        # 1 + w, the others by w).
        centre = 1.0 - architecture_for(model.config.model_type).norm_offset  # gain ~ 1 either way
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.normal_(centre, 0.3)
    if cfg.taught:
        teach(model, tok, cfg.taught, cfg.teach_steps)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)


def teach(model: torch.nn.Module, tok: Any, title: str, steps: int, lr: float = 5e-3) -> list[float]:
    """Train every weight of `model` on the sentences of the corpus article `title` (plus as many
    sentences of other articles, so it keeps some general text) until it completes them.
    Returns the loss per step (the tests check that it fell)."""
    from workbench.corpus.wiki import load_wiki
    from workbench.lenses.tokens import pad_id, pad_ids

    corpus = load_wiki("en")
    article = corpus.document_for(title).text
    others = [d.text[:300] for d in corpus.sample(8, seed=1) if d.title != title]
    texts = [s for s in article.split(". ") if len(s) > 20] + others
    seqs = [tok(t, truncation=True, max_length=64)["input_ids"] for t in texts]  # no pad token needed
    ids = pad_ids(seqs, pad_id(tok))
    mask = torch.zeros_like(ids)
    for r, s in enumerate(seqs):
        mask[r, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


def build_tokenizer(spec: TokenizerSpec, vocab_size: int, n_docs: int) -> Any:
    """A fast tokenizer of the spec's kind, trained with the `tokenizers` library on the first
    `n_docs` articles of the embedded corpus (a small vocabulary, so the tests stay fast)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    from workbench.corpus.wiki import load_wiki

    specials = list(dict.fromkeys(t for t in (spec.pad, spec.eos, spec.bos, spec.unk, *spec.extra) if t))
    if spec.kind == "sentencepiece":
        tk = Tokenizer(models.BPE(unk_token=spec.unk, byte_fallback=False))
        tk.normalizer = normalizers.Replace(" ", "▁")
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    elif spec.kind == "byte_level":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        raise ValueError(f"Unknown tokenizer kind {spec.kind!r}.")
    tk.train_from_iterator(load_wiki("en").texts()[:n_docs], trainer=trainer)
    if spec.add_bos and spec.bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{spec.bos} $A", pair=f"{spec.bos} $A {spec.bos} $B",
            special_tokens=[(spec.bos, tk.token_to_id(spec.bos))])
    elif spec.kind == "byte_level":
        tk.post_processor = processors.ByteLevel(trim_offsets=False)
    named = {f"{role}_token": value for role, value in
             (("bos", spec.bos), ("eos", spec.eos), ("pad", spec.pad), ("unk", spec.unk)) if value}
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, **named)
    if spec.extra:
        tok.add_special_tokens({"additional_special_tokens": list(spec.extra)})
    return tok


def _random_model(cfg: TinyConfig, tok: Any) -> Any:  # a transformers PreTrainedModel
    """A randomly initialised causal LM of `cfg.family` (special token ids as the tiny tokenizer's)."""
    import transformers as tf

    vocab = len(tok)
    ids = {"pad_token_id": tok.pad_token_id, "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id}
    if cfg.family == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(
            vocab_size=vocab, n_embd=cfg.d_model, n_inner=cfg.d_mlp, n_layer=cfg.n_layers, n_head=cfg.n_heads,
            n_positions=512, architectures=["GPT2LMHeadModel"], **ids))
    if cfg.family == "gpt_neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(
            vocab_size=vocab, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
            num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, max_position_embeddings=512,
            architectures=["GPTNeoXForCausalLM"], **ids))
    common = dict(vocab_size=vocab, hidden_size=cfg.d_model, intermediate_size=cfg.d_mlp,
                  num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=1,
                  max_position_embeddings=512, **ids)
    if cfg.family == "gemma3":
        layer_types = ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(cfg.n_layers)]
        return tf.Gemma3ForCausalLM(tf.Gemma3TextConfig(
            **common, head_dim=cfg.d_head, sliding_window=64, layer_types=layer_types,
            architectures=["Gemma3ForCausalLM"], tie_word_embeddings=True))
    classes = {
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {"head_dim": cfg.d_head, "sliding_window": 64}),
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
        "qwen3": (tf.Qwen3Config, tf.Qwen3ForCausalLM, {"head_dim": cfg.d_head}),
        "olmo": (tf.OlmoConfig, tf.OlmoForCausalLM, {}),
        "olmo2": (tf.Olmo2Config, tf.Olmo2ForCausalLM, {}),
    }
    config_cls, model_cls, extra = classes[cfg.family]
    return model_cls(config_cls(**common, **extra, architectures=[model_cls.__name__]))
