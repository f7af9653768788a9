"""Local SAE training with SAELens's own trainer, on activations of the bundle's
TransformerBridge (one copy of the weights) over the corpus text.

`train_sae` collects the activations of the hook once (one forward pass, fp16 in memory: about
1 GB for 800k tokens at d_model 640; the base weights are never written, so no edit leaks in),
then trains with SAELens's `SAETrainer` (the class its LanguageModelSAETrainingRunner drives) on
a shuffled stream of them. Training from a cache, rather than through the runner's streaming
store, is what lets the decoder bias start at the data mean (`b_dec_init`) and lets
`workbench.sae.sweep` train many recipes on one forward pass. Each run is cached once per
(model weights, hook, config) under `cache/saes/<sae_id>/` in SAELens's save format, plus
`workbench_metrics.json` with held-out metrics we compute ourselves (SAELens computes none
without wandb).

Sites (`SAETrainConfig.site`), all of layer `layer`:
  hook_mlp_out   post-FFN-norm MLP output, what reaches the residual (PISCES' site on Gemma 2)
  mlp.hook_out   raw MLP output o = h @ W_out, before the post-FFN RMSNorm   [d_model]
  mlp.hook_post  input of down_proj (neuron coefficients h)                   [d_mlp]
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from workbench.atomic import atomic_folder, recover
from workbench.config import Settings
from workbench.models.depth import DEFAULT_SAE_LAYER
from workbench.models.hooks import capture, text_positions
from workbench.progress import NullProgress, Progress

log = logging.getLogger(__name__)

Site = Literal["hook_mlp_out", "mlp.hook_out", "mlp.hook_post"]
SITES: tuple[Site, ...] = ("hook_mlp_out", "mlp.hook_out", "mlp.hook_post")
Architecture = Literal["batchtopk", "topk"]
CORPUS_MIXES: list[str] = ["en", "en+fr+es"]  # training corpora offered by the app
METRICS_FILE = "workbench_metrics.json"
TRAIN_CONFIG_FILE = "workbench_train_config.json"
_SITE_SHORT = {"hook_mlp_out": "mlp_out", "mlp.hook_out": "mlp_raw", "mlp.hook_post": "mlp_post"}


def safe_model_id(model_id: str) -> str:
    """The model id as SAE folder names spell it ('local:my-llama' -> 'local-my-llama')."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in model_id)


