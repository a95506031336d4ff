"""`ember-data`: synth (generated datasets), download (public datasets), teacher (distillation file)."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path


def cmd_synth(args: argparse.Namespace) -> int:
    from ..config import SynthConfig
    from ..data.synth import synth_all

    cfg = SynthConfig(scenes=args.scenes, caption_images=args.caption_images, image_size=args.image_size, seed=args.seed)
    counts = synth_all(Path(args.out), cfg, bad_rows=args.bad_rows)
    print(f"wrote synthetic datasets to {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from ..data.build import SHARED_ROBOT_SELECTION
    from ..data.download import SOURCES, check, download_source, format_report

    data_dir = Path(args.data_dir)
    if not args.check_only:
        for src in SOURCES:
            if args.only and src.name not in args.only:
                continue
            try:
                download_source(src, data_dir, SHARED_ROBOT_SELECTION)
            except OSError as e:
                print(f"ember-data: {src.name}: download failed: {e}", file=sys.stderr)
    report = check(data_dir)
    print(format_report(data_dir, report))
    wanted = [n for n in report if not args.only or n in args.only]
    return 0 if all(all(report[n].values()) for n in wanted) else 1


def cmd_teacher(args: argparse.Namespace) -> int:
    """Teacher logits for stage 2 from an EmberVLM checkpoint that shares the student's tokenizer."""
    import torch
    from torch.utils.data import DataLoader

    from ..checkpoint_format import CheckpointError, model_from_checkpoint, tokenizer_of
    from ..config import config_from_dict
    from ..data.build import SourceCache, build_stage_dataset, resolve_dirs
    from ..data.dataset import Collator
    from ..distill import teacher_records, write_teacher_logits
    from ..tokenizer import pad_id

    try:
        model, ckpt = model_from_checkpoint(args.checkpoint)
    except CheckpointError as exc:  # missing, damaged, or refused by the safe load: one line
        print(f"ember-data teacher: {exc}", file=sys.stderr)
        return 2
    cfg = config_from_dict({k: v for k, v in ckpt["config"].items()})
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, augment=False))
    dirs, needs_synth = resolve_dirs(cfg, args.data_dir, Path(args.checkpoint).parent)
    if needs_synth:
        print("ember-data teacher: give --data-dir (the student's data directory)", file=sys.stderr)
        return 2
    tok = tokenizer_of(ckpt)
    dataset = build_stage_dataset("instruct", cfg, SourceCache(cfg, dirs), tok)
    loader = DataLoader(dataset, batch_size=args.batch_size, collate_fn=Collator(pad_id(tok)))
    with torch.inference_mode():
        path = write_teacher_logits(args.out, teacher_records(model, loader), tok, args.k)
    print(f"wrote teacher logits for {len(dataset)} samples to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ember-data", description="Ember datasets: generate, download, check.")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("synth", help="write small generated datasets in every supported format")
    s.add_argument("--out", required=True)
    s.add_argument("--scenes", type=int, default=240, help="Incidents1M-format scenes")
    s.add_argument("--caption-images", type=int, default=120, help="images per caption/QA dataset")
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--bad-rows", type=int, default=0, help="defective rows of each kind per file (loader tests)")
    s.set_defaults(func=cmd_synth)
    d = sub.add_parser("download", help="fetch the public datasets, then report what is present")
    d.add_argument("--data-dir", required=True)
    d.add_argument("--check-only", action="store_true", help="only report; never touches the network")
    d.add_argument("--only", nargs="*", help="restrict to these sources (coco vqa llava flickr30k incidents robot_selection)")
    d.set_defaults(func=cmd_download)
    t = sub.add_parser("teacher", help="stage-2 teacher logits (.npz) from an EmberVLM checkpoint")
    t.add_argument("--checkpoint", required=True)
    t.add_argument("--data-dir", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--k", type=int, default=32, help="top-k logits kept per position")
    t.add_argument("--batch-size", type=int, default=16)
    t.set_defaults(func=cmd_teacher)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
