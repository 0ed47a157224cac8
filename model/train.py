"""Training: pure jit-able steps, and the loop with checkpoints, metrics and evaluation.

    earthembed train --data /tmp/td --workdir /tmp/run --config tiny --steps 200

The command is `model.main` (`earthembed train`, `python -m model.main`); this module is the
library it calls and never imports it.

One step: the student (the trained parameters) encodes a perturbed copy of the batch (whole
sources, single frames or a half-year dropped for a fraction of the examples), decodes a
vMF sample around its mu at every frame of the valid period and is scored on the full,
unperturbed values (masked L1); the EMA teacher encodes the full batch and the student's
mu must agree with it (consistency); mu across the batch must not collapse (batch
uniformity); the mean mu of an example aligns with its label's embedding (CLIP-style), and
every pixel with a land-cover class is classified against the label table (label). Options:
`train.label_window` feeds that term unperturbed pixels of many recent examples instead of
the step's crops (LabelWindow), `loss.label_linear` adds it for the summary's linear
map alone, and `loss.linear_labels_only` lets only that term train the linear map.

Everything random in a step is drawn from (seed, step): the batch (see input_pipeline), the
context crop, the perturbation and the vMF sample, so a run resumed from a checkpoint ends
with the parameters of an uninterrupted one. Data parallel over a ('data', 'model') mesh of
all devices; the large config also shards its wide kernels over 'model'. On a multi-host pod
(`JAX_COORDINATOR_ADDRESS` or the TPU VM environment) `jax.distributed.initialize()` runs
first and every host reads its own files.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from model import features, input_pipeline, losses, modules, vmf

log = logging.getLogger(__name__)


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    ema_params: Any
    opt_state: Any
    nonfinite: jax.Array  # steps skipped because the loss or a gradient was not finite


# ------------------------------------------------------------------------------- setup


def maybe_initialize_distributed() -> bool:
    """`jax.distributed.initialize()` when a multi-host environment is configured."""
    multi = os.environ.get("JAX_COORDINATOR_ADDRESS") or (
        len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1
    )
    if multi and not jax.distributed.is_initialized():
        jax.distributed.initialize()
        return True
    return False


def make_mesh(config: ml_collections.ConfigDict, devices: Sequence | None = None) -> Mesh:
    """A ('data', 'model') mesh over all devices; 'model' has config.mesh.model of them."""
    devices = list(jax.devices() if devices is None else devices)
    n_model = int(config.mesh.model)
    if n_model < 1 or len(devices) % n_model:
        n_model = 1
    grid = np.array(devices).reshape(len(devices) // n_model, n_model)
    return Mesh(grid, ("data", "model"))


def param_sharding(params, mesh: Mesh):
    """Replicate small arrays; shard a kernel's output dim over 'model' when it divides."""
    n = mesh.shape["model"]

    def spec(x):
        if n > 1 and x.ndim >= 2 and x.shape[-1] % n == 0 and x.shape[-1] >= 256:
            return NamedSharding(mesh, P(*([None] * (x.ndim - 1)), "model"))
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map(spec, params)


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    t = config.train
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=t.learning_rate,
        warmup_steps=min(t.warmup_steps, max(t.steps - 1, 1)),
        decay_steps=max(t.steps, t.warmup_steps + 1),
        end_value=t.learning_rate * 0.01,
    )
    return optax.chain(
        optax.clip_by_global_norm(t.grad_clip),
        optax.adamw(schedule, weight_decay=t.weight_decay),
    )


def init_state(config: ml_collections.ConfigDict, sample_inputs: Mapping) -> TrainState:
    """Parameters from config.seed, optimizer state, the EMA teacher as a copy.

    Jitted: one compile (a persistent-cache hit where the shapes were compiled before)
    instead of the hundreds of op-by-op compiles of running it eagerly (tiny: 47 s -> 22 s
    on 2 cores), with the same bits as the eager run (`modules.normal_init`), so `make
    pretrain` still gives the shipped bundle.
    """
    return jax.jit(functools.partial(_init_state, config))(sample_inputs)


