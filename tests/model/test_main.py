"""model/main.py: flags map onto config fields; bad flags are named."""

from __future__ import annotations

import pytest

from model import main


def test_familiar_flags_map_onto_the_config():
    args, c = main.parse(
        ["--data", "d", "--workdir", "w", "--model=adaptive_decoder", "--grid_resolution=10"]
        + ["--embedding_dim=32", "--batch_size=16", "--learning_rate=1e-4", "--loss=corr+align"]
        + ["--steps", "5", "--config.model.depth=3", "--config.train.crop_sizes=(1,8)"]
    )
    assert c.model.embedding_dim == 32 and c.train.batch_size == 16
    assert c.train.learning_rate == 1e-4 and c.train.steps == 5 and c.model.depth == 3
    assert tuple(c.train.crop_sizes) == (1, 8)
    assert c.loss.recon == 0 and c.loss.uniform == 0
    assert c.loss.consistency > 0 and c.loss.align > 0 and c.loss.label == 0


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--grid_resolution=30", "10 m"),
        ("--model=unet", "--model"),
        ("--loss=recon+magic", "magic"),
        ("--config.model.nope=1", "nope"),
    ],
)
def test_bad_flags_are_named(flag, message, capsys):
    with pytest.raises(SystemExit):
        main.parse(["--data", "d", "--workdir", "w", flag])
    assert message in capsys.readouterr().err


def test_epochs_set_steps_from_the_example_count(tiny_td):
    _, c = main.parse(["--data", str(tiny_td), "--workdir", "w", "--epochs=2", "--batch_size=4"])
    from model import input_pipeline

    n = input_pipeline.open_data_dir(str(tiny_td)).num_train
    assert c.train.steps == -(-2 * n // 4)
