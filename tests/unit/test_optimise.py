"""optimise_value_vectors on the tiny model: the loss falls, only chosen rows change, the
baked weights reproduce the hooked model; fact sets are editable and round-trip."""

from __future__ import annotations

import pytest
import torch

from workbench.corpus import load_wiki
from workbench.methods.facts import Fact, FactSet, fact_targets, split_sentences
from workbench.methods.frames import FramesConfig
from workbench.methods.optimise import OptimiseConfig, bake, delta_hooks, optimise_value_vectors
from workbench.methods.retain import RetainConfig
from workbench.methods.rows import contrast_rows, top_rows
from workbench.models import layout


@pytest.fixture(scope="module")
def facts() -> FactSet:
    doc = load_wiki("en").get("Harry Potter")
    return FactSet(concept=doc.title, name="Harry Potter", kind="work",
                   facts=[Fact(s, "article") for s in split_sentences(doc.text)])


def _cfg(**kw: object) -> OptimiseConfig:
    base = dict(layers=(0, 1, 2), n_rows=24, steps=12, min_target_prob=0.0, repr_layers=(2,),
                retain=RetainConfig(n_neutral=8, n_neighbours=4), eval_every=100, lr_scale=0.5, kl_weight=0.1)
    base.update(kw)
    return OptimiseConfig(**base)  # type: ignore[arg-type]


def test_sentence_split_keeps_initials():
    assert split_sentences("Written by J. K. Rowling in 1997. It sold well in many places.") == [
        "Written by J. K. Rowling in 1997.", "It sold well in many places."]


def test_fact_set_edit_and_json_round_trip(facts: FactSet):
    fs = FactSet.from_json(facts.to_json())
    n = len(fs.facts)
    fs.add("Harry Potter rides a broom called Nimbus.")
    fs.drop(0)
    assert len(fs.facts) == n and fs.facts[-1].source == "user"
    with pytest.raises(ValueError):
        fs.add("   ")


def test_fact_targets_skip_name_and_common_words(tiny_bundle, facts: FactSet):
    t = fact_targets(tiny_bundle, facts, load_wiki("en"), min_prob=0.0)
    assert t.n_targets > 5
    tok = tiny_bundle.tokenizer
    words = {tok.decode([int(x)]).strip().lower() for x in t.targets[t.targets >= 0]}
    assert "harry" not in words and "potter" not in words and "the" not in words


@pytest.mark.parametrize("target", ["facts", "representation", "counterfactual"])
def test_loss_falls_and_only_chosen_rows_change(tiny_bundle, facts: FactSet, target: str):
    before = {layer: layout.w_out(tiny_bundle.hf_model, layer).detach().clone() for layer in range(4)}
    result = optimise_value_vectors(tiny_bundle, facts, load_wiki("en"), _cfg(target=target))
    key = {"facts": "unlikelihood", "representation": "repr", "counterfactual": "counterfactual"}[target]
    first = sum(h[key] for h in result.history[:3]) / 3
    last = sum(h[key] for h in result.history[-3:]) / 3
    assert last < first
    for layer in range(4):  # optimisation itself never touches the weights
        assert torch.equal(layout.w_out(tiny_bundle.hf_model, layer), before[layer])
    baked = bake(tiny_bundle, result)
    for layer, idx in result.rows.items():
        new_w_out = baked[layout.out_proj_name(tiny_bundle.hf_model, layer)].T
        changed = (new_w_out != before[layer]).any(dim=1).nonzero().flatten().tolist()
        assert set(changed) <= set(idx) and changed
    assert sum(len(v) for v in result.rows.values()) == 24


def test_baked_weights_reproduce_hooked_logits(tiny_bundle, facts: FactSet):
    result = optimise_value_vectors(tiny_bundle, facts, load_wiki("en"), _cfg(target="facts", steps=4))
    ids = tiny_bundle.tokenizer(["Harry Potter is a student at a school"], return_tensors="pt").input_ids
    with torch.no_grad(), delta_hooks(tiny_bundle, result.rows, result.deltas):
        hooked = tiny_bundle.hf_model(ids).logits
    baked = bake(tiny_bundle, result)
    params = layout.named_parameters(tiny_bundle.hf_model)
    saved = {name: params[name].data for name in baked}
    try:
        for name, w in baked.items():
            params[name].data = w
        with torch.no_grad():
            direct = tiny_bundle.hf_model(ids).logits
    finally:
        for name, w in saved.items():
            params[name].data = w
    assert torch.allclose(hooked, direct, atol=1e-4)


