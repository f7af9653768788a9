"""An SAE trained on the real model with tiny settings loads back bit-identical from disk."""

from __future__ import annotations

import pytest
import torch

from workbench.config import Settings
from workbench.corpus.wiki import load_wiki
from workbench.sae.catalogue import row_feature_matrix
from workbench.sae.sources import load_local_sae
from workbench.sae.train import SAETrainConfig, train_sae

pytestmark = pytest.mark.integration


def test_embedded_sae_round_trip(embedded_bundle, tmp_path, session_settings) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "models").symlink_to(session_settings.models_dir.resolve(), target_is_directory=True)
    settings = Settings(cache_dir=tmp_path)
    cfg = SAETrainConfig(layer=6, site="hook_mlp_out", width=256, k=8, tokens=3072, context_size=64, train_batch_tokens=1024,
                         store_batch_prompts=8, norm_batches=1, holdout_docs=20, eval_tokens=512)
    texts = [d.text for d in load_wiki("en").sample(120, seed=5)]
    result = train_sae(embedded_bundle, cfg, settings, texts=texts)
    sae, sae_id, digest = load_local_sae(result.path)
    assert sae_id == result.sae_id and digest == result.sha256
    state = sae.state_dict()
    assert set(result.trained_state) == set(state)
    for name, tensor in result.trained_state.items():
        assert torch.equal(state[name], tensor), name
    x = torch.randn(4, embedded_bundle.d_model) * 50
    assert torch.equal(sae.encode(x), result.sae.encode(x))
    assert sae.cfg.metadata.hook_name == "blocks.6.hook_mlp_out"
    s = row_feature_matrix(embedded_bundle.hf_model, sae)
    assert s.shape == (embedded_bundle.d_mlp, 256) and torch.isfinite(s).all()
