"""large: about 480M parameters, for TPU pod slices (data x model mesh).

python -m model.main --config=large --data gs://b/td --workdir gs://b/runs/large
"""

from __future__ import annotations

import ml_collections

from model.configs import base


def get_config() -> ml_collections.ConfigDict:
    c = base.get_config()
    c.name = "large"
    c.model.width = 1024
    c.model.heads = 16
    c.model.depth = 9
    c.model.decoder_width = 512
    c.model.decoder_depth = 4
    c.train.batch_size = 512
    c.train.learning_rate = 3e-4
    c.train.steps = 500_000
    c.mesh.model = 4
    return c
