"""base: one GPU (an H100 trains it in hours).

earthembed train --data gs://b/td --workdir gs://b/runs/base --config base
"""

from __future__ import annotations

import ml_collections

from model.configs import tiny


def get_config() -> ml_collections.ConfigDict:
    c = tiny.get_config()
    c.name = "base"
    c.model.width = 256
    c.model.heads = 8
    c.model.depth = 6
    c.model.mlp_ratio = 4
    c.model.decoder_width = 256
    c.model.decoder_depth = 3
    c.model.max_frames = 16
    c.model.dtype = "bfloat16"
    c.train.batch_size = 64
    c.train.steps = 100_000
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 2000
    c.train.crop_sizes = (1, 8, 16, 32, 64)
    c.train.crop_weights = (0.1, 0.1, 0.2, 0.3, 0.3)
    c.train.shuffle_buffer = 2048
    c.train.eval_every = 2000
    c.train.checkpoint_every = 2000
    return c
