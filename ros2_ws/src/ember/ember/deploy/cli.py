"""`ember-deploy`: build and verify the folder that goes onto a robot's computer.

    ember-deploy package --bundle build/bundle --out dist/drone_1 [--config config/fleet.yaml] [--robot-id drone_1]
    ember-deploy check dist/drone_1 [--threads 1] [--image photo.jpg]
    ember-deploy swap-bundle /opt/ember/.bundle.new /opt/ember/bundle
"""

from __future__ import annotations

import argparse
import sys

from ember.deploy.package import PackageError, build_package


def _at_least_one(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not (text.strip().isascii() and text.strip().isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, not {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ember-deploy command line."""
    p = argparse.ArgumentParser(prog="ember-deploy", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    pk = sub.add_parser("package", help="assemble the deployment folder for one robot")
    pk.add_argument("--bundle", required=True, help="model bundle directory (hash-checked before copying)")
    pk.add_argument("--out", required=True, help="output folder (created; must be empty unless --force)")
    pk.add_argument("--config", default=None, help="fleet config (default: config/fleet.yaml of this install)")
    pk.add_argument("--robot-id", default=None, help="robot of the fleet config (default: its first robot)")
    pk.add_argument("--force", action="store_true", help="replace an existing package at --out")

    ck = sub.add_parser("check", help="verify a package (or a bare bundle) and run the engine once")
    ck.add_argument("dir", help="package folder written by `ember-deploy package` (or a bundle folder)")
    ck.add_argument("--threads", type=_at_least_one, default=1, help="onnxruntime threads for the smoke analysis")
    ck.add_argument("--image", default=None, help="analyse this image instead of a generated one")
    ck.add_argument("--max-new-tokens", type=_at_least_one, default=8, help="tokens to generate in the smoke analysis")
    ck.add_argument("--no-engine", action="store_true", help="only check files, do not load the engine")

    sw = sub.add_parser("swap-bundle", help="check a new bundle, then swap it in at a live bundle path in one "
                                            "atomic step (running nodes load it by themselves)")
    sw.add_argument("new", help="the new bundle, copied beside the live one (same filesystem); it is moved "
                                "(a symlinked live path is pointed at it instead, and it stays)")
    sw.add_argument("live", help="the bundle path the robot's nodes run (its old contents are removed; a symlink "
                                 "is re-pointed, its old target kept)")
    sw.add_argument("--threads", type=_at_least_one, default=1, help="onnxruntime threads for the check analysis")
    return p


def _swap(args: argparse.Namespace) -> int:
    """`swap-bundle`: 0 swapped, 1 the new bundle failed its check (nothing changed), 2 bad paths."""
    from ember.deploy.swap import SwapError, swap_bundle

    try:
        result, failures = swap_bundle(args.new, args.live, threads=args.threads)
    except SwapError as exc:
        print(f"ember-deploy swap-bundle: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ember-deploy swap-bundle: cannot swap {args.new} in at {args.live}: {exc}", file=sys.stderr)
        return 2
    if result is None:
        print(f"ember-deploy swap-bundle: {args.new} failed its check, not swapped in ({args.live} unchanged): "
              + "; ".join(failures), file=sys.stderr)
        return 1
    live = f"{result.live} -> {result.link_target}" if result.link_target else str(result.live)
    was = [f"was {result.old_version}"] if result.old_version else []
    if result.old_link_target:
        was.append(f"{result.old_link_target} is kept: swap it back to roll back")
    was_text = f" ({', '.join(was)})" if was else ""
    print(f"{live} now holds model {result.new_version}{was_text}; running nodes load it within two "
          "bundle_check_period_s, or at once on their reload_model service")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success; 1 when a check fails; 2 for a package that cannot be built (or paths that
    cannot be swapped)."""
    args = build_parser().parse_args(argv)
    if args.command == "swap-bundle":
        return _swap(args)
    if args.command == "package":
        try:
            res = build_package(args.bundle, args.out, args.config, args.robot_id, force=args.force)
        except PackageError as exc:
            print(f"ember-deploy package: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:  # the output's folder is a file, the disk is full or read-only
            print(f"ember-deploy package: cannot write the package to {args.out}: {exc}", file=sys.stderr)
            return 2
        print(
            f"wrote {res.path}: robot {res.robot_id} ({res.robot_type}), model {res.model_version}, "
            f"{res.files} files, {res.bytes / 1e6:.1f} MB"
        )
        if res.kept_venv and res.requirements_changed:
            print(f"kept its .venv, but the requirements changed: run {res.path.name}/run.sh setup again")
        elif res.kept_venv:
            print(f"kept its .venv (run.sh setup's environment); check it: {res.path.name}/run.sh check")
        else:
            print(f"copy it to the robot, then: {res.path.name}/run.sh setup && {res.path.name}/run.sh check")
        return 0

    from ember.deploy.check import check_package

    report = check_package(
        args.dir,
        threads=args.threads,
        image=args.image,
        max_new_tokens=args.max_new_tokens,
        load_engine=not args.no_engine,
    )
    for line in report.lines():
        print(line)
    if report.ok:
        print(f"{args.dir}: all checks passed")
        return 0
    print(f"{args.dir}: {len(report.failures)} check(s) failed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
