"""`ember-train`: run training stages from a config (single process or under torchrun)."""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import signal
import sys
from pathlib import Path

from ..config import ConfigError, load_config
from ..stop_signals import Interrupted, Stopped, StopSignals, exit_code, signal_name


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


def resume_command(argv: list[str], distributed: bool) -> str:
    """The command that continues this run: this one with --resume. Under torchrun it is the
    launcher's command line (the rank's parent, read from /proc; on every node its own)."""
    args = [*argv, *([] if "--resume" in argv else ["--resume"])]
    if distributed:
        try:
            parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().decode().split("\0")[:-1]
        except (OSError, UnicodeDecodeError):
            parent = []
        if any("torchrun" in a or a == "torch.distributed.run" for a in parent[:3]) and parent[-len(argv):] == argv:
            return shlex.join([*parent, *args[len(argv):]])
        return f"the same launcher command with these arguments: {shlex.join(args)}"
    if Path(sys.argv[0]).name == "ember-train":  # the console script
        script = Path(sys.argv[0]).resolve()
        on_path = shutil.which("ember-train")
        prog = ["ember-train"] if on_path and Path(on_path).resolve() == script else [str(script)]
    else:  # python -m ember_training.cli.train, or main() called from Python
        prog = [sys.executable, "-m", "ember_training.cli.train"]
    return shlex.join([*prog, *args])


def stop_line(stop: Interrupted, command: str) -> str:
    """The one line ember-train ends with on a stop signal."""
    name = signal_name(stop.signum)
    if isinstance(stop, Stopped):
        where = f"after step {stop.step} of stage {stop.stage} ({stop.name}): saved {stop.checkpoint}"
    else:
        where = "outside the training steps: the newest checkpoint stands (files are replaced atomically)"
    return f"ember-train: interrupted by {name} {where}; continue with: {command}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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

    # SIGTERM/SIGINT/SIGUSR1 end the run after the step in progress (stop_signals.py; exit 128 + signal)
    stop = StopSignals().install()
    ctx = None
    try:
        from ..checkpoint_format import CheckpointError
        from ..data.common import DataError
        from ..distributed import init_distributed
        from ..trainer import Trainer, TrainError

        ctx = init_distributed()
        if not ctx.is_main:
            logging.getLogger().setLevel(logging.WARNING)
        stages = [1, 2, 3, 4] if args.stage == "all" else [int(args.stage)]
        try:
            Trainer(cfg, args.output_dir, args.data_dir, args.resume, ctx, stop).run(stages)
        except (TrainError, DataError, CheckpointError) as e:  # a bad run directory, dataset or checkpoint
            print(f"ember-train: {one_line(e)}", file=sys.stderr)
            return 1
    except KeyboardInterrupt as e:  # a stop signal: a checkpoint of the step it ended, or the newest stands
        stopped = e if isinstance(e, Interrupted) else Interrupted(signal.SIGINT)
        if ctx is None or ctx.is_main:
            print(stop_line(stopped, resume_command(argv, ctx is not None and ctx.enabled)), file=sys.stderr, flush=True)
        return exit_code(stopped.signum)
    finally:
        if ctx is not None:
            from ..distributed import shutdown_distributed

            shutdown_distributed()
        stop.restore()  # main() called from Python: the caller's handlers again
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