def _init_state(config: ml_collections.ConfigDict, sample_inputs: Mapping) -> TrainState:
    model = modules.create_model(config)
    key = jax.random.key(config.seed)
    params = model.init(key, sample_inputs, jax.random.fold_in(key, 1))["params"]
    params = dict(params)
    params["label_table"] = modules.normal_init(0.02)(
        jax.random.fold_in(key, 2), (config.model.num_classes, config.model.embedding_dim)
    )
    opt = make_optimizer(config)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        ema_params=jax.tree_util.tree_map(jnp.copy, params),
        opt_state=opt.init(params),
        nonfinite=jnp.zeros((), jnp.int32),
    )


def abstract_state(config: ml_collections.ConfigDict, sample_inputs: Mapping) -> TrainState:
    """Shapes and dtypes of the state, without computing it (for large configs, restores)."""
    return jax.eval_shape(functools.partial(_init_state, config), sample_inputs)


# ------------------------------------------------------------------------------- the step


def perturb(key: jax.Array, inputs: Mapping, config: ml_collections.ConfigDict) -> dict:
    """The student's view: for a fraction of examples drop sources, frames or a half-year."""
    t = config.train
    out = dict(inputs)
    b = inputs["period_days"].shape[0]
    keys = jax.random.split(key, 4)
    active = jax.random.uniform(keys[0], (b,)) < t.drop_prob
    half = jax.random.uniform(keys[1], (b,)) < t.drop_half_year_prob
    first = jax.random.uniform(keys[2], (b,)) < 0.5
    sources = [k[: -len("/mask")] for k in inputs if k.endswith("/mask")]
    src_keys = jax.random.split(keys[3], len(sources))
    for s, k in zip(sources, src_keys, strict=True):
        k1, k2 = jax.random.split(k)
        n_frames = inputs[f"{s}/t"].shape[1]
        drop_src = jax.random.uniform(k1, (b,)) < t.drop_source_prob
        drop_frame = jax.random.uniform(k2, (b, n_frames)) < t.drop_frame_prob
        tt = inputs[f"{s}/t"]
        mid = inputs["period_days"][:, None] / 2
        in_first = tt < mid
        drop_half = half[:, None] & jnp.where(first[:, None], in_first, ~in_first)
        if n_frames == 1:  # static layers carry no time to drop
            drop_half = jnp.zeros_like(drop_half)
        drop = drop_src[:, None] | drop_frame | drop_half
        keep = (~(active[:, None] & drop)).astype(inputs[f"{s}/mask"].dtype)
        out[f"{s}/mask"] = inputs[f"{s}/mask"] * keep[:, :, None, None]
        out[f"{s}/x"] = inputs[f"{s}/x"] * keep[:, :, None, None, None]
    return out


def reconstruction_targets(inputs: Mapping) -> dict[str, jax.Array]:
    """Where each source's values are scored: valid pixels and bands inside the valid period."""
    out = {}
    for k in inputs:
        if not k.endswith("/mask"):
            continue
        s = k[: -len("/mask")]
        t = inputs[f"{s}/t"]
        static = t.shape[1] == 1
        in_period = (
            jnp.ones_like(t, bool) if static else (t >= 0) & (t < inputs["period_days"][:, None])
        )
        m = inputs[f"{s}/mask"][..., None] * inputs[f"{s}/band_mask"][:, :, None, None, :]
        out[s] = m * in_period[:, :, None, None, None]
    return out


