"""EditSpec: JSON round trip, clear errors, validation against a bundle, payload binding, schema drift."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from workbench.edits.spec import (
    SCHEMA_PATH,
    AblateValueVectors,
    EditSpec,
    ModelRef,
    OptimiseValueVectors,
    ProjectOutDirection,
    RemoveSaeFeatures,
    SaeRef,
    SpecError,
    ValueVectorDelta,
    json_schema,
    load_spec,
    sae_sha256,
    save_spec,
)
from workbench.models import ModelBundle


class FakeSae:
    def __init__(self, d_in: int, d_sae: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.W_enc = torch.randn(d_in, d_sae, generator=g)
        self.W_dec = torch.randn(d_sae, d_in, generator=g)


def make_spec(bundle_sha: str = "abc", **over: object) -> EditSpec:
    raw: dict[str, object] = {
        "schema": "workbench.edit/1",
        "name": "erase-test",
        "model": {"id": "tiny", "weights_sha256": bundle_sha},
        "operations": [
            {"kind": "ablate_value_vectors", "layer": 1, "neurons": [3, 5], "mode": "zero"},
            {"kind": "prune_neurons", "layer": 2, "neurons": [7]},
        ],
        "notes": "hello",
    }
    raw.update(over)
    return EditSpec.from_dict(raw)


def test_json_round_trip_keeps_everything() -> None:
    spec = make_spec()
    text = spec.to_json()
    assert json.loads(text)["schema"] == "workbench.edit/1"
    again = EditSpec.from_json(text)
    assert again == spec
    assert isinstance(again.operations[0], AblateValueVectors)
    assert again.created_by.startswith("workbench ")
    assert again.notes == "hello"


def test_spec_hash_ignores_notes_but_not_operations() -> None:
    a = make_spec()
    b = make_spec(notes="other")
    c = make_spec(operations=[{"kind": "prune_neurons", "layer": 2, "neurons": [8]}])
    assert a.sha256() == b.sha256()
    assert a.sha256() != c.sha256()


def test_chat_template_flag_round_trips_and_old_specs_load(tmp_path: Path) -> None:
    spec = make_spec(chat_template=True)
    saved = save_spec(spec, tmp_path / "chat.json")
    assert json.loads((tmp_path / "chat.json").read_text())["chat_template"] is True
    loaded, _ = load_spec(tmp_path / "chat.json")
    assert loaded.chat_template is True and loaded == saved
    # a spec written before the field existed has no such key: it loads, as made without the template
    old = json.loads(make_spec().to_json())
    del old["chat_template"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert load_spec(tmp_path / "old.json")[0].chat_template is False
    assert make_spec().chat_template is False
    # provenance, not what the edit does: the hash (export metadata) stays what it was
    assert spec.sha256() == make_spec().sha256()
    with pytest.raises(SpecError, match="chat_template"):
        make_spec(chat_template=[1])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "is a JSON list.*expected a JSON object"),
        ('{"schema": "workbench.edit/9", "name": "x", "model": {"id": "a", "weights_sha256": "b"}}', "Unsupported spec schema"),
    ],
    ids=["malformed", "not-object", "wrong-schema"],
)
def test_unreadable_specs_get_clear_errors(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        EditSpec.from_json(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x04K\x01.", r"is a Python pickle, not JSON.*never unpickles"),
        (b"PK\x03\x04" + b"\x00" * 20, r"zip archive \(a torch.save checkpoint is one\)"),
        (b"", r"is empty; expected the edit spec JSON"),
        (b"  \n", r"is empty"),
        (b"\xff\xfe\x00garbage", r"is binary, not UTF-8 text \(byte 0 is 0xff\)"),
        (b'{"a": 1}\x00\x00', r"holds NUL bytes"),
        (b"[]", r"is a JSON list \(one spec per file"),
        (b'"hello"', r"is a JSON string; expected a JSON object"),
    ],
    ids=["pickle", "torch-zip", "empty", "blank", "binary", "nul", "list", "string"],
)
def test_spec_files_that_are_not_a_spec_say_what_they_are(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "edit.json"
    path.write_bytes(data)
    with pytest.raises(SpecError, match=message) as err:
        load_spec(path)
    assert "edit.json" in str(err.value)  # names what was given


def test_a_safetensors_payload_given_as_the_spec_is_named(tmp_path: Path) -> None:
    from safetensors.torch import save

    from workbench.edits.spec import binary_kind

    data = save({"delta": torch.zeros(2, 3)})
    with pytest.raises(SpecError, match="is a safetensors file .*payload.*, not JSON"):
        EditSpec.from_json(data)
    # a header of 0x280 bytes starts with 80 02, the opening of a protocol-2 pickle: still safetensors
    header = b'{"a":' + b" " * (0x280 - 6) + b"}"
    assert len(header) == 0x280 and binary_kind((0x280).to_bytes(8, "little") + header) == "a safetensors file"
    assert binary_kind(b"\x80\x02}q\x00.") == "a Python pickle"


def test_unknown_kind_lists_the_known_kinds() -> None:
    with pytest.raises(SpecError, match=r"operations\[0\] has unknown kind 'erase_everything'.*prune_neurons"):
        make_spec(operations=[{"kind": "erase_everything", "layer": 1}])


def test_typo_in_a_field_is_an_error_naming_it() -> None:
    with pytest.raises(SpecError, match="neurnos"):
        make_spec(operations=[{"kind": "prune_neurons", "layer": 1, "neurnos": [1]}])
    with pytest.raises(SpecError, match="colour"):
        make_spec(colour="red")


def test_field_constraints() -> None:
    with pytest.raises(SpecError, match="tau"):
        make_spec(operations=[{"kind": "remove_sae_features", "layer": 1, "features": [1], "tau": 1.5, "mu": 4}])
    with pytest.raises(SpecError, match="feature_signs has 1 entries"):
        make_spec(
            operations=[
                {"kind": "remove_sae_features", "layer": 1, "features": [1, 2], "feature_signs": [-1], "mu": 4}
            ]
        )
    with pytest.raises(SpecError, match="forget_std has 1 values for 2 neurons"):
        make_spec(
            operations=[
                {
                    "kind": "neuron_adjust",
                    "runtime": [
                        {
                            "layer": 0,
                            "neurons": [1, 2],
                            "forget_mean": [0, 0],
                            "forget_std": [1],
                            "retain_mean": [0, 0],
                            "retain_std": [1, 1],
                        }
                    ],
                }
            ]
        )


def test_validate_for_bundle(tiny_bundle: ModelBundle) -> None:
    sha = tiny_bundle.weights_sha256
    make_spec(sha).validate_for(tiny_bundle)
    with pytest.raises(SpecError, match="weights"):
        make_spec("0" * 64).validate_for(tiny_bundle)
    with pytest.raises(SpecError, match=r"operations\[0\].*Layer 9 is out of range"):
        make_spec(sha, operations=[{"kind": "prune_neurons", "layer": 9, "neurons": [1]}]).validate_for(tiny_bundle)
    with pytest.raises(SpecError, match=r"Neurons \[128\] are out of range"):
        make_spec(sha, operations=[{"kind": "prune_neurons", "layer": 1, "neurons": [128]}]).validate_for(tiny_bundle)
    with pytest.raises(SpecError, match="direction has 3 values"):
        make_spec(
            sha, operations=[{"kind": "project_out_direction", "layers": [1], "direction": [1, 2, 3]}]
        ).validate_for(tiny_bundle)


def test_validate_for_sae_hash_and_feature_range(tiny_bundle: ModelBundle) -> None:
    sae = FakeSae(tiny_bundle.d_model, 32)
    ref = {"id": "fake", "sha256": sae_sha256(sae)}
    op = {"kind": "remove_sae_features", "layer": 1, "features": [3, 40], "mu": 4}
    spec = make_spec(tiny_bundle.weights_sha256, sae=ref, operations=[op])
    with pytest.raises(SpecError, match=r"features \[40\] are out of range: the SAE has 32"):
        spec.validate_for(tiny_bundle, sae=sae)
    op["features"] = [3]
    make_spec(tiny_bundle.weights_sha256, sae=ref, operations=[op]).validate_for(tiny_bundle, sae={1: sae})
    other = FakeSae(tiny_bundle.d_model, 32)
    other.W_enc = other.W_enc + 1
    with pytest.raises(SpecError, match="SAE 'fake' has hash"):
        make_spec(tiny_bundle.weights_sha256, sae=ref, operations=[op]).validate_for(tiny_bundle, sae=other)


def test_payload_is_bound_by_hash(tmp_path: Path, tiny_bundle: ModelBundle) -> None:
    d = tiny_bundle.d_model
    spec = EditSpec(
        name="payload",
        model=ModelRef(id="tiny", weights_sha256=tiny_bundle.weights_sha256),
        operations=[
            ProjectOutDirection(layers=[1, 2], direction="u"),
            OptimiseValueVectors(targets=[ValueVectorDelta(layer=0, rows=[1, 2], delta="delta0")]),
        ],
    )
    payload = {"u": torch.randn(d), "delta0": torch.randn(2, d)}
    path = tmp_path / "edit.json"
    with pytest.raises(SpecError, match="pass payload"):
        save_spec(spec, path)
    saved = save_spec(spec, path, payload)
    assert saved.payload is not None and saved.payload.tensors == ["delta0", "u"]
    spec2, payload2 = load_spec(path)
    assert spec2.payload == saved.payload
    assert torch.equal(payload2["u"], payload["u"])
    spec2.validate_for(tiny_bundle, payload=payload2)
    with pytest.raises(SpecError, match="no payload"):
        spec2.validate_for(tiny_bundle)
    with pytest.raises(SpecError, match=r"delta0.*expected \(2, 64\)"):
        spec2.validate_for(tiny_bundle, payload={"u": payload["u"], "delta0": torch.zeros(3, d)})

    # tamper with the payload: refused
    pfile = tmp_path / saved.payload.file
    data = bytearray(pfile.read_bytes())
    data[-1] ^= 0x01
    pfile.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="was changed"):
        load_spec(path)
    pfile.unlink()
    with pytest.raises(SpecError, match="missing"):
        load_spec(path)


def test_remove_features_defaults() -> None:
    op = RemoveSaeFeatures(layer=1, features=[2])
    assert (op.tau, op.mu, op.schedule, op.mode, op.signed) == (0.9, 16.0, "relative", "gain_aware", True)
    spec = EditSpec(name="x", model=ModelRef(id="m", weights_sha256="s"), operations=[op])
    with pytest.raises(SpecError, match="names no SAE"):
        spec.sae_for(op)
    spec.sae = SaeRef(id="a", sha256="b")
    assert spec.sae_for(op).id == "a"


def test_schema_file_has_not_drifted() -> None:
    on_disk = json.loads(SCHEMA_PATH.read_text())
    assert on_disk == json.loads(json.dumps(json_schema())), (
        "schemas/edit-spec.schema.json is stale; run "
        "python -c 'from workbench.edits.spec import write_schema; write_schema()'"
    )
    kinds = {v["properties"]["kind"]["const"] for k, v in on_disk["$defs"].items() if "kind" in v.get("properties", {})}
    assert kinds == {
        "remove_sae_features",
        "ablate_value_vectors",
        "project_out_direction",
        "prune_neurons",
        "neuron_adjust",
        "optimise_value_vectors",
    }


def test_operation_kinds_come_from_the_union_and_every_operation_describes_itself() -> None:
    """OPERATION_KINDS is read from the `Operation` union (each class's `kind` literal), and each
    class answers layers, neurons, payload names and its one-line description itself."""
    from typing import get_args

    from workbench.edits.spec import OPERATION_CLASSES, OPERATION_KINDS, NeuronAdjust, PruneNeurons

    assert OPERATION_KINDS == [get_args(c.model_fields["kind"].annotation)[0] for c in OPERATION_CLASSES]
    defs = json_schema()["$defs"].values()
    assert set(OPERATION_KINDS) == {d["properties"]["kind"]["const"] for d in defs if "kind" in d.get("properties", {})}
    adjust = {"forget_mean": [0.0, 0.0], "forget_std": [1.0, 1.0], "retain_mean": [0.0, 0.0], "retain_std": [1.0, 1.0]}
    ops = [
        RemoveSaeFeatures(layer=6, features=list(range(10)), neuron_signs={3: 1, 5: -1}),
        AblateValueVectors(layer=2, neurons=[1, 2], mode="scale"),
        ProjectOutDirection(layers=[2, 3], direction="u", alpha=0.5),
        PruneNeurons(layer=3, neurons=[4]),
        NeuronAdjust(runtime=[{"layer": 1, "neurons": [7, 8], **adjust}]),  # type: ignore[list-item]
        OptimiseValueVectors(targets=[ValueVectorDelta(layer=2, rows=[1, 2], delta="a"),
                                      ValueVectorDelta(layer=5, rows=[3], delta="b")], params={"target": "both"}),
    ]
    assert {op.kind for op in ops} == set(OPERATION_KINDS)  # one of each
    assert [op.touched_layers() for op in ops] == [[6], [2], [2, 3], [3], [1], [2, 5]]
    assert [op.touched_neurons() for op in ops] == [[[3, 5]], [[1, 2]], [], [[4]], [[7, 8]], [[1, 2], [3]]]
    assert [op.payload_names() for op in ops] == [set(), set(), {"u"}, set(), set(), {"a", "b"}]
    assert [op.describe() for op in ops] == [
        "remove SAE features [0, 1, 2, 3, 4, 5, 6, 7, ...] (10) at layer 6 (tau 0.9, mu 16)",
        "ablate (scale) layer 2 neurons [1, 2]",
        "project out u from layers [2, 3] (alpha 0.5)",
        "prune layer 3 neurons [4]",
        "neuron adjust (run-time) L1:[7, 8]",
        "optimised deltas on 3 value vectors in layers [2, 5] (both target)",
    ]
    spec = EditSpec(name="x", model=ModelRef(id="m", weights_sha256="s"), operations=ops)
    assert spec.payload_names() == {"u", "a", "b"}
