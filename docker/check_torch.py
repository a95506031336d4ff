"""Build-time guard of the training image: the base image's torch must be the pinned one.

    python check_torch.py requirements/train.txt [--require-cuda]

Exit 1 with a message naming both versions when torch differs from the `torch==` pin of
the requirements file (pip would then install a second, multi-GB torch over the base
image's), or, with --require-cuda, when this torch build has no CUDA.
"""

from __future__ import annotations

import argparse
import re
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def pinned_torch(requirements: Path) -> str:
    """The version of the `torch==X` line of a requirements file."""
    m = re.search(r"^\s*torch==([\w.]+)", requirements.read_text(), re.M)
    if not m:
        raise SystemExit(f"{requirements} has no torch==<version> pin")
    return m.group(1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("requirements", type=Path)
    p.add_argument("--require-cuda", action="store_true")
    args = p.parse_args(argv)
    pin = pinned_torch(args.requirements)
    try:
        installed = version("torch")
    except PackageNotFoundError:
        print("torch is not installed in the base image: use a CUDA PyTorch base image", file=sys.stderr)
        return 1
    if installed.split("+")[0] != pin:
        print(f"torch {installed} in the base image, {args.requirements} pins {pin}: "
              "pick a PYTORCH_IMAGE with that torch", file=sys.stderr)
        return 1
    import torch

    if args.require_cuda and torch.version.cuda is None:
        print(f"torch {torch.__version__} has no CUDA: use a CUDA PyTorch base image", file=sys.stderr)
        return 1
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