def loss_fn(params, ema_params, inputs, labels, key, config):
    """Total loss and its terms for one batch (the module docstring explains the terms)."""
    model = modules.create_model(config)
    w = config.loss
    k_perturb, k_vmf = jax.random.split(key)
    table = params["label_table"]
    model_params = {k: v for k, v in params.items() if k != "label_table"}
    linear = model_params["summarizer"].get("precision")  # None without a pixel summary
    if w.get("linear_labels_only", False) and linear is not None:
        # The summary's linear map learns from `label_linear` alone: every other term sees
        # it as a constant and trains the deep path, the gates and the decoders.
        summarizer = {**model_params["summarizer"], "precision": jax.lax.stop_gradient(linear)}
        model_params = {**model_params, "summarizer": summarizer}
    teacher_params = {k: v for k, v in ema_params.items() if k != "label_table"}
    mu_t, obs_t = model.apply({"params": teacher_params}, inputs, method=model.encode)
    mu_t = jax.lax.stop_gradient(mu_t)
    student_inputs = perturb(k_perturb, inputs, config)
    mu_s, obs_s, pred = model.apply({"params": model_params}, student_inputs, k_vmf)
    masks = reconstruction_targets(inputs)
    recon_terms = {
        s: losses.reconstruction_l1(pred=pred[s], target=inputs[f"{s}/x"], mask=masks[s])
        for s in pred
    }
    has = {s: (jnp.sum(masks[s]) > 0).astype(jnp.float32) for s in pred}
    recon = sum(recon_terms[s] * has[s] for s in pred) / jnp.maximum(sum(has.values()), 1.0)
    b, h, w_, d = mu_s.shape
    uniform = losses.batch_uniformity(
        mu=mu_s.transpose(1, 2, 0, 3).reshape(h * w_ * b, d), shift=1, mask=None
    )
    consistency = losses.consistency(mu_teacher=mu_t, mu_student=mu_s, mask=obs_t & obs_s)
    pooled = vmf.l2_normalize(jnp.sum(mu_s * obs_s[..., None], axis=(1, 2)))
    cls = labels["target/class_id"]
    has_label = (cls >= 0) & (cls < table.shape[0])
    text = vmf.l2_normalize(table[jnp.clip(cls, 0, table.shape[0] - 1)])
    align = losses.contrastive_alignment(
        embeddings=pooled, text_embeddings=text, temperature=w.temperature, mask=has_label
    )
    # Per-pixel label alignment: where a training pixel has a land-cover class, its mu is
    # scored against every row of the label table (a softmax over the classes at the
    # temperature): the label-embedding side of AEF's text alignment, at pixel level.
    # Which pixels: the step's own (perturbed) crops, or with `train.label_window` the
    # unperturbed pixels of many examples that LabelWindow keeps (encoded without context).
    # `loss.label_linear` weighs a second such term on the linear map of the pixel summary
    # alone (mu without its deep part): the labels then train that read-out directly.
    lc = jnp.asarray(labels["target/landcover"]).astype(jnp.int32)
    label_inputs, mu_l, obs_l = student_inputs, mu_s, obs_s
    window = labels.get("window")
    if window is not None:
        label_inputs = window["inputs"]
        lc = jnp.asarray(window["landcover"]).astype(jnp.int32)
        obs_l = jnp.ones(lc.shape, bool)
    if w.get("label", 0.0) and window is not None:
        strips = modules.create_model(_without_context(config))
        mu_l, obs_l = strips.apply({"params": model_params}, label_inputs, method=strips.encode)
    has_class = (lc >= 0) & (lc < table.shape[0])
    unit_table = vmf.l2_normalize(table)
    label = jnp.zeros(())
    if window is None or w.get("label", 0.0):
        label = losses.categorical_xent(
            logits=mu_l @ unit_table.T / w.temperature,
            labels=jnp.where(has_class & obs_l, lc, -1),
        )
    label_linear = jnp.zeros(())
    if w.get("label_linear", 0.0):
        summary = modules.pixel_summary(label_inputs, config.model)
        if summary is None:
            raise ValueError("loss.label_linear needs a pixel summary (model.harmonics/quantiles)")
        lin = vmf.l2_normalize(summary @ linear["kernel"] + linear["bias"])
        ok = has_class if window is not None else has_class & obs_s
        label_linear = losses.categorical_xent(
            logits=lin @ unit_table.T / w.temperature, labels=jnp.where(ok, lc, -1)
        )
    total = (
        w.recon * recon
        + w.uniform * uniform
        + w.consistency * consistency
        + w.align * align
        + w.get("label", 0.0) * label
        + w.get("label_linear", 0.0) * label_linear
    )
    metrics = {
        "loss": total,
        "recon": recon,
        "uniform": uniform,
        "consistency": consistency,
        "align": align,
        "label": label,
        "label_linear": label_linear,
        **{f"recon/{s}": v for s, v in recon_terms.items()},
    }
    return total, metrics


