"""`earthembed train` and `python -m model.main`: flags -> config -> train_and_evaluate.

    earthembed train --data /tmp/td --workdir /tmp/run --config tiny --steps 200 \\
        --config.train.learning_rate=1e-3

This module is the command; `model.train` is the library it calls (imported only when a run
starts, so `--help` loads neither JAX nor TensorFlow). The flag style of other embedding
trainers is accepted and mapped onto the config:

    python -m model.main --data /tmp/td --workdir /tmp/run --architecture=adaptive_decoder \\
        --grid_resolution=10 --embedding_dim=64 --batch_size=2048 --learning_rate=1e-4 \\
        --loss=corr+align --epochs=30

`--architecture` names the architecture (`adaptive_decoder` / `stp`: the STP encoder with
implicit per-source decoders, the only one), `--grid_resolution` must be 10 (the grid's metres
per pixel), `--loss` lists the terms to keep (recon, uniform, consistency or corr, align or
text, label; the others get weight 0), `--epochs` sets the steps from the training example
count.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from model import configs

LOSS_TERMS = {
    "recon": "recon",
    "uniform": "uniform",
    "consistency": "consistency",
    "corr": "consistency",
    "align": "align",
    "text": "align",
    "label": "label",
}
ARCHITECTURES = ("adaptive_decoder", "stp")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="earthembed train",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, help="build-training-data output dir(s), comma list (required)"
    )
    p.add_argument(
        "--workdir", required=True, help="checkpoints, metrics, TensorBoard events (required)"
    )
    p.add_argument(
        "--config",
        default="tiny",
        choices=configs.NAMES,
        help="named config (model/configs); `--config.a.b=v` flags override its fields",
    )
    p.add_argument(
        "--steps", type=int, default=None, help="training steps; unset: config.train.steps"
    )
    p.add_argument("--seed", type=int, default=None, help="config.seed; unset: the config's")
    p.add_argument(
        "--architecture",
        default=None,
        help=f"one of {', '.join(ARCHITECTURES)} (both the STP encoder); unset: that one",
    )
    p.add_argument(
        "--grid_resolution", type=float, default=None, help="metres per pixel; must be 10"
    )
    p.add_argument(
        "--embedding_dim",
        type=int,
        default=None,
        help="config.model.embedding_dim; unset: the config's",
    )
    p.add_argument(
        "--batch_size", type=int, default=None, help="config.train.batch_size; unset: the config's"
    )
    p.add_argument(
        "--learning_rate",
        type=float,
        default=None,
        help="config.train.learning_rate; unset: the config's",
    )
    p.add_argument(
        "--loss",
        default=None,
        help="terms to keep joined by +: recon, uniform, corr, align, label; unset: all",
    )
    p.add_argument(
        "--epochs",
        type=float,
        default=None,
        help="passes over the training examples; sets the steps unless --steps is given",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def parse(argv: Sequence[str]):
    """argv -> (args, config) with `--config.a.b=v` overrides and the mapped flags applied."""
    argv = list(argv)
    overrides = [a[len("--config.") :] for a in argv if a.startswith("--config.")]
    rest = [a for a in argv if not a.startswith("--config.")]
    parser = build_parser()
    args = parser.parse_args(rest)
    config = configs.get(args.config)
    try:
        configs.apply_overrides(config, overrides)
    except ValueError as e:
        parser.error(str(e))
    if args.architecture is not None and args.architecture not in ARCHITECTURES:
        parser.error(f"--architecture must be one of {ARCHITECTURES}; got {args.architecture!r}")
    if args.grid_resolution is not None and args.grid_resolution != 10:
        parser.error("--grid_resolution: the grid is 10 m per pixel (schemas/grid.py)")
    if args.embedding_dim is not None:
        if args.embedding_dim < 2:
            parser.error("--embedding_dim must be >= 2")
        config.model.embedding_dim = args.embedding_dim
    if args.batch_size is not None:
        config.train.batch_size = args.batch_size
    if args.learning_rate is not None:
        config.train.learning_rate = args.learning_rate
    if args.seed is not None:
        config.seed = args.seed
    if args.loss is not None:
        terms = [t.strip() for t in args.loss.split("+") if t.strip()]
        unknown = [t for t in terms if t not in LOSS_TERMS]
        if unknown or not terms:
            parser.error(f"--loss: unknown terms {unknown}; known {sorted(LOSS_TERMS)}")
        keep = {LOSS_TERMS[t] for t in terms}
        for name in ("recon", "uniform", "consistency", "align", "label"):
            if name not in keep:
                config.loss[name] = 0.0
    if args.steps is not None:
        config.train.steps = args.steps
    elif args.epochs is not None:
        from model import input_pipeline, train

        n = sum(input_pipeline.open_data_dir(d).num_train for d in args.data.split(","))
        config.train.steps = train.steps_for_epochs(args.epochs, n, config.train.batch_size)
    if config.train.steps < 1:
        parser.error("--steps must be >= 1")
    return args, config


def run(argv: Sequence[str] | None = None) -> int:
    args, config = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from model import train

    data = [d for d in args.data.split(",") if d]
    train.train_and_evaluate(config, args.workdir, data, progress=not args.no_progress)
    print(f"trained {config.train.steps} steps; checkpoints in {args.workdir}/checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(run())