def test_contrast_rows_ranks_planted_neuron_and_guards_always_on():
    mean_n = {0: torch.zeros(10)}
    std_n = {0: torch.ones(10)}
    mean_c = {0: torch.zeros(10)}
    mean_c[0][3] = 5.0
    mean_c[0][7] = 50.0
    mean_n[0][7] = 1000.0  # always-on, massive neuron: guarded
    mean_n[0][:7] = 0.1
    scores = contrast_rows(mean_c, mean_n, std_n)
    # every neuron is scored (the guarded one 0); how many rows are taken is top_rows' n_rows alone
    assert scores[0].shape == (10,) and scores[0][7] == 0 and scores[0][3] == pytest.approx(4.9)
    assert top_rows(scores, 1) == {0: [3]} and len(top_rows(scores, 4)[0]) == 4


def test_collision_mask_marks_positions_before_target_tokens() -> None:
    from workbench.methods.retain import collision_mask

    ids = torch.tensor([[2, 7, 9, 7, 0], [2, 5, 5, 5, 5]])
    am = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    got = collision_mask(ids, am, [7])
    assert got.tolist() == [[True, False, True, False, False], [False] * 5]
    assert not collision_mask(ids, am, []).any()


def test_retain_batch_takes_its_share_of_colliding_texts_and_keeps_their_positions() -> None:
    import random

    from workbench.methods.retain import sample_retain_positions, sample_retain_texts

    rng = random.Random(0)
    pick = sample_retain_texts([0, 1], [2, 3, 4, 5], size=4, share=0.5, rng=rng)
    assert sorted(pick[:2]) == [0, 1] and set(pick[2:]) <= {2, 3, 4, 5} and len(set(pick)) == 4
    assert sorted(sample_retain_texts([0, 1, 2], [3], size=4, share=0.25, rng=rng)) == [0, 1, 2, 3]
    enc = {"input_ids": torch.arange(12).reshape(2, 6), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    always = torch.zeros(2, 6, dtype=torch.bool)
    always[1, 3] = True
    _, mask = sample_retain_positions(enc, [1, 0], per_text=2, rng=rng, always=always)
    assert mask[0, 3] and mask.sum(1).tolist() == [2, 2]


def test_selected_logits_run_only_up_to_the_last_chosen_position_without_changing_them(tiny_bundle, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import workbench.methods.readout as readout

    enc = tiny_bundle.tokenizer(["The river runs past the old mill and on to the sea at last.", "A short one."],
                                return_tensors="pt", padding=True, padding_side="right")
    ids = enc["input_ids"]
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[0, [2, 5]] = True
    mask[1, 3] = True
    with torch.no_grad():
        full_logits = readout.logits_at(tiny_bundle, readout.final_hidden(tiny_bundle, ids)[mask])
        widths: list[int] = []
        run = readout.final_hidden
        monkeypatch.setattr(readout, "final_hidden", lambda b, x: widths.append(x.shape[1]) or run(b, x))
        cut_logits = readout.selected_logits(tiny_bundle, ids, mask)
    assert widths == [6] < [ids.shape[1]]  # the decoder saw positions 0..5, the last chosen one included
    torch.testing.assert_close(cut_logits, full_logits, rtol=1e-4, atol=1e-4)


def test_key_names_get_their_own_frames_and_round_trip(tiny_bundle, facts: FactSet) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from workbench.methods.frames import FRAMES, build_frames, name_frames

    plain = build_frames(tiny_bundle, facts, (2,), 64)
    keyed = replace(facts, key_names=["Hermione Granger", "Hogwarts"])
    both = build_frames(tiny_bundle, keyed, (2,), 64)
    assert len(plain.last) == len(name_frames(facts))
    assert len(both.last) == len(plain.last) + 2 * len(FRAMES)
    assert all(torch.equal(both.target[layer][: len(plain.last)], plain.target[layer]) for layer in plain.target)
    bare = build_frames(tiny_bundle, keyed, (2,), 64, with_targets=False)  # the same frames, no made-up-name passes
    assert bare.target == {} and torch.equal(bare.input_ids, both.input_ids) and torch.equal(bare.last, both.last)
    assert FactSet.from_json(keyed.to_json()).key_names == ["Hermione Granger", "Hogwarts"]
    assert FactSet.from_json(facts.to_json()).key_names == []


def test_representation_target_at_several_layers(tiny_bundle, facts) -> None:
    """Targets at layers (1, 2) are those of one-layer builds, and residuals_after reads the same
    residuals as a full forward with hidden states."""
    from dataclasses import replace

    from workbench.methods.frames import build_frames
    from workbench.methods.readout import residuals_after

    one, two = (build_frames(tiny_bundle, facts, (layer,), 64) for layer in (1, 2))
    both = build_frames(tiny_bundle, facts, (1, 2), 64)
    assert sorted(both.target) == [1, 2]
    assert torch.allclose(both.target[1], one.target[1]) and torch.allclose(both.target[2], two.target[2])
    ids = both.input_ids[:3]
    with torch.no_grad():
        got = residuals_after(tiny_bundle, ids, [0, 2])
        hidden = tiny_bundle.hf_model.model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(got[0], hidden[1], atol=1e-5) and torch.allclose(got[2], hidden[3], atol=1e-5)
    assert replace(_cfg(), repr_layers=(2, 9)).fitted(tiny_bundle.n_layers).repr_layers == (2, 3)


def test_key_name_suggestions_skip_sentence_starts_common_words_and_the_name() -> None:
    from workbench.methods.facts import key_names

    texts = ["He met Hermione Granger at Hogwarts.", "Later Hermione Granger left Hogwarts for London.",
             "Hermione Granger is clever.", "Harry Potter went to London. London is big."]
    got = key_names(texts, "Harry Potter", load_wiki("en"))
    assert got[:2] == ["Hermione Granger", "Hogwarts"]
    assert "London" not in got and "Harry" not in got and "Later" not in got


def test_counterfactual_target_is_the_base_with_made_up_names(tiny_bundle, facts: FactSet) -> None:
    """The trained positions start at the name's last token, and their target is the base
    model's distribution at the same positions of the text with a made-up name."""
    from workbench.corpus.nonce import nonce_names
    from workbench.methods.counterfactual import build_counterfactual, counterfactual_texts

    cf = build_counterfactual(tiny_bundle, facts, FramesConfig(cf_nonces=1, cf_topk=8), max_len=64)
    assert cf is not None and cf.mask.any(dim=1).all()
    texts = counterfactual_texts(facts)
    assert all(t.count("Harry Potter") == 1 for t in texts)
    text = next(t for t in texts if tiny_bundle.tokenizer.decode(cf.input_ids[0]).strip().endswith(t[-10:]))
    nonce = nonce_names("work")[0]
    alt = tiny_bundle.tokenizer(text.replace("Harry Potter", nonce), return_tensors="pt").input_ids
    n = int(cf.mask[0].sum())
    with torch.no_grad():
        want = tiny_bundle.hf_model(alt).logits[0, -n:].softmax(-1)
    top_p, top_ids = want.topk(8, dim=-1)
    first = cf.row_of == 0
    assert torch.equal(cf.top_ids[first], top_ids)
    assert torch.allclose(cf.top_p[first], top_p / top_p.sum(-1, keepdim=True), atol=1e-5)
    first_pos = int(cf.mask[0].nonzero()[0])
    name_ids = tiny_bundle.tokenizer(text[: text.find("Harry Potter")] + "Harry Potter")["input_ids"]
    assert first_pos == len(name_ids) - 1


def test_counterfactual_loss_is_zero_at_its_own_target_in_any_pick_order(tiny_bundle, facts: FactSet) -> None:
    """With the target set to the model's own distributions, the loss is the target's entropy
    whatever order the texts are picked in (an order mix-up pairs positions with other texts)."""
    from workbench.methods.counterfactual import build_counterfactual, counterfactual_loss
    from workbench.methods.readout import selected_logits

    cf = build_counterfactual(tiny_bundle, facts, FramesConfig(cf_nonces=1, cf_topk=2048), max_len=64)
    assert cf is not None and len(cf.input_ids) >= 3
    with torch.no_grad():
        own = selected_logits(tiny_bundle, cf.input_ids, cf.mask).softmax(-1)  # [positions, vocab]
        cf.top_p, cf.top_ids = own.topk(2048, dim=-1)
        entropy = -(cf.top_p * cf.top_p.clamp_min(1e-30).log()).sum(-1)
        for pick in ([0, 1, 2], [2, 0, 1]):
            keep = torch.isin(cf.row_of, torch.tensor(pick))
            got = counterfactual_loss(tiny_bundle, cf, pick)
            assert torch.allclose(got, entropy[keep].mean(), atol=1e-4), pick
