"""`ember-train`: run training stages from a config (single process or under torchrun)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..config import ConfigError, load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ember-train", description="Train EmberVLM in four stages.")
    p.add_argument("--config", required=True, help="config/train/{tiny,small,full}.yaml")
    p.add_argument("--stage", choices=["1", "2", "3", "4", "all"], default="all",
                   help="1 alignment, 2 instruct, 3 incidents, 4 reasoning, or all in order")
    p.add_argument("--output-dir", help="run directory (checkpoints, metrics, plots, emissions)")
    p.add_argument("--resume", action="store_true", help="continue each stage from its newest checkpoint")
    p.add_argument("--data-dir", help="datasets in the official layouts (default: generated data in OUT/data)")
    p.add_argument("--print-params", action="store_true", help="print the parameter table and exit")
    args = p.parse_args(argv)
    if not args.print_params and not args.output_dir:
        p.error("--output-dir is required (except with --print-params)")
    return args


def one_line(error: Exception) -> str:
    """The error's message; one raised in a DataLoader worker arrives as 'Caught X in DataLoader worker
    process N.' plus that worker's traceback: then only the original message (its last line)."""
    text = str(error)
    if "\nOriginal Traceback" not in text:
        return text
    return text.rstrip().splitlines()[-1].split(": ", 1)[-1]


def print_params(cfg) -> None:
    from ..model import EmberVLM, format_param_table

    print(format_param_table(EmberVLM(cfg.model)), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"ember-train: {e}", file=sys.stderr)
        return 2
    if args.print_params:
        print_params(cfg)
        return 0

    from ..checkpoint_format import CheckpointError
    from ..data.common import DataError
    from ..distributed import init_distributed, shutdown_distributed
    from ..trainer import Trainer, TrainError

    ctx = init_distributed()
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    stages = [1, 2, 3, 4] if args.stage == "all" else [int(args.stage)]
    try:
        Trainer(cfg, args.output_dir, args.data_dir, args.resume, ctx).run(stages)
    except (TrainError, DataError, CheckpointError) as e:  # a bad run directory, dataset or checkpoint
        print(f"ember-train: {one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: step checkpoints are written atomically, the newest one stands
        print(f"ember-train: interrupted; continue from the newest step checkpoint with the same command and "
              f"--resume (--output-dir {args.output_dir})", file=sys.stderr)
        return 130
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
