"""Write small GGUF files for tests: a float32 GGUF of a tiny Llama checkpoint folder, laid out
the way llama.cpp's convert_hf_to_gguf.py writes one, and headers of other families. Imported by
name (tests/conftest.py puts tests/ on sys.path) from tests/unit and tests/ui."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def llama_cpp_permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's row order for q_proj/k_proj (convert_hf_to_gguf.py's LlamaModel.permute):
    each head's rotary halves interleaved. transformers' GGUF loader undoes it."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def byte_level_vocabulary(tokenizer_json: dict) -> tuple[list[str], list[int], list[str]]:
    """(tokens by id, llama.cpp token types, merges as 'a b') of a byte-level BPE tokenizer.json;
    its added special tokens are CONTROL tokens, as llama.cpp marks them."""
    from gguf import TokenType

    vocab = dict(tokenizer_json["model"]["vocab"])
    special = {t["content"] for t in tokenizer_json["added_tokens"] if t["special"]}
    vocab.update({t["content"]: t["id"] for t in tokenizer_json["added_tokens"]})
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    assert all(tokens), "token ids are not contiguous"
    types = [int(TokenType.CONTROL if t in special else TokenType.NORMAL) for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer_json["model"]["merges"]]
    return tokens, types, merges


def write_llama_gguf(folder: Path, out: Path) -> Path:
    """A float32 GGUF of the Llama checkpoint in `folder` (config.json, model.safetensors and a
    byte-level BPE tokenizer.json), with the metadata transformers' GGUF loader reads."""
    from gguf import MODEL_ARCH, GGUFWriter, LlamaFileType, get_tensor_name_map
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text())
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokens, types, merges = byte_level_vocabulary(tokenizer)
    n_layers, n_head = config["num_hidden_layers"], config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads") or n_head
    rope = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0))
    writer = GGUFWriter(out, "llama")
    writer.add_name("tiny llama")
    writer.add_file_type(LlamaFileType.ALL_F32)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_block_count(n_layers)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.get("head_dim") or config["hidden_size"] // n_head)
    writer.add_rope_freq_base(float(rope))
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for role in ("bos", "eos"):
        if config.get(f"{role}_token_id") is not None:
            getattr(writer, f"add_{role}_token_id")(config[f"{role}_token_id"])
    writer.add_add_bos_token(True)
    names = get_tensor_name_map(MODEL_ARCH.LLAMA, n_layers)
    for hf_name, weights in sorted(load_file(folder / "model.safetensors").items()):
        base, suffix = hf_name.rsplit(".", 1)
        data = weights.astype(np.float32)
        if base.endswith("q_proj"):
            data = llama_cpp_permute(data, n_head, n_head)
        elif base.endswith("k_proj"):
            data = llama_cpp_permute(data, n_head, n_kv)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", data)
    _finish(writer)
    return out


def write_header_only_gguf(out: Path, architecture: str, dtype: type = np.float32) -> Path:
    """A valid GGUF of `architecture` with one small tensor of `dtype` and no model metadata:
    enough for the header check, and nothing a converter could load."""
    from gguf import GGUFWriter

    writer = GGUFWriter(out, architecture)
    writer.add_name(f"tiny {architecture}")
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=dtype))
    _finish(writer)
    return out


def _finish(writer: object) -> None:
    writer.write_header_to_file()  # type: ignore[attr-defined]
    writer.write_kv_data_to_file()  # type: ignore[attr-defined]
    writer.write_tensors_to_file()  # type: ignore[attr-defined]
    writer.close()  # type: ignore[attr-defined]


def gguf_reader_view(path: Path) -> tuple[dict, list[tuple[str, str, int, int]]]:
    """(metadata with arrays as their lengths, tensor table) as gguf.GGUFReader reads them: what
    workbench.models.gguf_header.read_header must return."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(path)
    metadata = {key: len(field.data) if field.types[0] == GGUFValueType.ARRAY else field.contents()
                for key, field in reader.fields.items() if not key.startswith("GGUF.")}
    tensors = [(t.name, t.tensor_type.name, int(t.data_offset), int(t.n_bytes)) for t in reader.tensors]
    return metadata, tensors


def header_view(path: Path) -> tuple[dict, list[tuple[str, str, int, int]]]:
    """The same view from the workbench's header reader."""
    from workbench.models.gguf_header import read_header

    header = read_header(path)
    return header.metadata, [(t.name, t.tensor_type, t.offset, t.n_bytes) for t in header.tensors]
