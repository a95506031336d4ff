"""Image decoding and preprocessing (the engine's preprocessing is the no-augment path)."""

from __future__ import annotations

import functools
import os
import stat
import unicodedata
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ember.serve.images import ImageError, image_size

from .common import MISSING_IMAGE, UNREADABLE_IMAGE, image_path


def find_image(images: Path, name: str) -> tuple[Path, str | None]:
    """(path, check_image's verdict) of an annotation's image name under `images` (common.image_path).

    A name that is not on disk as written is looked up the way the disk it was written on saw it:
    a folder or file whose name differs only in Unicode form (macOS keeps 'Ü' decomposed, NFD; the
    labels file holds it composed) or in letter case ('a.jpg' for 'a.JPG': Windows and macOS disks
    ignore case) is that file when exactly one entry of its folder matches. Else the path as written,
    MISSING_IMAGE."""
    path = image_path(images, name)
    problem = check_image(path)
    if problem == MISSING_IMAGE and (found := _loose_match(path)) is not None:
        return found, check_image(found)
    return path, problem


def _loose_key(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


@functools.lru_cache(maxsize=64)
def _folder_index(folder: str, mtime_ns: int) -> dict[str, tuple[str, ...]]:
    """{NFC case-folded name: the folder's entries with that key} (cached while the mtime stays; only
    folders where a name was missing are listed)."""
    index: dict[str, list[str]] = {}
    for entry in os.listdir(folder):
        index.setdefault(_loose_key(entry), []).append(entry)
    return {key: tuple(names) for key, names in index.items()}


def _loose_match(path: Path) -> Path | None:
    """`path` with each missing component replaced by the one entry of its folder that equals it in NFC
    form, else the one that equals it ignoring case too; None when a component has no such entry."""
    found = Path(path.anchor)
    for part in path.parts[1:] if path.anchor else path.parts:
        child = found / part
        if not child.exists():
            try:
                names = _folder_index(str(found), found.stat().st_mtime_ns).get(_loose_key(part), ())
            except OSError:
                return None
            same_case = [n for n in names if unicodedata.normalize("NFC", n) == unicodedata.normalize("NFC", part)]
            pick = same_case if len(same_case) == 1 else names
            if len(pick) != 1:
                return None
            child = found / pick[0]
        found = child
    return found


def check_image(path: str | Path) -> str | None:
    """None if `path` is a file in an image format OpenCV decodes (its signature is read, not the
    pixels), else the skip reason: MISSING_IMAGE, or UNREADABLE_IMAGE for an empty file or another
    format (an HTML error page saved under the image's name by a failed download)."""
    try:  # one stat (a network file system answers each in a round trip), then the signature read
        info = os.stat(path)
    except (OSError, ValueError):
        return MISSING_IMAGE
    if not stat.S_ISREG(info.st_mode):
        return MISSING_IMAGE
    if info.st_size == 0 or not cv2.haveImageReader(str(path)):
        return UNREADABLE_IMAGE
    return None


CHECK_THREADS = min(32, (os.cpu_count() or 1) + 4)
"""threads that check images at load time: each check is a stat and a signature read, I/O bound (about
a millisecond per file on NFS or a bucket mount, where 1M serial checks take tens of minutes)"""


class ImageLookup:
    """`lookup(name)` (default: find_image under `images`) for the names a loader asks for, checked
    ahead on a thread pool.

    `names` yields the names in the order the loader asks for them; it may hold more (the names of rows
    the loader skips for another reason) and repeats. Each distinct name is checked once, at most
    `ahead` names ahead of the loader (a loader that stops at a sample limit wastes no more), in chunks
    of CHUNK names per task (a check on a local disk takes ~10 us, the pool's hand-over about as long);
    a name asked for again, or out of that order, is checked on the spot, unless `remember` keeps every
    answer (loaders whose rows share images: captions, questions; not Incidents1M's million distinct
    names). The verdicts are those of `lookup` called in the loader's order, with any thread count (the
    checks only read the file system)."""

    CHUNK = 32

    def __init__(self, images: Path, names: Iterable[str], threads: int | None = None, ahead: int | None = None,
                 lookup: Callable[[str], tuple[Path, str | None]] | None = None, remember: bool = False) -> None:
        threads = threads or CHECK_THREADS
        self._answers: dict[str, tuple[Path, str | None]] | None = {} if remember else None
        self._lookup = lookup or functools.partial(find_image, images)
        self._names = iter(names)
        self._seen: set[str] = set()
        self._queue: deque[str] = deque()
        self._futures: dict[str, tuple[Future, int]] = {}  # name -> (its chunk's task, its place in the chunk)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="image-check") if threads > 1 else None
        self._ahead = ahead or 4 * self.CHUNK * threads

    def __enter__(self) -> ImageLookup:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __call__(self, name: str) -> tuple[Path, str | None]:
        if self._answers is None:
            return self._answer(name)
        if name not in self._answers:
            self._answers[name] = self._answer(name)
        return self._answers[name]

    def _answer(self, name: str) -> tuple[Path, str | None]:
        if self._pool is None:
            return self._lookup(name)
        if name not in self._seen:
            self._fill(until=name)
        if name not in self._futures:
            return self._lookup(name)
        while (first := self._queue.popleft()) != name:  # names the loader skipped
            del self._futures[first]
        task, k = self._futures.pop(name)
        result = task.result()[k]
        self._fill()
        return result

    def _check(self, names: list[str]) -> list[tuple[Path, str | None]]:
        return [self._lookup(n) for n in names]

    def _fill(self, until: str | None = None) -> None:
        """Queue chunks of names until `ahead` are in flight, and past that up to `until`."""
        while len(self._queue) < self._ahead or (until is not None and until not in self._seen):
            chunk: list[str] = []
            for name in self._names:
                if name not in self._seen:
                    self._seen.add(name)
                    chunk.append(name)
                    if len(chunk) == self.CHUNK:
                        break
            if not chunk:
                return
            task = self._pool.submit(self._check, chunk)
            for k, name in enumerate(chunk):
                self._queue.append(name)
                self._futures[name] = (task, k)


_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
JPEG_HEADER_BYTES = 1 << 18
"""read to find a JPEG's frame header (EXIF blocks with thumbnails come before it)"""


def jpeg_size(path: str | Path) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header (the robots' upload parser, on the file's first
    JPEG_HEADER_BYTES); None if the file is not a JPEG or its header is not found there."""
    with open(path, "rb") as f:
        head = f.read(JPEG_HEADER_BYTES)
    if not head.startswith(b"\xff\xd8"):
        return None
    try:
        width, height = image_size(head, "jpeg")
    except ImageError:
        return None
    return height, width


def read_rgb(path: str | Path, min_side: int | None = None) -> np.ndarray:
    """Decode an image file to RGB uint8 [H, W, 3]; OSError if it cannot be read.

    With `min_side`, a JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling: a 6000x4000
    photo for a 64 px model decodes ~3x faster and needs 1/64 of the memory) as long as its shorter
    side keeps at least `min_side` pixels."""
    flag = cv2.IMREAD_COLOR
    size = jpeg_size(path) if min_side else None
    if size is not None:
        flag = next((f for scale, f in _REDUCED if min(size) // scale >= min_side), cv2.IMREAD_COLOR)
    bgr = cv2.imread(str(path), flag)
    if bgr is None:
        raise OSError(f"cannot decode image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random crop (80-100% of each side), horizontal flip, mild brightness/contrast change."""
    h, w = rgb.shape[:2]
    ch, cw = max(1, int(h * rng.uniform(0.8, 1.0))), max(1, int(w * rng.uniform(0.8, 1.0)))  # 1-px strips too
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    out = rgb[y : y + ch, x : x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain, bias = rng.uniform(0.9, 1.1), rng.uniform(-10, 10)
    return np.clip(out.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)


def to_tensor_array(rgb: np.ndarray, size: int, mean: list[float], std: list[float]) -> np.ndarray:
    """Resize the whole frame to size x size (INTER_AREA), scale to [0, 1], normalise: float32 [3, S, S]."""
    img = cv2.resize(np.ascontiguousarray(rgb), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    img = (img - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(img.transpose(2, 0, 1))
