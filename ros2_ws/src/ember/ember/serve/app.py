"""`ember-serve`: the engine behind a small REST API (FastAPI + uvicorn).

    ember-serve --bundle build/bundle [--host 127.0.0.1] [--port 8000] [--bundle-check-period-s 5]

* ``POST /analyze`` — multipart/form-data with a file field ``image`` (JPEG or PNG) and a
  text field ``instruction`` (optional ``max_new_tokens``) -> the Analysis as JSON.
* ``GET /health`` (also ``HEAD``; never needs a token), ``GET /robots``, ``GET /model``.
* ``POST /reload`` — load the bundle at --bundle now (200 with the version, 409 when refused).

A bundle swapped in at the --bundle path is picked up without a restart, as the incident node does
(ember.engine.reload.BundleSlot): every ``--bundle-check-period-s`` (stat only; 0 = off) or on
``POST /reload``. The new engine is checked completely while the old one serves; an analysis runs on
one engine from start to end; a bundle that fails keeps the old engine and shows as
``model_reload_error`` in /health.

With the environment variable named by ``--token-env`` (default ``EMBER_SERVE_TOKEN``)
set, every path but /health needs ``Authorization: Bearer <token>``. Request bodies are
limited (``--max-body-mb``), and an image is sniffed, bounded and decoded before the
model runs; every refusal is a 4xx with a ``detail`` that says what to fix. At most
``--max-pending`` requests are admitted at a time, before their body is read: the rest get a
503 at once, so a burst of uploads cannot fill the robot's memory with decoded images.

SIGTERM and SIGINT stop it gracefully: no new connections, requests in flight finish (for at
most ``--shutdown-timeout-s``), then exit code 0.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ember import __version__
from ember.engine.reload import BundleSlot, Outcome
from ember.fleet_config import InferenceConfig
from ember.labels import ROBOT_DISPLAY_NAMES, ROBOT_TYPES
from ember.prompting import MAX_TASK_CHARS
from ember.serve.guard import DEFAULT_BODY_TIMEOUT_S, DEFAULT_MAX_BODY_BYTES, RequestGuard
from ember.serve.images import DEFAULT_MAX_PIXELS, ImageError, decode_image

log = logging.getLogger("ember.serve")

TOKEN_ENV = "EMBER_SERVE_TOKEN"
FORM_FIELDS = ("image", "instruction", "max_new_tokens")
DEFAULT_MAX_NEW_TOKENS = 50
DEFAULT_BUNDLE_CHECK_PERIOD_S = InferenceConfig.bundle_check_period_s  # the incident node's, fleet.yaml's default
DEFAULT_SHUTDOWN_TIMEOUT_S = 8.0  # below `docker stop`'s 10 s grace period
_ANALYZE_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "instruction"],
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "JPEG or PNG"},
                        "instruction": {"type": "string", "maxLength": MAX_TASK_CHARS},
                        "max_new_tokens": {"type": "integer", "minimum": 1},
                    },
                }
            }
        },
    }
}


@dataclass(frozen=True)
class ServeSettings:
    """Limits and the optional bearer token of one server."""

    token: str | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_image_pixels: int = DEFAULT_MAX_PIXELS
    max_pending: int = 4
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    bundle_check_period_s: float = 0.0
    """how often the bundle directory is checked for a swapped-in bundle (stat only; 0 = never)"""


class _EngineRunner:
    """Admits at most `max_pending` requests; runs their analyze calls one at a time off the event loop,
    each on the slot's engine of the moment it starts (a reload swaps engines between two analyses)."""

    def __init__(self, slot: BundleSlot[Any], max_pending: int) -> None:
        self.models = slot
        self.max_pending = max(1, max_pending)
        self.pending = 0  # admitted requests; touched on the event loop thread only
        self._lock = threading.Lock()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `max_pending` places (reading, decoding, queued or analysing), else 503."""
        if self.pending >= self.max_pending:
            raise HTTPException(503, f"busy: {self.pending} analyses already queued; retry shortly", {"Retry-After": "1"})
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def analyze(self, upload: bytes, decode: Callable[[bytes], Any], task: str, max_new_tokens: int) -> Any:
        """Decode the upload and analyse it, called inside `slot()`.

        Both run in the engine's turn, off the event loop: /health never waits for a decode, and
        only one decoded photo (up to --max-image-pixels * 3 bytes, twice) is in memory at a time.
        """
        return await anyio.to_thread.run_sync(self._run, upload, decode, task, max_new_tokens)

    def _run(self, upload: bytes, decode: Callable[[bytes], Any], task: str, max_new_tokens: int) -> Any:
        with self._lock:
            image = decode(upload)
            with self.models.using() as engine:
                return engine.analyze(image, task=task, max_new_tokens=max_new_tokens)


def _metadata(engine: Any) -> dict[str, Any]:
    """An engine's bundle.json (EmberEngine.meta, or `metadata` of a look-alike)."""
    return dict(getattr(engine, "metadata", None) or getattr(engine, "meta", None) or {})


