"""A small Dockerfile reader for the tests: instructions, COPY sources and the image layout.

No Docker engine runs here, so the tests rebuild what `COPY` would put into an image from
the repository (honouring the Dockerfile's `.dockerignore`) and check it: every source
exists and is in the build context, and every symlink resolves inside the image.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: keyword, raw arguments and its first line number."""

    keyword: str
    args: str
    line: int


_HEREDOC = re.compile(r"<<-?\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)['\"]?")


def parse(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile (comments dropped, continuations joined, heredoc bodies kept out)."""
    out: list[Instruction] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        raw = lines[i]
        start = i + 1
        i += 1
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        text = raw.rstrip()
        while text.endswith("\\") and i < len(lines):
            nxt = lines[i]
            i += 1
            if nxt.lstrip().startswith("#"):
                continue
            text = text[:-1] + " " + nxt.strip()
        for marker in _HEREDOC.findall(text):
            while i < len(lines) and lines[i].strip() != marker:
                i += 1
            i += 1
        keyword, _, args = text.strip().partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    return out


def split_args(args: str) -> list[str]:
    """Arguments of an instruction in JSON (exec) or shell form."""
    if args.startswith("["):
        return [str(a) for a in json.loads(args)]
    return shlex.split(args)


@dataclass(frozen=True)
class Copy:
    """A COPY from the build context: sources (context-relative) and the absolute destination."""

    sources: tuple[str, ...]
    dest: str
    line: int


def copies(instructions: list[Instruction]) -> list[Copy]:
    """Every COPY/ADD from the build context, with destinations made absolute through WORKDIR."""
    workdir = "/"
    out = []
    for ins in instructions:
        if ins.keyword == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, ins.args))
        if ins.keyword not in ("COPY", "ADD"):
            continue
        parts = split_args(ins.args)
        flags = [p for p in parts if p.startswith("--")]
        if any(f.startswith("--from") for f in flags):
            continue
        paths = [p for p in parts if not p.startswith("--")]
        dest = paths[-1]
        absolute = posixpath.normpath(posixpath.join(workdir, dest))
        if dest.endswith("/") or dest in (".", "./"):
            absolute = absolute.rstrip("/") + "/"
        out.append(Copy(tuple(paths[:-1]), absolute, ins.line))
    return out


class DockerIgnore:
    """`.dockerignore` matching as BuildKit does it: last matching pattern wins, `!` re-includes."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, re.Pattern[str]]] = []
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
            self.rules.append((negate, re.compile(self._regex(pattern))))

    @staticmethod
    def _regex(pattern: str) -> str:
        out, i = "", 0
        while i < len(pattern):
            c = pattern[i]
            if pattern.startswith("**/", i):
                out += "(?:.*/)?"
                i += 3
                continue
            if pattern.startswith("**", i):
                out += ".*"
                i += 2
                continue
            out += "[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c)
            i += 1
        return f"^{out}$"

    def excluded(self, rel: str) -> bool:
        """Whether a context-relative path is left out of the build context.

        A pattern also matches every path below a matching directory.
        """
        parts = rel.split("/")
        prefixes = ["/".join(parts[: k + 1]) for k in range(len(parts))]
        result = False
        for negate, rx in self.rules:
            if any(rx.match(p) for p in prefixes):
                result = not negate
        return result


def ignore_file_for(dockerfile: Path) -> Path:
    """The ignore file BuildKit uses for this Dockerfile: `<name>.dockerignore` beside it."""
    return dockerfile.with_name(dockerfile.name + ".dockerignore")


def image_layout(root: Path, dockerfile: Path) -> tuple[dict[str, Path], list[str]]:
    """Image path -> source path for everything the Dockerfile copies, plus the problems found.

    Problems: a source that does not exist or is excluded from the build context. Symlinks
    inside copied folders are kept as links (as COPY does); a copied file that is excluded
    by the ignore file is not in the image.
    """
    ignore = DockerIgnore(ignore_file_for(dockerfile).read_text())
    layout: dict[str, Path] = {}
    problems: list[str] = []
    for cp in copies(parse(dockerfile)):
        multi = len(cp.sources) > 1
        for src in cp.sources:
            rel = posixpath.normpath(src)
            path = root / rel
            if not os.path.lexists(path):
                problems.append(f"line {cp.line}: COPY source {src} does not exist")
                continue
            if ignore.excluded(rel):
                problems.append(f"line {cp.line}: COPY source {src} is excluded by {ignore_file_for(dockerfile).name}")
                continue
            if path.is_dir() and not path.is_symlink():
                base = cp.dest.rstrip("/")
                for dirpath, dirnames, filenames in os.walk(path):
                    for name in dirnames + filenames:
                        full = Path(dirpath) / name
                        sub = full.relative_to(path).as_posix()
                        if ignore.excluded(f"{rel}/{sub}"):
                            continue
                        layout[posixpath.join(base, sub)] = full
                    dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
                layout[base] = path
            else:
                into_dir = multi or cp.dest.endswith("/")
                target = posixpath.join(cp.dest, posixpath.basename(rel)) if into_dir else cp.dest
                layout[target] = path
    return layout, problems


def dangling_links(layout: dict[str, Path]) -> list[str]:
    """Symlinks in the image whose target is not in the image."""
    present = set(layout)
    bad = []
    for image_path, src in sorted(layout.items()):
        if not src.is_symlink():
            continue
        target = posixpath.normpath(posixpath.join(posixpath.dirname(image_path), os.readlink(src)))
        if target not in present:
            bad.append(f"{image_path} -> {os.readlink(src)} (nothing at {target})")
    return bad
