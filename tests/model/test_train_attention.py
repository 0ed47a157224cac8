"""Training traces attention in flax's layout; inference in the heads-first one.

`make pretrain` reproduces the shipped bundle byte for byte only with the gradients it was
trained with (flax's `dot_product_attention` layout; model/modules.py `reference_attention`).
These tests trace (not compile) a training step and an inference call of the shrunk config
and check which attention function each reaches.
"""

from __future__ import annotations

import functools

import jax
import pytest

from model import modules, train


@pytest.fixture
def heads_first_calls(monkeypatch):
    """Counts the traces that reach the heads-first (inference) attention."""
    calls = []
    original = modules._heads_first_attention

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(modules, "_heads_first_attention", counted)
    return calls


def test_training_step_uses_flax_attention_and_inference_heads_first(
    small_config, one_step_inputs, heads_first_calls
):
    c = small_config(steps=12)
    x, labels = one_step_inputs(c.model.max_frames)
    state = train.abstract_state(c, x)  # init traces the model too (shapes only)
    heads_first_calls.clear()
    step = functools.partial(train.train_step, config=c)
    out = jax.eval_shape(step, state, x, labels, jax.random.key(0))
    assert out[0].params.keys() == state.params.keys()
    assert heads_first_calls == []  # the step never reached the inference layout
    assert not modules._REFERENCE_ATTENTION[0]  # and left the switch as it found it

    model = modules.create_model(c)
    params = {k: v for k, v in state.params.items() if k != "label_table"}
    jax.eval_shape(lambda p, i: model.apply({"params": p}, i, method=model.encode), params, x)
    assert heads_first_calls, "inference no longer reaches the heads-first attention"