def _without_context(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with `model.context` off: strips of pixels from far apart have none."""
    c = ml_collections.ConfigDict(config.to_dict())
    c.model.context = False
    return c


def all_finite(loss: jax.Array, grads) -> jax.Array:
    """Whether the loss and every gradient value are finite (a bool scalar).

    One reduction over all the gradients' values: a stack of one check per array became a
    chain of 183 scalar ANDs (tiny) that XLA fused a copy of into each of the 4 x 183
    selects of `train_step`: 327k lines of compiled HLO, the test config's step compiled in
    106 s on CPU; 78k lines and 47 s this way, tiny_shipped's state bit-identical after 3
    steps (docs/experiments/2026-12-07-test-suite-compiles.md).
    """
    leaves = jax.tree_util.tree_leaves(grads)
    return jnp.isfinite(loss) & jnp.all(
        jnp.isfinite(jnp.concatenate([jnp.ravel(g) for g in leaves]))
    )


def train_step(state: TrainState, inputs, labels, key, config):
    """One optimizer step; a non-finite loss or gradient leaves the state unchanged."""
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    with modules.reference_attention():  # the gradients the shipped bundle was trained with
        (loss, metrics), grads = grad_fn(
            state.params, state.ema_params, inputs, labels, key, config
        )
    opt = make_optimizer(config)
    updates, new_opt = opt.update(grads, state.opt_state, state.params)
    new_params = optax.apply_updates(state.params, updates)
    decay = config.train.ema_decay
    new_ema = jax.tree_util.tree_map(
        lambda e, p: decay * e + (1 - decay) * p, state.ema_params, new_params
    )
    finite = all_finite(loss, grads)

    # A select per array, not one lax.cond over the state: a cond fuses the update
    # differently and the parameters differ in the last bits (1,130 of 203,354 after 3 steps
    # of tiny_shipped, measured when the finiteness check was still a stack of per-array
    # checks), so `make pretrain` would no longer repeat its bundle byte for byte.
    def pick(new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)

    params, ema_params, opt_state = (
        pick(new_params, state.params),
        pick(new_ema, state.ema_params),
        pick(new_opt, state.opt_state),
    )
    new_state = TrainState(
        step=state.step + 1,
        params=params,
        ema_params=ema_params,
        opt_state=opt_state,
        nonfinite=state.nonfinite + (~finite).astype(jnp.int32),
    )
    metrics["grad_norm"] = optax.global_norm(grads)
    metrics["finite"] = finite.astype(jnp.float32)
    return new_state, metrics


# Jitted steps of this process by (what a step reads of the config, state placement), oldest
# first: a run resumed or repeated in the same process (the tests, a notebook) reuses the
# compiled step. Compiling the test config's step again costs ~50 CPU s (~25 s without
# LLVM's optimizations, as the tests compile it); a persistent-cache hit still costs its trace and lowering (5-8 s) plus the load (1-17 s
# measured under load).
_STEP_FNS: dict = {}
_MAX_STEP_FNS = 4
# The train fields one step reads (the optimizer, the EMA, the perturbation); the step sees
# only these, the model and the loss sections (step_config), so a new read fails loudly.
_STEP_TRAIN_FIELDS = (
    "learning_rate",
    "warmup_steps",
    "steps",
    "weight_decay",
    "grad_clip",
    "ema_decay",
    "drop_prob",
    "drop_source_prob",
    "drop_frame_prob",
    "drop_half_year_prob",
)


def step_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of the part of `config` that `train_step` reads: model, loss, and the train
    fields of _STEP_TRAIN_FIELDS (not the loop's: log, eval and checkpoint intervals...)."""
    return ml_collections.ConfigDict(
        {
            "model": copy.deepcopy(config.model.to_dict()),
            "loss": copy.deepcopy(config.loss.to_dict()),
            "train": {k: config.train[k] for k in _STEP_TRAIN_FIELDS},
        }
    )


def shard_training(config: ml_collections.ConfigDict, mesh: Mesh, state: TrainState):
    """Place the state on the mesh; the jitted step with batch sharded over 'data'."""
    state_sharding = TrainState(
        step=NamedSharding(mesh, P()),
        params=param_sharding(state.params, mesh),
        ema_params=param_sharding(state.ema_params, mesh),
        opt_state=jax.tree_util.tree_map(lambda _: NamedSharding(mesh, P()), state.opt_state),
        nonfinite=NamedSharding(mesh, P()),
    )
    frozen = step_config(config)  # the step keeps the config it was compiled for
    leaves, treedef = jax.tree_util.tree_flatten(state_sharding)
    key = (json.dumps(frozen.to_dict(), sort_keys=True, default=repr), treedef, tuple(leaves))
    step_fn = _STEP_FNS.pop(key, None)
    if step_fn is None:
        data_sharding = NamedSharding(mesh, P("data"))
        step_fn = jax.jit(
            lambda s, x, y, k: train_step(s, x, y, k, frozen),
            in_shardings=(state_sharding, data_sharding, data_sharding, None),
            out_shardings=(state_sharding, None),
            donate_argnums=(0,),
        )
    _STEP_FNS[key] = step_fn  # (re)inserted last: the most recently used
    while len(_STEP_FNS) > _MAX_STEP_FNS:
        del _STEP_FNS[next(iter(_STEP_FNS))]
    return jax.device_put(state, state_sharding), step_fn


# ------------------------------------------------------------------------------- host side


@dataclasses.dataclass
class Batcher:
    """Raw parsed batches -> (model inputs, labels) with the step's context crop."""

    config: ml_collections.ConfigDict
    norm: Mapping

    def crop_size(self, step: int, patch_size: int) -> int:
        t = self.config.train
        sizes = [s for s in t.crop_sizes if s <= patch_size] or [patch_size]
        weights = np.array(
            [w for s, w in zip(t.crop_sizes, t.crop_weights, strict=False) if s <= patch_size]
        )
        if len(weights) != len(sizes) or weights.sum() <= 0:
            weights = np.ones(len(sizes))
        rng = np.random.default_rng([self.config.seed, step, 11])
        return int(rng.choice(sizes, p=weights / weights.sum()))

    def __call__(self, raw: Mapping, step: int, crop: int | None = None):
        p = raw["target/landcover"].shape[1]
        size = self.crop_size(step, p) if crop is None else crop
        rng = np.random.default_rng([self.config.seed, step, 13])
        raw = input_pipeline.crop_features(raw, size, rng)
        inputs = features.to_model_inputs(raw, self.norm, max_frames=self.config.model.max_frames)
        labels = {k: raw[k] for k in input_pipeline.TARGET_KEYS}
        return inputs, labels


class LabelWindow:
    """The pixels the label term scores with `train.label_window` = W > 0: `label_pixels` = k
    labelled pixels of every example of the last W steps, unperturbed.

    The step's own crops are 8 patches of up to 16 x 16 px: a few places per step whose
    pixels are near copies of each other. A linear map of the pixel summary trained offline
    on such patches reaches 0.957 at 10 labels on sim:101:tropical, and 0.971 on pixels from
    many examples (benchmarks/summary_fit.py; benchmarks/RESULTS.md, quality_model). Each
    example's k pixels (drawn from (seed, step), with replacement when it has fewer) sit side
    by side as a 1 x k strip of that example, so they keep its frames, times and period;
    slots of examples without labels, and of the W steps before the first, carry label -1.
    On resume the trainer refills the window from the batches it had read (exact resume).
    """

    def __init__(self, config: ml_collections.ConfigDict, norm: Mapping):
        self.config, self.norm = config, norm
        self.steps = int(config.train.get("label_window", 0))
        self.pixels = int(config.train.get("label_pixels", 8))
        self.items: list[tuple[dict, np.ndarray]] = []

    def strips(self, raw: Mapping, step: int) -> tuple[dict, np.ndarray]:
        """A raw batch -> (model inputs (B, T, 1, k, ...), landcover (B, 1, k))."""
        lc = np.asarray(raw["target/landcover"])
        b, p, _ = lc.shape
        k = self.pixels
        rng = np.random.default_rng([self.config.seed, step, 17])
        rows, cols = np.zeros((b, k), np.int64), np.zeros((b, k), np.int64)
        lab = np.full((b, k), -1, np.int64)
        for i in range(b):
            ok = np.flatnonzero((lc[i] >= 0) & (lc[i] < self.config.model.num_classes))
            if len(ok):
                pick = rng.choice(ok, k, replace=len(ok) < k)
                rows[i], cols[i] = np.divmod(pick, p)
                lab[i] = lc[i].reshape(-1)[pick]
        bi = np.arange(b)[:, None]
        out = {}
        for name, v in raw.items():
            if name.endswith("/values") or name.endswith("/valid"):  # (B, T, P, P, ...)
                g = np.moveaxis(np.asarray(v)[bi, :, rows, cols], 1, 2)  # (B, T, k, ...)
                out[name] = np.expand_dims(g, 2)
            elif name == "target/landcover":
                out[name] = lab[:, None, :]
            else:
                out[name] = v
        inputs = features.to_model_inputs(out, self.norm, max_frames=self.config.model.max_frames)
        return inputs, lab[:, None, :]

    def add(self, raw: Mapping, step: int) -> dict:
        """Add step `step`'s batch; the window as {"inputs", "landcover"}, W * B strips."""
        item = self.strips(raw, step)
        if not self.items:
            self.items = [(item[0], np.full_like(item[1], -1)) for _ in range(self.steps)]
        self.items = (self.items + [item])[-self.steps :]
        return {
            "inputs": {n: np.concatenate([it[0][n] for it in self.items]) for n in item[0]},
            "landcover": np.concatenate([it[1] for it in self.items]),
        }


def knn_probe(emb: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float | None:
    """Balanced 1-NN accuracy of labelled pixels, neighbours searched in other groups only.

    `groups` keeps pixels of one example out of each other's neighbours (they are nearly
    copies), so the score says how well the embedding generalizes across places.
    """
    ok = (labels >= 0) & np.all(np.isfinite(emb), axis=1)
    emb, labels, groups = emb[ok], labels[ok], groups[ok]
    if len(np.unique(labels)) < 2 or len(np.unique(groups)) < 2:
        return None
    sim = emb @ emb.T
    sim[groups[:, None] == groups[None, :]] = -np.inf
    pred = labels[np.argmax(sim, axis=1)]
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


def evaluate(model, params, dirs, batcher: Batcher, config) -> dict[str, float]:
    """Reconstruction error on eval examples and a kNN land-cover probe on their pixels."""
    encode = jax.jit(lambda p, x: model.apply({"params": p}, x))
    out: dict[str, float] = {}
    rng = np.random.default_rng(config.seed)
    for k, d in enumerate(dirs):
        errs, embs, labs, groups = [], [], [], []
        crop = min(d.patch_size, max(config.train.crop_sizes))
        for i, raw in enumerate(
            input_pipeline.eval_batches(
                d, batch_size=config.train.batch_size, max_batches=config.train.eval_batches
            )
        ):
            inputs, labels = batcher(raw, 0, crop=crop)
            mu, observed, pred = encode(params, inputs)
            masks = reconstruction_targets(inputs)
            err = [
                float(jnp.sum(jnp.abs(pred[s] - inputs[f"{s}/x"]) * masks[s]))
                / max(float(jnp.sum(masks[s])), 1.0)
                for s in pred
                if float(jnp.sum(masks[s])) > 0
            ]
            errs.append(np.mean(err) if err else np.nan)
            mu = np.asarray(mu).reshape(-1, mu.shape[-1])
            lc = labels["target/landcover"].reshape(-1)
            g = np.repeat(np.arange(len(labels["target/landcover"])) + 1000 * i, crop * crop)
            take = rng.permutation(len(lc))[: 256 * len(labels["target/landcover"])]
            embs.append(mu[take]), labs.append(lc[take]), groups.append(g[take])
        if not errs:
            continue
        out[f"eval/{k}/recon_l1"] = float(np.nanmean(errs))
        acc = knn_probe(np.concatenate(embs), np.concatenate(labs), np.concatenate(groups))
        if acc is not None:
            out[f"eval/{k}/knn_balanced_accuracy"] = acc
    return out


class MetricLog:
    """metrics.jsonl (always) and TensorBoard summaries (clu writer) in the workdir."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.enabled = enabled
        self.writer = None
        if enabled:
            try:
                from clu import metric_writers

                self.writer = metric_writers.create_default_writer(workdir, just_logging=False)
            except Exception as e:  # TensorBoard is a convenience; JSONL is the record
                log.warning("TensorBoard writer unavailable (%s); metrics.jsonl only", e)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: float(v) for k, v in metrics.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            self.writer.write_scalars(int(step), {k: float(v) for k, v in metrics.items()})

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def checkpoint_manager(workdir: str, config):
    import orbax.checkpoint as ocp

    path = workdir if "://" in workdir else os.path.abspath(workdir)
    return ocp.CheckpointManager(
        os.path.join(path, "checkpoints"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=config.train.keep_checkpoints, create=True
        ),
    )


def write_run_files(workdir: str, config, norm_stats: Mapping, data: Sequence[str]) -> None:
    """config.json and stats.json beside the checkpoints (export copies them into bundles)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(workdir)
    with tf.io.gfile.GFile(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(config.to_dict(), f, indent=2, default=list)
    with tf.io.gfile.GFile(os.path.join(workdir, "stats.json"), "w") as f:
        json.dump({**norm_stats, "data": list(data)}, f, indent=2)


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    data: Sequence[str],
    *,
    stop_after: int | None = None,
    progress: bool = True,
) -> TrainState:
    """Train config.train.steps steps (resuming from the latest checkpoint in workdir).

    Args:
      config: a full config (model/configs).
      workdir: checkpoints, metrics.jsonl, TensorBoard events, config.json, stats.json.
      data: build-training-data output directories.
      stop_after: stop (with a checkpoint) after this step, as if interrupted; for tests.
      progress: show a progress bar.
    """
    maybe_initialize_distributed()
    dirs = [input_pipeline.open_data_dir(p) for p in data]
    stats = features.pool_stats([d.stats for d in dirs])
    norm = features.normalizer(stats, std_floor=config.train.std_floor)
    primary = jax.process_index() == 0
    if primary:
        write_run_files(workdir, config, stats, data)
    mesh = make_mesh(config)
    n_data = mesh.shape["data"]
    if config.train.batch_size % n_data:
        raise ValueError(
            f"train.batch_size {config.train.batch_size} is not a multiple of the {n_data} "
            "data-parallel devices"
        )
    batcher = Batcher(config, norm)
    sample = features.empty_inputs(config.train.batch_size, 1, config.model.max_frames)
    state = init_state(config, sample)
    mngr = checkpoint_manager(workdir, config)
    start = 0
    if mngr.latest_step() is not None:
        import orbax.checkpoint as ocp

        start = int(mngr.latest_step())
        state = mngr.restore(start, args=ocp.args.StandardRestore(state))
        log.info("resumed from step %d", start)
    state, step_fn = shard_training(config, mesh, state)
    model = modules.create_model(config)
    metric_log = MetricLog(workdir, enabled=primary)
    batches = input_pipeline.TrainBatches(
        dirs,
        batch_size=config.train.batch_size,
        seed=config.seed,
        start_step=start,
        shuffle_buffer=config.train.shuffle_buffer,
        weights=tuple(config.train.get("data_weights", ())),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    label_window = LabelWindow(config, norm)
    if label_window.steps and start:
        # Refill the window with the batches of the steps before `start`, as they were.
        replay = input_pipeline.TrainBatches(
            dirs,
            batch_size=config.train.batch_size,
            seed=config.seed,
            start_step=max(0, start - label_window.steps),
            shuffle_buffer=config.train.shuffle_buffer,
            weights=tuple(config.train.get("data_weights", ())),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        for step, _, raw in replay:
            if step >= start:
                break
            label_window.add(raw, step)
    total = config.train.steps
    end = total if stop_after is None else min(total, stop_after)
    bar = None
    if progress and primary:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True)
    key = jax.random.key(config.seed + 1)
    t0, n_examples, acc = time.perf_counter(), 0, []
    for step, _, raw in batches:
        if step >= end:
            break
        inputs, labels = batcher(raw, step)
        if label_window.steps:
            labels = dict(labels, window=label_window.add(raw, step))
        state, metrics = step_fn(state, inputs, labels, jax.random.fold_in(key, step))
        n_examples += config.train.batch_size
        acc.append(metrics)
        done = step + 1
        if done % config.train.log_every == 0 or done == end:
            row = {k: float(np.mean([float(m[k]) for m in acc])) for k in acc[0]}
            elapsed = time.perf_counter() - t0
            row["examples_per_s"] = n_examples / elapsed
            row["nonfinite_steps"] = float(state.nonfinite)
            metric_log.write(done, row)
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.4f}", recon=f"{row['recon']:.4f}")
            acc = []
        if done % config.train.eval_every == 0 or done == total:
            ev = evaluate(model, _model_params(state.ema_params), dirs, batcher, config)
            metric_log.write(done, ev)
            log.info("step %d eval %s", done, ev)
        if done % config.train.checkpoint_every == 0 or done == end:
            mngr.save(done, args=_save_args(state))
        if bar is not None:
            bar.update(1)
    mngr.wait_until_finished()
    if bar is not None:
        bar.close()
    metric_log.close()
    return state


def _save_args(state: TrainState):
    import orbax.checkpoint as ocp

    return ocp.args.StandardSave(state)


def _model_params(params):
    return {k: v for k, v in params.items() if k != "label_table"}


def restore_latest(workdir: str, config, *, ema: bool = True):
    """The latest checkpoint's model parameters (EMA teacher by default) and its step."""
    import orbax.checkpoint as ocp

    mngr = checkpoint_manager(workdir, config)
    step = mngr.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir}: no checkpoints")
    target = abstract_state(config, features.empty_inputs(1, 1, config.model.max_frames))
    state = mngr.restore(step, args=ocp.args.StandardRestore(target))
    params = state.ema_params if ema else state.params
    return _model_params(params), int(step)


def steps_for_epochs(epochs: float, num_examples: int, batch_size: int) -> int:
    return max(1, math.ceil(epochs * num_examples / batch_size))
