"""tiny: trains on a 2-core CPU in minutes; the tests and the shipped demo model use it.

    earthembed train --data /tmp/td --workdir /tmp/tiny --config tiny --steps 200

The shipped model/weights/tiny is `tiny_shipped` (model/configs/tiny_shipped.py): this
config with data_weights over the four directories of scripts/pretrain.sh (`make pretrain`),
a label window, the label term on the summary's linear map alone and a bundle that embeds
without the DEM (tiny-e554d1efcdb0: 0.974 vs 0.952 at 10 labels on sim:101:tropical); the
tests keep the defaults below.
The sim:101:tropical figures in the comments below compare settings on the region cached
before the simulator's first commit; the fresh region scores lower (benchmarks/RESULTS.md,
quality_model).
"""

from __future__ import annotations

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.name = "tiny"
    c.seed = 0

    m = c.model = ml_collections.ConfigDict()
    m.embedding_dim = 64
    m.width = 32  # features of every path
    m.heads = 4
    m.queries = 8  # summarizer queries (temporal views pooled per pixel)
    m.depth = 2  # STP blocks
    m.mlp_ratio = 2
    m.timecode_freqs = 8  # sinusoidal frequencies (periods 1 day .. ~2 years)
    m.decoder_width = 64
    m.decoder_depth = 2
    # vMF concentration of the decoders' sample. At 1000 (noise ~0.25 rad on S^63) the encoder
    # collapsed to one direction in the first 500 steps: the decoders could not use z yet.
    m.kappa = 8000.0
    m.num_classes = 64  # label-alignment table size
    m.max_frames = 12  # frames per time-varying source the model trains on
    # Frames per source when embedding (0: max_frames). Trained on 12 (half the cost), the
    # model given 24 scores 0.963 vs 0.950 given 12 (sim:101:tropical, 10 labels, 5 draws;
    # benchmarks/RESULTS.md, quality_model).
    m.embed_max_frames = 24
    # Frames per source of the per-pixel summary when embedding (0: the deep path's frames).
    # The summary (quantiles, harmonics) is cheap per frame, so at inference it takes every
    # clear frame of the year (up to 96) while the attention paths take embed_max_frames:
    # the shipped weights score 0.959 vs 0.952 with 24 (sim:101:tropical, 10 labels, 30 draws).
    m.summary_max_frames = 96
    # Comma-separated sources a bundle leaves out when it embeds (training reads them all).
    # The shipped bundle sets "cop_dem" (tiny_shipped): with the DEM its label-trained
    # read-out maps a wetland on higher ground to forest; without it, 0.974 vs 0.965 at 10
    # labels on sim:101:tropical (benchmarks/RESULTS.md, quality_model).
    m.embed_without = ""
    m.dtype = "float32"
    # Harmonics of the year in the per-pixel summary that reaches mu linearly (0: none).
    # Without it the deep path alone lost most of the inputs' information in CPU-length
    # training (few-shot 0.39 at 10 labels vs 0.90 for the mean S2 input frame).
    m.harmonics = 2
    # Quantiles of each band over the valid frames, in the same per-pixel summary.
    m.quantiles = (0.1, 0.5, 0.9)
    m.context = True  # False: an ablation, mu from each pixel's own frames only

    t = c.train = ml_collections.ConfigDict()
    t.batch_size = 8
    t.steps = 1500
    t.learning_rate = 1e-3
    t.warmup_steps = 100
    t.weight_decay = 1e-4
    t.grad_clip = 1.0
    t.ema_decay = 0.99
    t.crop_sizes = (1, 16)  # context sizes drawn per step, down to 1 x 1
    t.crop_weights = (0.2, 0.8)  # (each size compiles once: few sizes keep CPU runs short)
    t.data_weights = ()  # per --data directory; empty = by training example count
    t.drop_prob = 0.5  # chance an example's student input is perturbed
    t.drop_source_prob = 0.3
    t.drop_frame_prob = 0.3
    t.drop_half_year_prob = 0.25
    t.std_floor = 1e-3
    # The label term's pixels: 0 scores the step's own crops; W > 0 scores `label_pixels`
    # unperturbed labelled pixels of every example of the last W steps (train.LabelWindow).
    t.label_window = 0
    t.label_pixels = 8
    t.shuffle_buffer = 256
    t.log_every = 25
    t.eval_every = 500
    t.eval_batches = 4
    t.checkpoint_every = 500
    t.keep_checkpoints = 2

    w = c.loss = ml_collections.ConfigDict()
    w.recon = 1.0
    # Batch uniformity. Before the linear skip and the label term, tiny collapsed at AEF's
    # ~0.05 (batch |mu.mu'| -> 0.98) and trained at 0.5; with them it holds at 0.02 (|mu.mu'|
    # 0.42) and few-shot accuracy rises: 0.960 / 0.959 / 0.956 at 0.02 / 0.1 / 0.5
    # (sim:101:tropical, 10 labels, 30 draws; benchmarks/RESULTS.md, quality_model).
    w.uniform = 0.02
    w.consistency = 0.02
    w.align = 0.001
    w.label = 1.0  # per-pixel land-cover alignment where training pixels have a class
    # Label/alignment softmax temperature; 0.1 scored 0.955 vs 0.957 at 0.07 (sim:101:tropical,
    # 10 labels, 30 draws, one build; benchmarks/RESULTS.md, quality_model).
    w.temperature = 0.07
    # The same term on the summary's linear map alone (mu without its deep part).
    w.label_linear = 0.0
    # True: only label_linear trains the summary's linear map (the other terms see it frozen).
    w.linear_labels_only = False

    c.mesh = ml_collections.ConfigDict()
    c.mesh.model = 1  # size of the 'model' axis; the rest of the devices form 'data'
    return c
