"""SAE recipe sweeps on cached activations (workbench.sae.sweep), on the tiny model."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from workbench.config import Settings
from workbench.corpus.wiki import load_wiki, wiki_texts
from workbench.methods.pisces_search import find_local_sae
from workbench.sae.sources import list_local_saes, load_local_sae
from workbench.sae.sweep import ce_recovered, sweep
from workbench.sae.train import (
    SAETrainConfig,
    activation_stream,
    collect_hook_activations,
    sae_quality,
    save_local_sae,
    train_on_activations,
)

CFG = SAETrainConfig(layer=1, site="hook_mlp_out", width=128, k=6, tokens=6144, context_size=32, train_batch_tokens=512,
                     norm_batches=2, holdout_docs=20, eval_tokens=1000, lr=2e-3, dead_feature_window=8)


class MapSae:
    """encode/decode by given functions: identity reproduces the activation exactly."""

    def __init__(self, d: int, decode_to_zero: bool = False) -> None:
        self.cfg = SimpleNamespace(d_sae=d)
        self.zero = decode_to_zero

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    def decode(self, c: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(c) if self.zero else c


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [d.text for d in load_wiki("en").sample(200, seed=5)]


def test_activation_stream_visits_every_token_once_per_epoch() -> None:
    acts = torch.arange(40, dtype=torch.float16).unsqueeze(1).expand(40, 3).contiguous()  # [40, 3]
    stream = activation_stream(acts, batch_tokens=8, seed=0)
    epoch = torch.cat([next(stream) for _ in range(5)])  # 5 batches of 8 = one permutation
    assert epoch.dtype == torch.float32 and epoch.shape == (40, 3)
    assert sorted(epoch[:, 0].tolist()) == list(range(40))
    second = torch.cat([next(stream) for _ in range(5)])
    assert not torch.equal(epoch, second)  # a new order every epoch
    with pytest.raises(ValueError, match="cached tokens"):
        next(activation_stream(acts[:4], batch_tokens=8, seed=0))


def test_one_pass_collects_every_hook_and_fp16_matches(tiny_bundle, texts) -> None:
    hooks = ["blocks.1.hook_mlp_out", "blocks.1.mlp.hook_out", "blocks.2.mlp.hook_post"]
    full = collect_hook_activations(tiny_bundle, hooks, texts, 800, context_size=32)
    half = collect_hook_activations(tiny_bundle, hooks[:1], texts, 800, context_size=32, dtype=torch.float16)
    assert [full[h].shape for h in hooks] == [(800, tiny_bundle.d_model)] * 2 + [(800, tiny_bundle.d_mlp)]
    assert half[hooks[0]].dtype == torch.float16
    assert torch.allclose(half[hooks[0]].float(), full[hooks[0]], rtol=2e-3, atol=2e-3)
    # the raw MLP output is the post-norm one up to the post-FFN RMSNorm: different numbers
    assert not torch.allclose(full[hooks[0]], full[hooks[1]])


def test_quality_and_spliced_loss_of_exact_and_useless_saes(tiny_bundle, texts) -> None:
    acts = collect_hook_activations(tiny_bundle, [CFG.hook_name], texts, 600, context_size=32)[CFG.hook_name]
    shifted = acts - acts.min()  # non-negative, so clamp_min(0) keeps everything
    exact = sae_quality(MapSae(tiny_bundle.d_model), shifted)
    assert exact.explained_variance == pytest.approx(1.0) and exact.mse == pytest.approx(0.0)
    assert sae_quality(MapSae(tiny_bundle.d_model, decode_to_zero=True), shifted).explained_variance < 0.01
    # splicing an identity map changes nothing; splicing zeros is the zero ablation itself
    hook = "blocks.1.mlp.hook_out"
    ident = ce_recovered(tiny_bundle, SimpleNamespace(encode=lambda x: x, decode=lambda c: c), hook, texts, 256, 32)
    assert ident["spliced"] == pytest.approx(ident["clean"], abs=1e-4) and ident["recovered"] == pytest.approx(1.0)
    zero = ce_recovered(tiny_bundle, MapSae(tiny_bundle.d_model, decode_to_zero=True), hook, texts, 256, 32)
    assert zero["recovered"] == pytest.approx(0.0, abs=1e-4) and zero["zero"] != pytest.approx(zero["clean"])


def test_sweep_trains_each_recipe_on_the_same_cache(tiny_bundle, texts, tmp_path) -> None:
    configs = [CFG, replace(CFG, site="mlp.hook_out")]
    rows = list(sweep(tiny_bundle, configs, texts[:150], texts[150:], cache_tokens=3000, eval_tokens=800,
                      ce_tokens=0))
    assert [r.config.hook_name for r in rows] == ["blocks.1.hook_mlp_out", "blocks.1.mlp.hook_out"]
    for r in rows:
        assert r.sae.cfg.metadata.hook_name == r.config.hook_name
        assert r.metrics.loss_last < r.metrics.loss_first  # it learned (6144 tokens, cache cycled twice)
        assert r.metrics.eval_tokens == 800 and 0 < r.metrics.l0 <= CFG.width
        assert r.as_dict()["hook"] == r.config.hook_name
    # kept as a local SAE folder: loads bit-identical, listed with its trainer, found by site
    settings = Settings(cache_dir=tmp_path)
    path = save_local_sae(rows[1].sae, tiny_bundle, rows[1].config, rows[1].metrics, settings, cache_tokens=3000)
    loaded, sae_id, _ = load_local_sae(path)
    assert sae_id.endswith(".cache3000") and ".mlp_raw." in sae_id
    assert all(torch.equal(v, rows[1].sae.state_dict()[k]) for k, v in loaded.state_dict().items())
    listed = {e["sae_id"]: e for e in list_local_saes(settings.saes_dir)}
    assert "cached tokens" in listed[sae_id]["workbench_train_config"]["trainer"]
    assert listed[sae_id]["workbench_metrics"]["metrics"]["eval_tokens"] == 800
    assert find_local_sae(settings.saes_dir, tiny_bundle.model_id, 1, "mlp.hook_out") == path
    with pytest.raises(FileNotFoundError, match="at hook_mlp_out"):
        find_local_sae(settings.saes_dir, tiny_bundle.model_id, 1, "hook_mlp_out")


def test_train_on_activations_refuses_a_cache_smaller_than_a_batch(tiny_bundle) -> None:
    with pytest.raises(ValueError, match="cached tokens"):
        train_on_activations(torch.zeros(100, tiny_bundle.d_model), CFG)


def test_corpus_mixes() -> None:
    en, fr = load_wiki("en").texts(), load_wiki("fr").texts()
    assert wiki_texts("en+fr") == en + fr
    assert replace(CFG, corpus="en+fr+es").corpus == "en+fr+es"
    with pytest.raises(ValueError, match="Unknown corpus"):
        replace(CFG, corpus="en+de")
    with pytest.raises(ValueError, match="at least one"):
        wiki_texts("+")


def test_decoder_bias_starts_at_the_mean_activation() -> None:
    """With b_dec_init='mean' the saved decoder bias sits at the data mean (MLP outputs have a
    large one); SAELens's zero start leaves it far away after a short run."""
    g = torch.Generator().manual_seed(0)
    mean = torch.full((16,), 4.0)
    acts = (mean + torch.randn(4096, 16, generator=g)).to(torch.float16)  # [n, d_in]
    cfg = replace(CFG, width=32, k=4, tokens=2048, train_batch_tokens=256, norm_batches=2)
    from_mean, _, _ = train_on_activations(acts, cfg)
    from_zero, _, _ = train_on_activations(acts, replace(cfg, b_dec_init="zero"))
    assert torch.allclose(from_mean.b_dec.detach(), mean, atol=0.3)
    assert (from_zero.b_dec.detach() - mean).norm() > 3 * (from_mean.b_dec.detach() - mean).norm()
