"""Tiny randomly initialised models with a small BPE tokenizer, saved as local HF folders.

Unit tests and UI tests use the tiny Gemma 3: the embedded model's architecture (gated GELU
MLP, pre/post-FFN RMSNorms, tied embeddings, sliding + full attention) at a size that runs in
milliseconds. `family` builds the same size in every other family of the architecture map
(`python -m workbench --model tiny:gpt2 ...`), so each goes through prepare, erase and the
exports in the tests without a download. Every one loads through the local-folder path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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


FAMILIES = ("gemma3", "gemma2", "llama", "mistral", "qwen2", "qwen3", "olmo", "olmo2", "gpt2", "gpt_neox")


def tiny_dir(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    return models_dir / f"tiny-{cfg.family}-v{cfg.vocab_size}-d{cfg.d_model}-l{cfg.n_layers}-s{cfg.seed}"


def build_tiny_checkpoint(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Build (once) a tiny checkpoint folder of `cfg.family` with safetensors weights and a tokenizer."""
    if cfg.family not in FAMILIES:
        raise ValueError(f"No tiny model of family {cfg.family!r}; choose one of {', '.join(FAMILIES)}.")
    return build_once(tiny_dir(models_dir, cfg), lambda tmp: _build_into(tmp, cfg))


def _build_into(tmp: Path, cfg: TinyConfig) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    from workbench.corpus.wiki import load_wiki

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.normalizer = normalizers.Replace(" ", "▁")
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = BpeTrainer(vocab_size=cfg.vocab_size, special_tokens=specials, show_progress=False)
    corpus = load_wiki("en")
    tk.train_from_iterator(corpus.texts()[: cfg.tokenizer_docs], trainer=trainer)
    tk.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
    )
    torch.manual_seed(cfg.seed)
    model = _random_model(cfg, len(tok)).eval()
    with torch.no_grad():
        # Random norm weights so the gain-aware code paths are exercised (Gemma multiplies by
        # 1 + w, the others by w).
        centre = 1.0 - architecture_for(model.config.model_type).norm_offset  # gain ~ 1 either way
        for name, p in model.named_parameters():
            if name.endswith(("norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.normal_(centre, 0.3)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)


def _random_model(cfg: TinyConfig, vocab: int) -> torch.nn.Module:
    """A randomly initialised causal LM of `cfg.family` (token ids as the tiny tokenizer's)."""
    import transformers as tf

    ids = {"pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
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