@dataclass(frozen=True)
class SAETrainConfig:
    """What to train. Defaults train one layer of the embedded model in ~15 min on 2 cores
    (measured: ~1k tok/s for d_sae 4096; 20k tokens give a useless SAE, 800k a usable one)."""

    layer: int = DEFAULT_SAE_LAYER  # on the 18-layer reference model; other models: models/depth.at_depth
    # pre-norm MLP output by default (bench/sae_sweep.py, layer 6, 400k tokens: 2.5% dead features
    # and 89% of the loss recovered, vs 45% dead and 79% at the post-norm hook_mlp_out), and the
    # space W_out's value vectors live in, so PISCES needs no division by the post-FFN gain
    site: Site = "mlp.hook_out"
    architecture: Architecture = "batchtopk"
    width: int = 4096
    k: int = 32
    tokens: int = 800_000
    context_size: int = 128
    # 1024-token batches, lr 1e-3: a CPU run has few steps, and BatchTopK's inference threshold is
    # an EMA (rate 0.01 per step) that is still far too low after ~100 steps of 4096 tokens
    # (bench/sae_sweep.py: L0 977 instead of 32); more, smaller steps also leave fewer dead features.
    train_batch_tokens: int = 1024
    lr: float = 1e-3
    store_batch_prompts: int = 16  # texts per forward pass when collecting activations
    norm_batches: int = 30
    # Steps without firing before a feature counts as dead and the aux-k loss starts to revive
    # it. SAELens's default (1000 steps = 4M tokens) is longer than our whole run.
    dead_feature_window: int = 40
    aux_loss_coefficient: float = 1.0
    # Start the decoder bias at the (normalised) mean activation instead of SAELens's zero: MLP
    # outputs have a large mean, and with b_dec = 0 the encoder sees mostly that mean for the
    # few hundred steps a CPU run has, so most features die (bench/sae_sweep.py measures it).
    b_dec_init: Literal["zero", "mean"] = "mean"
    corpus: str = "en"  # a wiki language or a mix: 'en+fr+es'
    holdout_docs: int = 300
    eval_tokens: int = 40_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.site not in SITES:
            raise ValueError(f"Unknown SAE site {self.site!r}; choose one of {SITES}.")
        if self.b_dec_init not in ("zero", "mean"):
            raise ValueError(f"Unknown b_dec_init {self.b_dec_init!r}; choose zero or mean.")
        if self.architecture not in ("batchtopk", "topk"):
            raise ValueError(f"Unknown architecture {self.architecture!r}; choose batchtopk or topk.")
        if self.width < 2 or self.k < 1 or self.k > self.width:
            raise ValueError(f"Need 1 <= k <= width (got width {self.width}, k {self.k}).")
        if self.tokens < self.train_batch_tokens:
            raise ValueError(f"tokens ({self.tokens}) must be at least one batch ({self.train_batch_tokens}).")
        if self.layer < 0:
            raise ValueError(f"Layer must be >= 0 (got {self.layer}).")
        from workbench.corpus.wiki import LANGS

        unknown = [part for part in self.corpus.split("+") if part not in LANGS]
        if unknown:
            raise ValueError(f"Unknown corpus {unknown}; use {sorted(LANGS)} or a mix like 'en+fr+es'.")

    @property
    def hook_name(self) -> str:
        return f"blocks.{self.layer}.{self.site}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SAETrainConfig:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"Unknown SAE training options: {sorted(unknown)}.")
        return cls(**data)

    def config_hash(self, weights_sha256: str) -> str:
        blob = json.dumps({"weights": weights_sha256, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    def sae_id(self, model_id: str, weights_sha256: str) -> str:
        """Stable, filesystem-safe id, e.g. 'gemma-3-270m.l6.mlp_out.batchtopk4096.k32.ab12cd34ef'."""
        return (
            f"{safe_model_id(model_id)}.l{self.layer}.{site_short(self.site)}.{self.architecture}{self.width}"
            f".k{self.k}.{self.config_hash(weights_sha256)}"
        )


def site_short(site: str) -> str:
    """The site's part of an SAE id ('mlp.hook_out' -> 'mlp_raw')."""
    if site not in _SITE_SHORT:
        raise ValueError(f"Unknown SAE site {site!r}; choose one of {SITES}.")
    return _SITE_SHORT[site]


@dataclass
class SAEMetrics:
    """Held-out quality of an SAE (computed by `evaluate_sae`, not by SAELens)."""

    explained_variance: float
    l0: float
    dead_fraction: float
    dense_fraction: float  # features active on more than 10% of tokens
    mse: float
    eval_tokens: int
    train_seconds: float = 0.0
    train_tokens: int = 0
    loss_first: float | None = None
    loss_last: float | None = None
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainedSAE:
    sae: Any  # sae_lens.SAE (a BatchTopK SAE is saved and loaded as JumpReLU)
    sae_id: str
    path: Path
    sha256: str
    metrics: SAEMetrics
    config: SAETrainConfig
    # The trainer's final weights as SAELens saves them for inference (None when the SAE came
    # from the cache): lets a test prove the saved folder loads back bit-identical.
    trained_state: dict[str, torch.Tensor] | None = None


def activation_stream(acts: torch.Tensor, batch_tokens: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless shuffled fp32 batches [batch_tokens, d_in] of cached activations (a new
    permutation every epoch, like SAELens's mixing buffer but over the whole cache)."""
    gen = torch.Generator().manual_seed(seed)
    n = acts.shape[0]
    if n < batch_tokens:
        raise ValueError(f"Only {n} cached tokens for a batch of {batch_tokens}.")
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n - batch_tokens + 1, batch_tokens):
            yield acts[order[start : start + batch_tokens]].float()


def train_on_activations(
    acts: torch.Tensor,  # [n_tokens, d_in] cached activations of cfg.hook_name
    cfg: SAETrainConfig,
    progress: Progress | None = None,
) -> tuple[Any, list[float], float]:
    """Train one SAE with SAELens's SAETrainer on cached activations for cfg.tokens tokens
    (cycling the cache when it is shorter). Returns (inference SAE, per-step reconstruction
    losses, seconds)."""
    from sae_lens import SAE
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import TrainingSAE
    from sae_lens.training.sae_trainer import SAETrainer

    progress = progress or NullProgress()
    torch.manual_seed(cfg.seed)
    sae_cfg = training_sae_config(cfg, d_in=int(acts.shape[1]))
    sae_cfg.metadata.hook_name = cfg.hook_name
    training = TrainingSAE.from_dict(sae_cfg.to_dict())
    trainer_cfg = SAETrainerConfig(
        total_training_samples=cfg.tokens, train_batch_size_samples=cfg.train_batch_tokens, lr=cfg.lr,
        lr_end=cfg.lr / 10,  # what the runner config sets (only used by decaying schedules)
        device="cpu", dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, 1),
        n_batches_for_norm_estimate=cfg.norm_batches, logger=LoggingConfig(log_to_wandb=False),
    )
    losses: list[float] = []
    forward = training.training_forward_pass

    def reporting_forward(step_input: Any) -> Any:
        out = forward(step_input)
        # reconstruction loss only: the aux-k term grows while it revives dead features
        mse = out.losses.get("mse_loss", out.loss)
        losses.append(float(mse.detach() if isinstance(mse, torch.Tensor) else mse))
        progress.advance(int(out.sae_in.shape[0]), mse=losses[-1])
        return out

    training.training_forward_pass = reporting_forward
    t0 = time.perf_counter()
    trainer = SAETrainer(cfg=trainer_cfg, sae=training,
                         data_provider=activation_stream(acts, cfg.train_batch_tokens, cfg.seed))
    if cfg.b_dec_init == "mean":
        # the scaler SAELens would estimate (sqrt(d_in) / mean norm), set here so b_dec can start
        # at the mean in the same normalised units; fit() folds both back into the saved weights
        sample = acts[: cfg.norm_batches * cfg.train_batch_tokens].float()  # [n, d_in]
        scale = float(acts.shape[1] ** 0.5 / sample.norm(dim=1).mean())
        trainer.activation_scaler.scaling_factor = scale
        with torch.no_grad():
            training.b_dec.copy_(sample.mean(0) * scale)
    trained = trainer.fit()
    seconds = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="sae-train-") as tmp:
        trained.save_inference_model(tmp)
        sae = SAE.load_from_disk(tmp, device="cpu")
    return sae, losses, seconds


def split_texts(texts: Sequence[str], holdout_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split of corpus texts into (train, held-out)."""
    import random

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_hold = min(holdout_docs, max(1, len(texts) // 10))
    hold = [texts[i] for i in order[:n_hold]]
    train = [texts[i] for i in order[n_hold:]]
    return train, hold


def train_sae(
    bundle: Any,
    cfg: SAETrainConfig = SAETrainConfig(),
    settings: Settings | None = None,
    texts: Sequence[str] | None = None,
    progress: Progress | None = None,
    force: bool = False,
) -> TrainedSAE:
    """Train (or load the cached result of) one SAE with SAELens's trainer on cached activations.

    `texts` defaults to the embedded Wikipedia corpus `cfg.corpus`; a seeded `holdout_docs`
    slice is kept out of training for the metrics. The folder appears atomically
    (`workbench.atomic.atomic_folder`: temp dir + rename, an old folder replaced only once the
    new one is complete), so an interrupted run leaves nothing half-written.
    """
    from workbench.sae.sources import load_local_sae

    settings = settings or Settings.from_env()
    progress = progress or NullProgress()
    bundle.check_layer(cfg.layer)
    sae_id = cfg.sae_id(bundle.model_id, bundle.weights_sha256)
    target = settings.saes_dir / sae_id
    recover(target)  # a killed run's leftovers: a set-aside complete folder comes back (workbench/atomic.py)
    if target.exists() and not force:
        if (target / METRICS_FILE).exists():
            sae, _, digest = load_local_sae(target)
            metrics = SAEMetrics(**json.loads((target / METRICS_FILE).read_text())["metrics"])
            progress.message(f"SAE {sae_id} already trained; loaded from {target}.")
            return TrainedSAE(sae, sae_id, target, digest, metrics, cfg)
    if texts is None:
        from workbench.corpus.wiki import wiki_texts

        texts = wiki_texts(cfg.corpus)
    train_texts, held_out = split_texts(list(texts), cfg.holdout_docs, cfg.seed)

    progress.stage(f"Collecting activations at {cfg.hook_name}", total=cfg.tokens, unit="tok")
    acts = collect_hook_activations(bundle, [cfg.hook_name], train_texts, cfg.tokens, cfg.context_size,
                                    batch_size=cfg.store_batch_prompts, progress=progress,
                                    dtype=torch.float16)[cfg.hook_name]
    progress.stage(f"Training SAE on {cfg.hook_name}", total=cfg.tokens, unit="tok")
    sae, losses, train_seconds = train_on_activations(acts, cfg, progress)
    del acts
    trained_state = {k: v.detach().clone() for k, v in sae.state_dict().items()}
    with atomic_folder(target, overwrite=True) as tmp:  # the folder appears complete or not at all
        sae.save_model(str(tmp))
        progress.stage("Held-out metrics", total=cfg.eval_tokens, unit="tok")
        metrics = evaluate_sae(bundle, sae, cfg.hook_name, held_out, max_tokens=cfg.eval_tokens,
                               context_size=cfg.context_size, progress=progress)
        metrics.train_seconds = round(train_seconds, 1)
        metrics.train_tokens = cfg.tokens
        metrics.losses = [round(x, 6) for x in losses]
        metrics.loss_first = losses[0] if losses else None
        metrics.loss_last = losses[-1] if losses else None
        _write_records(tmp, target.name, bundle, cfg, metrics,
                       trainer=f"SAELens SAETrainer on {cfg.tokens} cached tokens")
    progress.close()
    sae, _, digest = load_local_sae(target)
    return TrainedSAE(sae, sae_id, target, digest, metrics, cfg, trained_state)


def _write_records(folder: Path, sae_id: str, bundle: Any, cfg: SAETrainConfig, metrics: SAEMetrics,
                   trainer: str) -> None:
    """Write the workbench's config and metrics beside SAELens's files in a folder that
    `atomic_folder` is about to publish (they are what marks an SAE folder as trained)."""
    (folder / TRAIN_CONFIG_FILE).write_text(json.dumps({
        "sae_id": sae_id, "model_id": bundle.model_id, "weights_sha256": bundle.weights_sha256,
        "hook_name": cfg.hook_name, "config": cfg.to_dict(), "trainer": trainer}, indent=1))
    (folder / METRICS_FILE).write_text(json.dumps({"sae_id": sae_id, "metrics": metrics.to_dict()}, indent=1))


def save_local_sae(sae: Any, bundle: Any, cfg: SAETrainConfig, metrics: SAEMetrics, settings: Settings,
                   cache_tokens: int) -> Path:
    """Keep an SAE trained on cached activations (workbench.sae.sweep) as a local SAE folder,
    usable like one from `train_sae`. Its id says it was trained on a cache of that many tokens."""
    sae_id = f"{cfg.sae_id(bundle.model_id, bundle.weights_sha256)}.cache{cache_tokens}"
    target = settings.saes_dir / sae_id
    with atomic_folder(target, overwrite=True) as tmp:
        sae.save_model(str(tmp))
        _write_records(tmp, sae_id, bundle, cfg, metrics, trainer=f"SAELens SAETrainer on {cache_tokens} cached tokens")
    return target


def training_sae_config(cfg: SAETrainConfig, d_in: int) -> Any:
    """SAELens's training config of the SAE itself (architecture, width, k, aux loss), shared
    by the runner and the cached-activation sweep. Activations are normalised to an expected
    norm of sqrt(d_in) (folded into the saved weights): without it nothing trains at
    `hook_mlp_out` (bench/sae_sweep.py)."""
    from sae_lens import BatchTopKTrainingSAEConfig, TopKTrainingSAEConfig

    sae_cls = BatchTopKTrainingSAEConfig if cfg.architecture == "batchtopk" else TopKTrainingSAEConfig
    return sae_cls(
        d_in=d_in,
        d_sae=cfg.width,
        k=cfg.k,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        normalize_activations="expected_average_only_in",
        dtype="float32",
        device="cpu",
    )


@torch.no_grad()
def collect_hook_activations(
    bundle: Any,
    hook_names: Sequence[str],
    texts: Sequence[str],
    max_tokens: int,
    context_size: int = 128,
    batch_size: int = 8,
    progress: Progress | None = None,
    dtype: torch.dtype = torch.float32,
) -> dict[str, torch.Tensor]:
    """Activations at several hooks from one forward pass, for real (non-pad, non-BOS) tokens:
    {hook: [n_tokens, d_in]} in `dtype` (fp16 halves the memory of a sweep's cache)."""
    from workbench.corpus.batches import token_batches

    out: dict[str, list[torch.Tensor]] = {h: [] for h in hook_names}
    n = 0
    for batch in token_batches(bundle.tokenizer, texts, max_len=context_size, batch_size=batch_size,
                               max_tokens=max_tokens):
        cache = capture(bundle.bridge, batch.input_ids, list(hook_names), attention_mask=batch.attention_mask)
        keep = text_positions(batch.attention_mask)
        for h in hook_names:
            sel = cache[h][keep].float()  # [n_real, d_in]
            if dtype != torch.float32 and not bool(sel.to(dtype).isfinite().all()):
                raise ValueError(f"Activations at {h} overflow {dtype}; collect them in float32.")
            out[h].append(sel.to(dtype))
        k = int(keep.sum())
        n += k
        if progress is not None:
            progress.advance(k)
        if n >= max_tokens:
            break
    if n == 0:
        raise ValueError("No tokens to collect activations from.")
    return {h: torch.cat(v)[:max_tokens] for h, v in out.items()}


def collect_activations(
    bundle: Any,
    hook_name: str,
    texts: Sequence[str],
    max_tokens: int,
    context_size: int = 128,
    batch_size: int = 8,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Activations at one hook for real (non-pad, non-BOS) tokens: [n_tokens, d_in]."""
    return collect_hook_activations(bundle, [hook_name], texts, max_tokens, context_size, batch_size,
                                    progress)[hook_name]


@torch.no_grad()
def sae_quality(sae: Any, acts: torch.Tensor) -> SAEMetrics:  # acts [n_tokens, d_in]
    """Explained variance, L0, dead and dense fractions and MSE of an SAE on activations."""
    acts = acts.float()
    d_sae = int(sae.cfg.d_sae)
    fired = torch.zeros(d_sae)
    l0_sum = 0.0
    sq_err = 0.0
    total = acts.shape[0]
    mean = acts.mean(0)
    var = float((acts - mean).pow(2).sum())
    for start in range(0, total, 2048):
        x = acts[start : start + 2048]
        feats = sae.encode(x)
        recon = sae.decode(feats)
        active = feats > 0
        fired += active.float().sum(0)
        l0_sum += float(active.float().sum())
        sq_err += float((x - recon).pow(2).sum())
    density = fired / total
    return SAEMetrics(
        explained_variance=round(1 - sq_err / max(var, 1e-12), 5),
        l0=round(l0_sum / total, 3),
        dead_fraction=round(float((fired == 0).float().mean()), 5),
        dense_fraction=round(float((density > 0.1).float().mean()), 5),
        mse=sq_err / (total * acts.shape[1]),
        eval_tokens=int(total),
    )


def evaluate_sae(
    bundle: Any,
    sae: Any,
    hook_name: str,
    texts: Sequence[str],
    max_tokens: int = 40_000,
    context_size: int = 128,
    progress: Progress | None = None,
) -> SAEMetrics:
    """`sae_quality` on held-out text."""
    return sae_quality(sae, collect_activations(bundle, hook_name, texts, max_tokens, context_size, progress=progress))