def _fixed_slot(engine: Any) -> BundleSlot[Any]:
    """A slot around an engine loaded elsewhere: a reload hands back the same engine."""
    bundle = getattr(engine, "bundle", None)
    slot: BundleSlot[Any] = BundleSlot(getattr(bundle, "path", ""),
                                       lambda _path: (engine, str(_metadata(engine).get("model_version", ""))))
    slot.load_initial()
    return slot


def _log_reload(outcome: Outcome) -> None:
    if outcome.ok:
        log.info("%s", outcome.line("model"))
    else:
        log.error("%s", outcome.line("model"))


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(422, detail)


def _read_text_field(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _unprocessable(f"form field {name!r} must be text, not a file upload")
    return value


def create_app(model: Any, settings: ServeSettings | None = None) -> FastAPI:
    """The ASGI app around a BundleSlot of engines (ember.engine.reload.engine_slot: reloadable), or
    one loaded engine (`EmberEngine` or anything with its interface)."""
    settings = settings or ServeSettings()
    slot: BundleSlot[Any] = model if isinstance(model, BundleSlot) else _fixed_slot(model)
    runner = _EngineRunner(slot, settings.max_pending)
    started = time.monotonic()

    def metadata() -> dict[str, Any]:
        return _metadata(slot.value)

    def token_limit() -> int:
        return int(metadata().get("max_new_tokens") or DEFAULT_MAX_NEW_TOKENS)

    async def check_periodically(period: float) -> None:
        while True:
            await anyio.sleep(period)
            outcome = await anyio.to_thread.run_sync(slot.check, abandon_on_cancel=True)
            if outcome is not None:
                _log_reload(outcome)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            if settings.bundle_check_period_s > 0:
                tasks.start_soon(check_periodically, settings.bundle_check_period_s)
            yield
            tasks.cancel_scope.cancel()

    app = FastAPI(
        title="Ember",
        version=__version__,
        description="EmberVLM incident analysis and robot selection for one image and instruction.",
        lifespan=lifespan,
    )
    app.state.runner = runner

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> dict[str, Any]:
        """Liveness: a model is loaded and the server answers; `model_reload_error` names a swapped-in
        bundle that was refused (the model of `model_version` keeps serving)."""
        return {
            "status": "ok",
            "model_version": slot.version,
            "model_reload_error": slot.error,
            "uptime_s": round(time.monotonic() - started, 3),
            "pending": runner.pending,
        }

    @app.post("/reload")
    async def reload() -> dict[str, Any]:
        """Load the bundle at the server's bundle path now: its version, or 409 naming why it was refused."""
        outcome = await anyio.to_thread.run_sync(slot.reload)
        _log_reload(outcome)
        if not outcome.ok:
            raise HTTPException(409, f"model reload failed: {outcome.message}")
        return {"model_version": outcome.new_version, "message": outcome.line("model")}

    @app.get("/robots")
    async def robots() -> dict[str, Any]:
        """The robot types in the fixed score order, with the bundle's selection thresholds."""
        thresholds = metadata().get("robot_thresholds") or [None] * len(ROBOT_TYPES)
        return {
            "robots": [
                {"index": i, "id": rid, "display_name": name, "threshold": thresholds[i]}
                for i, (rid, name) in enumerate(zip(ROBOT_TYPES, ROBOT_DISPLAY_NAMES, strict=True))
            ]
        }

    @app.get("/model")
    async def model() -> dict[str, Any]:
        """The bundle's bundle.json (versions, labels, file hashes, export metrics) and the server limits."""
        return {
            "bundle": metadata(),
            "limits": {
                "max_body_bytes": settings.max_body_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_instruction_chars": MAX_TASK_CHARS,
                "max_new_tokens": token_limit(),
            },
        }

    @app.post("/analyze", openapi_extra=_ANALYZE_BODY_DOC, response_model=None)
    async def analyze(request: Request) -> dict[str, Any] | JSONResponse:
        """One image and instruction -> the Analysis (labels, scores, robot selection, plan)."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "multipart/form-data":
            shown = content_type or "no Content-Type"
            raise HTTPException(
                415,
                f"POST /analyze takes multipart/form-data with a file field 'image' (JPEG or PNG) and a "
                f"text field 'instruction'; got {shown}",
            )
        async with runner.slot():  # admitted before the body is read: a busy server reads nothing
            try:
                return await _analyze_admitted(request)
            except ClientDisconnect:  # gone, or stalled past --body-timeout-s: free the place
                log.info("client %s disconnected or stalled during its upload", request.client.host if request.client else "?")
                detail = f"request body incomplete: disconnected, or nothing sent for {settings.body_timeout_s:g} s"
                return JSONResponse({"detail": detail}, status_code=408, headers={"Connection": "close"})

    async def _analyze_admitted(request: Request) -> dict[str, Any]:
        try:
            form = await request.form(max_files=1, max_fields=len(FORM_FIELDS), max_part_size=64 * 1024)
        except HTTPException as exc:
            raise HTTPException(400, f"malformed multipart body: {exc.detail}") from exc
        unknown = sorted(set(form.keys()) - set(FORM_FIELDS))
        if unknown:
            raise _unprocessable(f"unknown form field(s) {', '.join(unknown)}; expected {', '.join(FORM_FIELDS)}")
        upload = form.get("image")
        if upload is None:
            raise _unprocessable("missing form field 'image' (a JPEG or PNG file upload)")
        if not isinstance(upload, UploadFile):
            raise _unprocessable("form field 'image' must be a file upload, not text")
        instruction = _read_text_field(form, "instruction")
        if instruction is None:
            raise _unprocessable("missing form field 'instruction' (the task for the robots, as text)")
        instruction = " ".join(instruction.split())
        if not instruction:
            raise _unprocessable("form field 'instruction' is empty")
        if len(instruction) > MAX_TASK_CHARS:
            raise _unprocessable(f"instruction has {len(instruction)} characters; the limit is {MAX_TASK_CHARS}")
        limit = max_new_tokens = token_limit()
        raw_tokens = _read_text_field(form, "max_new_tokens")
        if raw_tokens is not None:
            digits = raw_tokens.strip()  # ASCII digits only: str.isdigit() also takes "²", which int() refuses
            if not (digits.isascii() and digits.isdigit() and len(digits) <= 9) or not 1 <= int(digits) <= limit:
                raise _unprocessable(f"max_new_tokens must be an integer in 1..{limit}, got {raw_tokens!r}")
            max_new_tokens = int(digits)
        data = await upload.read()
        await upload.close()

        def decode(raw: bytes) -> Any:
            return decode_image(raw, upload.content_type, settings.max_image_pixels)

        try:
            analysis = await runner.analyze(data, decode, instruction, max_new_tokens)
        except ImageError as exc:
            raise HTTPException(exc.status, str(exc)) from exc
        except ValueError as exc:  # the engine's own input checks
            raise _unprocessable(f"the engine refused the input: {exc}") from exc
        return analysis.to_dict()

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.add_middleware(
        RequestGuard,
        token=settings.token,
        max_body_bytes=settings.max_body_bytes,
        open_paths=("/health",),
        body_timeout_s=settings.body_timeout_s,
    )
    return app


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_parser() -> argparse.ArgumentParser:
    """The ember-serve command line."""
    p = argparse.ArgumentParser(prog="ember-serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", required=True, help="model bundle directory (bundle.json, *.onnx, tokenizer.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free port)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20, help="request size limit in MiB")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="largest accepted width*height")
    p.add_argument("--max-pending", type=int, default=4, help="requests admitted at a time before answering 503")
    p.add_argument("--body-timeout-s", type=float, default=DEFAULT_BODY_TIMEOUT_S,
                   help=f"drop an upload that sends nothing for this long (default {DEFAULT_BODY_TIMEOUT_S:g})")
    p.add_argument("--shutdown-timeout-s", type=float, default=DEFAULT_SHUTDOWN_TIMEOUT_S,
                   help=f"on SIGTERM/SIGINT, seconds requests in flight may take (default {DEFAULT_SHUTDOWN_TIMEOUT_S:g})")
    p.add_argument("--bundle-check-period-s", type=float, default=DEFAULT_BUNDLE_CHECK_PERIOD_S,
                   help="seconds between checks for a bundle swapped in at --bundle (stat only; 0 = off; "
                        f"default {DEFAULT_BUNDLE_CHECK_PERIOD_S:g}, as the incident node)")
    p.add_argument("--token-env", default=TOKEN_ENV, help=f"env variable holding the bearer token (default {TOKEN_ENV})")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    return p


def main(argv: list[str] | None = None) -> int:
    """Load the bundle, then serve until interrupted."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.port <= 65535:
        print(f"ember-serve: --port must be in 0..65535, got {args.port}", file=sys.stderr)
        return 2
    if args.max_body_mb <= 0 or args.max_image_pixels <= 0:
        print("ember-serve: --max-body-mb and --max-image-pixels must be positive", file=sys.stderr)
        return 2
    for name, value, least in (("threads", args.threads, 1), ("max-pending", args.max_pending, 1),
                               ("shutdown-timeout-s", args.shutdown_timeout_s, 0),
                               ("body-timeout-s", args.body_timeout_s, 0.001),
                               ("bundle-check-period-s", args.bundle_check_period_s, 0)):
        if not (value >= least and math.isfinite(value)):
            print(f"ember-serve: --{name} must be >= {least}, got {value}", file=sys.stderr)
            return 2
    from ember.engine import BundleError
    from ember.engine.reload import engine_slot

    try:
        slot = engine_slot(args.bundle, threads=args.threads)
    except BundleError as exc:
        print(f"ember-serve: cannot load the bundle {args.bundle}: {exc}", file=sys.stderr)
        return 2
    token = os.environ.get(args.token_env) or None
    if token is None and not _is_loopback(args.host):
        log.warning("serving on %s without a bearer token: set %s to require one", args.host, args.token_env)
    settings = ServeSettings(
        token=token,
        max_body_bytes=int(args.max_body_mb * 2**20),
        max_image_pixels=args.max_image_pixels,
        max_pending=args.max_pending,
        body_timeout_s=args.body_timeout_s,
        bundle_check_period_s=args.bundle_check_period_s,
    )
    import uvicorn

    # uvicorn shuts down gracefully on SIGTERM, then re-raises it; exit 0 then, as on SIGINT.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        create_app(slot, settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
        limit_concurrency=64,
        timeout_keep_alive=5,
        timeout_graceful_shutdown=args.shutdown_timeout_s,
    )
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handler (before it serves, or re-raised after its shutdown)."""
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
