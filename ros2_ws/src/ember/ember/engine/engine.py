"""EmberEngine: the torch-free EmberVLM runtime of the robots (numpy, onnxruntime, tokenizers, opencv).

Each bundle file is opened once and its sha256 checked; onnxruntime (through /proc/self/fd), the
tokenizer and the robot selector load that very file (ember.engine.bundle.BundleFiles), so an
ember-export replacing the bundle meanwhile cannot pair checked files with unchecked ones, and a
file rewritten in place while loading is refused.
Load order keeps the process peak low: the decoder (the larger model) is loaded while nothing
else is resident, then the vision model, then the tokenizer; each file's bytes and freed parse
buffers are handed back to the OS after each load, and so are the pages of library code that only
the imports and the load ran (ember.engine.residency: they map back in if they run again).
Sessions run sequentially with the CPU memory arena off, with no more intra-op threads than the
CPUs this process may use (affinity and cgroup quota: ember.engine.cpus).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import threading
import time
import warnings
from dataclasses import replace
from functools import cached_property
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from ember.engine.analysis import Analysis
from ember.engine.bundle import Bundle, BundleError, BundleFiles, load_consistent, sha256_bytes
from ember.engine.cpus import usable_cpus
from ember.engine.decoder import KVCacheDecoder
from ember.engine.ort_errors import describe_load_error
from ember.engine.preprocess import preprocess
from ember.engine.residency import drop_clean_file_pages
from ember.engine.robot_selector import bundle_selector
from ember.labels import ROBOT_TYPES
from ember.prompting import DEFAULT_TASK, EOS_TOKEN, MAX_TASK_CHARS, format_prompt, parse_generation

log = logging.getLogger(__name__)
TOP_K_INCIDENTS = 5


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the tuning below is skipped
        return None


def _tune_malloc() -> None:
    """glibc: serve buffers >= 256 KiB by mmap and trim freed heap early.

    With the onnxruntime arena off, tensors are malloc'ed and freed every run; glibc's
    adaptive mmap threshold would otherwise grow to tens of MB and keep large freed
    activations on the heap, where fragmentation makes the resident size creep up. The KV
    cache tensors (< 256 KiB) stay on the heap, whose warm pages each decode step reuses.
    """
    if _LIBC is not None:
        _LIBC.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD (fixed: disables the adaptive threshold)
        _LIBC.mallopt(-1, 512 * 1024)  # M_TRIM_THRESHOLD


_LIBC = _libc()


def _trim_heap() -> None:
    """Return freed heap pages to the OS (glibc malloc_trim; a no-op elsewhere)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (after an engine was dropped)."""
    gc.collect()
    _trim_heap()


def _release_load_memory() -> None:
    """Free heap pages and unmap the code pages only loading ran (imports, session construction:
    ~17 MiB of the small model's steady peak RSS; ember.engine.residency)."""
    release_free_memory()
    drop_clean_file_pages()


_tokenizer_lock = threading.Lock()
_last_tokenizer: tuple[str, Tokenizer] | None = None


def _shared_tokenizer(data: bytes) -> Tokenizer:
    """The Tokenizer of tokenizer.json's bytes `data`: the one the last engine got when its file had
    the same sha256 (a reload of a retrained model with the same vocabulary), else a new one.

    tokenizers (0.23) keeps ~3.7 KiB for good for each Tokenizer that encodes once: a new one per
    reload grew a process that gets a new model every day. Encoding from several engines (the old
    one serving, the new one's test analysis) is safe: a Tokenizer is not changed by encoding."""
    global _last_tokenizer
    digest = sha256_bytes(data)
    with _tokenizer_lock:
        if _last_tokenizer is None or _last_tokenizer[0] != digest:
            _last_tokenizer = (digest, Tokenizer.from_buffer(data))
        return _last_tokenizer[1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - np.max(x))
    return e / e.sum()


def session_options(threads: int = 1) -> ort.SessionOptions:
    """Options for a small, predictable footprint: no arena, no memory pattern, sequential,
    `threads` intra-op threads (weights stay prepacked: that halves a decode step).

    Pool threads sleep between operators instead of spinning: the robot's CPU is shared with its
    other software; with 2 threads, spinning cost 1.6x the CPU time of an analysis and made it
    slower, 2.4x with both threads on one CPU (bench/edge_runtime.py)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, int(threads))
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.enable_cpu_mem_arena = False
    opts.enable_mem_pattern = False
    opts.enable_mem_reuse = True
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return opts


class EmberEngine:
    """Runs an Ember model bundle: `analyze(image_rgb, task)` -> Analysis.

    Raises BundleError if the bundle is missing, incomplete, corrupt or of an unknown format.
    `analyze` may be called from several threads: analyses run one at a time. `threads` is
    capped to the CPUs this process may use (`self.threads` is what the sessions got).
    """

    def __init__(self, bundle_dir: str | Path, threads: int = 1, verify_hashes: bool = True) -> None:
        self._requested_threads = threads
        load_consistent(bundle_dir, self._load, verify_hashes=verify_hashes)
        self._lock = threading.Lock()

    def _load(self, files: BundleFiles) -> None:
        """Everything from one opened bundle (load_consistent starts again if it was replaced meanwhile)."""
        self.bundle: Bundle = files.bundle()
        meta = self.bundle.meta
        self.meta = meta
        try:
            self._read_meta(meta)
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"model bundle {self.bundle.path}: bad value in bundle.json ({exc!r})") from exc
        built_with = str(meta.get("onnxruntime_version", ""))
        if built_with and built_with.split(".")[:2] != ort.__version__.split(".")[:2]:
            log.warning("bundle %s was optimized with onnxruntime %s, running %s", self.bundle.path, built_with, ort.__version__)

        _tune_malloc()
        _release_load_memory()  # what the imports alone ran
        self.threads = self._thread_count(self._requested_threads)
        opts = session_options(self.threads)
        self._decoder = self._session(files, "decoder.onnx", opts)  # the larger model first, while little is resident
        self._vision = self._session(files, "vision.onnx", opts)
        data = files.read("tokenizer.json")
        try:
            self.tokenizer = _shared_tokenizer(data)
        except Exception as exc:
            raise BundleError(f"model bundle {self.bundle.path}: cannot load tokenizer.json ({exc})") from exc
        del data
        self._added_tokens: dict[str, int] = {t.content: i for i, t in self.tokenizer.get_added_tokens_decoder().items()}
        self._check_io()
        self.selector = bundle_selector(files, len(self.robot_types))
        self._kv = KVCacheDecoder(self._decoder, self.n_layers, self.n_heads, self.head_dim, self.d_model)
        _release_load_memory()

    def _read_meta(self, meta: dict) -> None:
        self.model_version = str(meta["model_version"])
        self.image_size = int(meta["image_size"])
        self.mean = [float(v) for v in meta["mean"]]
        self.std = [float(v) for v in meta["std"]]
        self.num_visual_tokens = int(meta["num_visual_tokens"])
        self.d_model = int(meta["d_model"])
        self.n_layers = int(meta["n_layers"])
        self.n_heads = int(meta["n_heads"])
        self.head_dim = int(meta["head_dim"])
        self.n_positions = int(meta["n_positions"])
        self.default_max_new_tokens = int(meta["max_new_tokens"])
        self.max_prompt_tokens = int(
            meta.get("max_prompt_tokens") or self.n_positions - self.num_visual_tokens - self.default_max_new_tokens
        )
        for key in ("robot_types", "incident_labels", "place_labels", "mean", "std", "robot_thresholds"):
            if not isinstance(meta[key], list):
                raise TypeError(f"{key} must be a list, got {type(meta[key]).__name__}")
        self.robot_types = [str(r) for r in meta["robot_types"]]
        if self.robot_types != list(ROBOT_TYPES):
            raise ValueError(f"robot_types {self.robot_types} are not {list(ROBOT_TYPES)} (ember.labels order)")
        self.incident_labels = [str(x) for x in meta["incident_labels"]]
        self.place_labels = [str(x) for x in meta["place_labels"]]
        if self.image_size <= 0:
            raise ValueError(f"image_size must be positive, got {self.image_size}")
        self.robot_thresholds = np.asarray(meta["robot_thresholds"], dtype=np.float64)
        if self.robot_thresholds.shape != (len(self.robot_types),):
            raise ValueError("robot_thresholds must have one value per robot type")
        if EOS_TOKEN not in meta["special_token_ids"]:
            raise KeyError(f"special_token_ids lacks {EOS_TOKEN}")
        self.eos_id = int(meta["special_token_ids"][EOS_TOKEN])
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need 3 values")

    @staticmethod
    def _thread_count(requested: int) -> int:
        """`requested` intra-op threads, capped to the CPUs this process may use (with a warning):
        a pool larger than its CPUs makes each operator wait for threads that are not running."""
        threads = max(1, int(requested))
        cpus = usable_cpus()
        if threads > cpus:
            log.warning("threads=%d asked, but this process may use %d CPU%s (affinity, cgroup quota): "
                        "running %d", threads, cpus, "" if cpus == 1 else "s", cpus)
            threads = cpus
        return threads

    def _session(self, files: BundleFiles, name: str, opts: ort.SessionOptions) -> ort.InferenceSession:
        """A session of `name`'s checked file (never its path in the bundle: the file may be replaced by
        now): onnxruntime opens the very file that was checked through /proc/self/fd (no second copy of
        the model in memory while it loads; bytes where there is no /proc), and a rewrite in place during
        the load is refused."""
        source: str | bytes | None = files.loadable_path(name)
        if source is None:
            source = files.read(name)
        try:
            sess = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            failure = describe_load_error(exc)
            hint = ""
            if failure.needs_newer_runtime:
                built = self.meta.get("onnxruntime_version") or "unknown"
                hint = (f". It was made for a newer onnxruntime (bundle.json: exported with {built}): upgrade "
                        f"onnxruntime or re-export the bundle with this release's ember-export")
            elif failure.corrupt:
                hint = ", although its sha256 matches bundle.json: re-export the bundle"  # an exporter bug
            raise BundleError(
                f"model bundle {self.bundle.path}: onnxruntime {ort.__version__} cannot load {name}: {failure.detail}{hint}"
            ) from exc
        finally:
            del source
        files.check_unchanged(name)
        if getattr(sess, "_model_bytes", None) is not None:
            sess._model_bytes = None  # onnxruntime's Python wrapper would keep the model's bytes for good
        _release_load_memory()  # before the next session: each one's construction code is dropped
        return sess


    def _check_io(self) -> None:
        want_dec = {
            "input_ids",
            "visual_embeds",
            "seqlens_k",
            "total_sequence_length",
            *(f"past_{k}_{i}" for i in range(self.n_layers) for k in ("key", "value")),
        }
        have_dec = {i.name for i in self._decoder.get_inputs()}
        if want_dec != have_dec:
            raise BundleError(
                f"model bundle {self.bundle.path}: decoder.onnx inputs {sorted(have_dec)} do not match bundle.json "
                f"(n_layers={self.n_layers})"
            )
        if [i.name for i in self._vision.get_inputs()] != ["pixel_values"]:
            raise BundleError(f"model bundle {self.bundle.path}: vision.onnx must take `pixel_values`")
        # bundle.json is not covered by the hashes: its sizes must fit the graphs' static dimensions
        vis_in, vis_out = self._vision.get_inputs()[0].shape, self._vision.get_outputs()[0].shape
        dec_in = {i.name: i.shape for i in self._decoder.get_inputs()}
        dec_out = {o.name: o.shape for o in self._decoder.get_outputs()}
        checks = [
            ("image_size", self.image_size, vis_in, (2, 3)),
            ("num_visual_tokens", self.num_visual_tokens, vis_out, (1,)),
            ("d_model", self.d_model, vis_out, (2,)),
            ("d_model", self.d_model, dec_in["visual_embeds"], (2,)),
            *((name, value, dec_in[f"past_{kind}_{i}"], (axis,))
              for i in range(self.n_layers) for kind in ("key", "value")
              for name, value, axis in (("n_heads", self.n_heads, 1), ("head_dim", self.head_dim, 3))),
            ("robot_types", len(self.robot_types), dec_out.get("robot_logits"), (-1,)),
            ("incident_labels", len(self.incident_labels), dec_out.get("incident_logits"), (-1,)),
            ("place_labels", len(self.place_labels), dec_out.get("place_logits"), (-1,)),
        ]
        for name, value, shape, axes in checks:
            if shape is None:
                raise BundleError(f"model bundle {self.bundle.path}: decoder.onnx lacks the output for {name}")
            dims = [shape[a] for a in axes if -len(shape) <= a < len(shape)]
            if len(dims) != len(axes) or any(isinstance(d, int) and d != value for d in dims):
                raise BundleError(
                    f"model bundle {self.bundle.path}: {name} in bundle.json ({value}) does not fit the graph "
                    f"(shape {shape}): bundle.json was edited or belongs to other ONNX files"
                )
        vocab = dec_out.get("logits", [None])[-1]
        if not 0 <= self.eos_id < (vocab if isinstance(vocab, int) else self.tokenizer.get_vocab_size()):
            raise BundleError(f"model bundle {self.bundle.path}: special_token_ids[{EOS_TOKEN!r}] = {self.eos_id} "
                              f"is outside the vocabulary")

    # -- prompt ---------------------------------------------------------------------------------

    def _prompt_ids(self, task: str | None, max_new_tokens: int) -> list[int]:
        """Token ids of the prompt, truncated as in training (first max-1 ids + the final <reasoning>).

        An over-long task is truncated with a RuntimeWarning, never an error.
        """
        task = DEFAULT_TASK if task is None or not str(task).strip() else " ".join(str(task).split())
        if len(task) > MAX_TASK_CHARS:
            warnings.warn(f"task of {len(task)} characters truncated to {MAX_TASK_CHARS}", RuntimeWarning, stacklevel=3)
            task = task[:MAX_TASK_CHARS]
        limit = min(self.max_prompt_tokens, self.n_positions - self.num_visual_tokens - max_new_tokens)
        ids = self._encode_prompt(task)
        if len(ids) > limit:
            warnings.warn(
                f"prompt of {len(ids)} tokens truncated to {limit} (model positions: {self.n_positions})",
                RuntimeWarning,
                stacklevel=3,
            )
            ids = ids[: limit - 1] + ids[-1:]
        return ids

    def _encode_prompt(self, task: str) -> list[int]:
        """Token ids of `format_prompt(task)` where only the template's own special tokens are special.

        A task that spells a special token ("<|endoftext|>", "<answer>", ...) gets it as plain text:
        the tokenizer would otherwise match it as a control token. Tasks without such strings are
        encoded by the tokenizer itself, exactly as in training.
        """
        prompt = format_prompt(task)
        if not any(t in task for t in self._added_tokens):
            return self.tokenizer.encode(prompt, add_special_tokens=False).ids
        head, tail = format_prompt("\0").split("\0")
        head_parts, tail_parts = self._split_added(head), self._split_added(tail)
        middle = prompt[len(head) : len(prompt) - len(tail)]  # the (whitespace-normalised) task
        if head_parts and not head_parts[-1][0]:
            middle = head_parts.pop()[1] + middle
        if tail_parts and not tail_parts[0][0]:
            middle += tail_parts.pop(0)[1]
        ids: list[int] = []
        for special, text in [*head_parts, (False, middle), *tail_parts]:
            ids += [self._added_tokens[text]] if special else self._encode_plain(text)
        return ids

    def _split_added(self, text: str) -> list[tuple[bool, str]]:
        """`text` cut at the tokenizer's added tokens (leftmost, longest): (is_added_token, piece)."""
        parts: list[tuple[bool, str]] = []
        start = pos = 0
        while pos < len(text):
            match = max((t for t in self._added_tokens if text.startswith(t, pos)), key=len, default=None)
            if match is None:
                pos += 1
                continue
            if start < pos:
                parts.append((False, text[start:pos]))
            parts.append((True, match))
            pos = start = pos + len(match)
        if start < len(text):
            parts.append((False, text[start:]))
        return parts

    @cached_property
    def _plain_tokenizer(self) -> Tokenizer:
        """The tokenizer with added tokens encoded as text; built on first use (~1.2 MiB resident
        with the robots' bundle, needed only for a task that spells a special token)."""
        plain = Tokenizer.from_str(self.tokenizer.to_str())
        plain.encode_special_tokens = True
        return plain

    def _encode_plain(self, text: str) -> list[int]:
        """Ids of `text` with no added-token matching (what `encode` does between added tokens)."""
        return self._plain_tokenizer.encode(text, add_special_tokens=False).ids

    # -- inference ------------------------------------------------------------------------------

    def encode_image(self, image_rgb: np.ndarray) -> np.ndarray:
        """uint8 RGB HxWx3 -> visual embeddings [1, V, D] (ImageError for a bad image)."""
        pixels = preprocess(image_rgb, self.image_size, self.mean, self.std)
        return self._vision.run(["visual_embeds"], {"pixel_values": pixels})[0]

    def analyze(
        self,
        image_rgb: np.ndarray,
        task: str | None = None,
        max_new_tokens: int | None = None,
        stop_at_eos: bool = True,
    ) -> Analysis:
        """Analyse one image for a task: heads from the prefill, then greedy decoding with the KV cache.

        Decoding stops at EOS (not part of the text) or after `max_new_tokens` (default: the
        bundle's). `stop_at_eos=False` always decodes `max_new_tokens` (benchmarks).
        """
        t0 = time.perf_counter()
        if max_new_tokens is None:
            max_new_tokens = self.default_max_new_tokens
        max_new_tokens = max(0, min(int(max_new_tokens), self.n_positions - self.num_visual_tokens - 16))
        pixels = preprocess(image_rgb, self.image_size, self.mean, self.std)
        prompt_ids = self._prompt_ids(task, max_new_tokens)
        with self._lock:  # one analysis at a time: the decoder's KV cache and bindings are shared state
            t1 = time.perf_counter()
            visual = self._vision.run(["visual_embeds"], {"pixel_values": pixels})[0]
            t2 = time.perf_counter()
            capacity = visual.shape[1] + len(prompt_ids) + max_new_tokens
            try:
                out = self._kv.start(prompt_ids, visual, capacity)
                t3 = time.perf_counter()
                heads = {k: out[k][0] for k in ("robot_logits", "confidence_logit", "incident_logits", "place_logits")}
                generated: list[int] = []
                logits = out["logits"][0]
                for step in range(max_new_tokens):
                    nxt = int(np.argmax(logits))
                    if nxt == self.eos_id and stop_at_eos:
                        break
                    generated.append(nxt)
                    if step == max_new_tokens - 1:
                        break
                    logits = self._kv.step(nxt)
            finally:
                self._kv.release()
                del visual
                _trim_heap()  # the KV cache just went away: give its pages back before the next frame
            t4 = time.perf_counter()
        text = self.tokenizer.decode(generated, skip_special_tokens=False)
        result = self._to_analysis(heads, text, len(generated), task)
        t5 = time.perf_counter()
        result.timings_ms = {
            "preprocess_ms": (t1 - t0) * 1e3,
            "vision_ms": (t2 - t1) * 1e3,
            "prefill_ms": (t3 - t2) * 1e3,
            "decode_ms": (t4 - t3) * 1e3,
            "postprocess_ms": (t5 - t4) * 1e3,
            "total_ms": (t5 - t0) * 1e3,
        }
        return result

    def select_robots(self, heads: dict[str, np.ndarray], task: str | None) -> tuple[np.ndarray, list[str], str]:
        """(robot scores, selected types best first, source). A task the bundle's text selector
        knows words of is decided by the selector ("text-selector"); otherwise (no task or the default
        camera task, no selector, no known word) by the decoder's robot head, which also sees the
        image ("decoder-head")."""
        robots, selected, source, _ = self._select(heads, task)
        return robots, selected, source

    def _select(self, heads: dict[str, np.ndarray], task: str | None) -> tuple[np.ndarray, list[str], str, tuple[int, ...]]:
        """`select_robots`, plus the selector's robot for each of the first plan steps (empty when
        the decoder head decides or the selector has no plan-step head)."""
        sel = self.selector.select_task(task) if self.selector is not None else None
        if sel is not None:
            return sel.scores, [self.robot_types[i] for i in sel.chosen], "text-selector", sel.step_robots
        robots = _sigmoid(heads["robot_logits"])
        by_score = np.argsort(-robots, kind="stable")
        selected = [self.robot_types[i] for i in by_score if robots[i] >= self.robot_thresholds[i]]
        if not selected:
            selected = [self.robot_types[int(by_score[0])]]
        return robots, selected, "decoder-head", ()

    def _to_analysis(self, heads: dict[str, np.ndarray], text: str, n_tokens: int, task: str | None = None) -> Analysis:
        incident = _sigmoid(heads["incident_logits"])
        order = np.argsort(-incident, kind="stable")[:TOP_K_INCIDENTS]
        place = _softmax(heads["place_logits"])
        p = int(np.argmax(place))
        robots, selected, source, step_robots = self._select(heads, task)
        parsed = parse_generation(text.replace(EOS_TOKEN, ""))
        steps = [  # a text task's plan steps get the robots of the selector's plan-step head
            replace(s, robot_type=self.robot_types[step_robots[k]]) if k < len(step_robots) else s
            for k, s in enumerate(parsed.steps)
        ]
        return Analysis(
            incident_type=self.incident_labels[int(order[0])],
            confidence=float(_sigmoid(np.asarray(heads["confidence_logit"]).reshape(-1))[0]),
            incident_labels=[self.incident_labels[int(i)] for i in order],
            incident_scores=[float(incident[i]) for i in order],
            place=self.place_labels[p],
            place_score=float(place[p]),
            robot_scores=[float(s) for s in robots],
            robot_types=selected,
            robot_source=source,
            text=text,
            reasoning=parsed.reasoning,
            steps=steps,
            num_generated_tokens=n_tokens,
            model_version=self.model_version,
        )
