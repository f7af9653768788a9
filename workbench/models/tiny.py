"""A tiny randomly initialised Gemma 3 with a small BPE tokenizer, saved as a local HF folder.

Unit tests and UI tests use it: same architecture (gated GELU MLP, pre/post-FFN RMSNorms,
tied embeddings, sliding + full attention) at a size that runs in milliseconds. It goes
through exactly the same local-folder loading path as any other checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from workbench.models.build_once import build_once


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


def tiny_dir(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    return models_dir / f"tiny-gemma3-v{cfg.vocab_size}-d{cfg.d_model}-l{cfg.n_layers}-s{cfg.seed}"


def build_tiny_checkpoint(models_dir: Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Build (once) a tiny Gemma 3 checkpoint folder with safetensors weights and a tokenizer."""
    return build_once(tiny_dir(models_dir, cfg), lambda tmp: _build_into(tmp, cfg))


def _build_into(tmp: Path, cfg: TinyConfig) -> None:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

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
    n_layers = cfg.n_layers
    layer_types = ["full_attention" if (i + 1) % 4 == 0 else "sliding_attention" for i in range(n_layers)]
    hf_cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=cfg.d_model,
        intermediate_size=cfg.d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=1,
        head_dim=cfg.d_head,
        max_position_embeddings=512,
        sliding_window=64,
        layer_types=layer_types,
        architectures=["Gemma3ForCausalLM"],
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(cfg.seed)
    model = Gemma3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        # Random norm weights so the gain-aware code paths are exercised (Gemma multiplies by 1+w).
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                p.normal_(0.0, 0.3)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
