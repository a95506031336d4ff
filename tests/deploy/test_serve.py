"""ember-serve: the REST API around the real engine on the tiny bundle.

TestClient for the behaviour of each endpoint and every refusal; one real uvicorn server
(the `ember-serve` command) on 127.0.0.1 in a subprocess for the wire.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import zlib

import cv2
import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from ember.labels import INCIDENT_LABELS, PLACE_LABELS, ROBOT_TYPES
from ember.prompting import MAX_TASK_CHARS
from ember.serve.app import ServeSettings, create_app
from ember.serve.guard import token_matches
from ember.serve.images import ImageError, decode_image
from tests.conftest import ROOT
from tests.deploy.conftest import RecordingEngine
from tests.deploy.serving import running_server, serve_command

TOKEN = "correct horse battery staple"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 256 * 1024


@pytest.fixture()
def recording(engine) -> RecordingEngine:
    return RecordingEngine(engine)


@pytest.fixture()
def client(recording) -> TestClient:
    app = create_app(recording, ServeSettings(token=TOKEN, max_body_bytes=LIMIT, max_image_pixels=2000 * 2000))
    with TestClient(app) as c:
        yield c


def _post(client: TestClient, image: bytes | None, instruction: str | None = "Find survivors", *,
          mime: str = "image/jpeg", headers: dict | None = None, extra: dict | None = None) -> httpx.Response:
    files = {"image": ("photo", image, mime)} if image is not None else None
    data = {"instruction": instruction} if instruction is not None else {}
    data.update(extra or {})
    return client.post("/analyze", files=files, data=data or None, headers=AUTH if headers is None else headers)


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature + IHDR chunk for a (never decoded) image of the given size."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


# -- the happy path ---------------------------------------------------------------------------


def test_analyze_returns_the_engines_analysis(client, recording, engine, photo_jpeg):
    r = _post(client, photo_jpeg, "Find survivors near the fire")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["incident_type"] in INCIDENT_LABELS and body["place"] in PLACE_LABELS
    assert len(body["robot_scores"]) == len(ROBOT_TYPES)
    assert body["robot_types"] and set(body["robot_types"]) <= set(ROBOT_TYPES)
    assert 0.0 <= body["confidence"] <= 1.0
    assert body["model_version"] == engine.model_version
    assert body["timings_ms"]["total_ms"] > 0
    # The model got exactly the decoded photo, and the server adds nothing of its own.
    (seen,) = recording.images
    expected = cv2.cvtColor(cv2.imread(str(ROOT.parent / "shared/data/incidents/images/example_fire.jpg")), cv2.COLOR_BGR2RGB)
    assert seen.dtype == np.uint8 and seen.flags["C_CONTIGUOUS"] and np.array_equal(seen, expected)
    direct = engine.analyze(expected, task="Find survivors near the fire", max_new_tokens=engine.default_max_new_tokens)
    for key in ("incident_type", "incident_labels", "place", "robot_types", "text"):
        assert body[key] == getattr(direct, key)
    assert body["robot_scores"] == pytest.approx(direct.robot_scores)


def test_png_and_max_new_tokens(client, scene_png):
    r = _post(client, scene_png, "Inspect the building", mime="image/png", extra={"max_new_tokens": "3"})
    assert r.status_code == 200, r.text
    assert r.json()["num_generated_tokens"] <= 3


def test_octet_stream_upload_is_sniffed(client, photo_jpeg):
    assert _post(client, photo_jpeg, mime="application/octet-stream").status_code == 200


def test_health_robots_model(client, engine):
    h = client.get("/health")  # no token needed
    assert h.status_code == 200 and h.json()["status"] == "ok"
    assert h.json()["model_version"] == engine.model_version
    robots = client.get("/robots", headers=AUTH).json()["robots"]
    assert [r["id"] for r in robots] == list(ROBOT_TYPES)
    assert [r["threshold"] for r in robots] == pytest.approx(list(engine.robot_thresholds))
    model = client.get("/model", headers=AUTH).json()
    assert model["bundle"]["model_version"] == engine.model_version
    assert set(model["bundle"]["files"]) >= {"vision.onnx", "decoder.onnx", "tokenizer.json"}
    assert model["limits"]["max_body_bytes"] == LIMIT


# -- refusals: each a 4xx with a message, none reaching the model --------------------------------


def test_token_required_everywhere_but_health(client, recording, photo_jpeg):
    for path in ("/robots", "/model", "/docs", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 401 and "missing bearer token" in r.json()["detail"]
        assert r.headers["www-authenticate"].startswith("Bearer")
    wrong = _post(client, photo_jpeg, headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 401 and "invalid bearer token" in wrong.json()["detail"]
    basic = client.get("/model", headers={"Authorization": f"Basic {TOKEN}"})
    assert basic.status_code == 401
    assert recording.images == []


def test_token_matches_in_constant_time_helper():
    assert token_matches(f"Bearer {TOKEN}", TOKEN)
    assert token_matches(f"bearer   {TOKEN} ", TOKEN)
    assert not token_matches(f"Bearer {TOKEN}x", TOKEN)
    assert not token_matches(f"Token {TOKEN}", TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches("Bearer ünïcode", TOKEN)


def test_without_a_token_the_api_is_open(engine, scene_png):
    with TestClient(create_app(engine, ServeSettings(token=None))) as c:
        assert c.get("/model").status_code == 200
        r = c.post("/analyze", files={"image": ("s.png", scene_png, "image/png")}, data={"instruction": "Look"})
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"json": {"instruction": "x"}}, "got application/json"),
        ({"data": {"instruction": "x"}}, "got application/x-www-form-urlencoded"),
        ({"content": b"\xff\xd8\xff", "headers": {"Content-Type": "image/jpeg"}}, "got image/jpeg"),
        ({"content": b"abc"}, "multipart/form-data"),
    ],
    ids=["json", "urlencoded", "raw-jpeg", "no-content-type"],
)
def test_wrong_content_type_is_415(client, recording, kwargs, fragment):
    headers = {**AUTH, **kwargs.pop("headers", {})}
    r = client.post("/analyze", headers=headers, **kwargs)
    assert r.status_code == 415 and fragment in r.json()["detail"]
    assert "multipart/form-data" in r.json()["detail"]
    assert recording.images == []


def test_oversize_body_is_413_before_parsing(client, recording):
    big = b"\xff\xd8\xff" + os.urandom(LIMIT)
    r = _post(client, big)
    assert r.status_code == 413
    assert f"limit is {LIMIT} bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: the running count decides
        yield b"--x\r\n"
        for _ in range(LIMIT // 4096 + 2):
            yield b"a" * 4096

    r = client.post("/analyze", content=chunks(), headers={**AUTH, "Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert recording.images == []


@pytest.mark.parametrize(
    "make, mime, status, fragment",
    [
        (lambda j: j[: len(j) // 2], "image/jpeg", 422, "corrupt JPEG"),
        (lambda j: b"\xff\xd8\xff\xe0" + b"\x00" * 64, "image/jpeg", 422, "corrupt JPEG"),
        (lambda j: os.urandom(2048), "image/jpeg", 422, "do not start with a image/jpeg signature"),
        (lambda j: b"", "image/jpeg", 422, "empty"),
        (lambda j: b"GIF89a" + os.urandom(64), "image/gif", 415, "unsupported image content type 'image/gif'"),
        (lambda j: b"GIF89a" + os.urandom(64), "application/octet-stream", 415, "neither JPEG nor PNG"),
        (lambda j: j, "text/plain", 415, "send image/jpeg or image/png"),
        (lambda j: _png_header(100_000, 100_000) + os.urandom(64), "image/png", 413, "exceeds the limit"),
        (lambda j: _png_header(64, 64) + os.urandom(256), "image/png", 422, "corrupt PNG"),
    ],
    ids=["truncated-jpeg", "jpeg-no-frame", "random-bytes", "empty", "gif-type", "gif-bytes", "text-plain",
         "pixel-bomb", "png-garbage"],
)
def test_bad_images_are_refused(client, recording, photo_jpeg, make, mime, status, fragment):
    r = _post(client, make(photo_jpeg), mime=mime)
    assert r.status_code == status, r.text
    assert fragment in r.json()["detail"]
    assert recording.images == []


@pytest.mark.parametrize(
    "image, instruction, extra, fragment",
    [
        (None, "Find survivors", None, "missing form field 'image'"),
        (b"jpeg", None, None, "missing form field 'instruction'"),
        (b"jpeg", "   ", None, "'instruction' is empty"),
        (b"jpeg", "x" * (MAX_TASK_CHARS + 1), None, f"the limit is {MAX_TASK_CHARS}"),
        (b"jpeg", "Find survivors", {"max_new_tokens": "0"}, "max_new_tokens must be an integer"),
        (b"jpeg", "Find survivors", {"max_new_tokens": "many"}, "max_new_tokens must be an integer"),
        (b"jpeg", "Find survivors", {"max_new_tokens": "\u00b2"}, "max_new_tokens must be an integer"),
        (b"jpeg", "Find survivors", {"max_new_tokens": "9" * 5000}, "max_new_tokens must be an integer"),
        (b"jpeg", "Find survivors", {"task": "typo"}, "unknown form field(s) task"),
    ],
    ids=["no-image", "no-instruction", "blank-instruction", "long-instruction", "zero-tokens", "nan-tokens",
         "superscript-tokens", "5000-digit-tokens", "unknown-field"],
)
def test_bad_fields_are_422(client, recording, photo_jpeg, image, instruction, extra, fragment):
    if image is None:  # a multipart body with the text field only
        r = client.post("/analyze", files={"instruction": (None, instruction)}, headers=AUTH)
    else:
        r = _post(client, photo_jpeg, instruction, extra=extra)
    assert r.status_code == 422, r.text
    assert fragment in r.json()["detail"]
    assert recording.images == []


def test_image_sent_as_text_field_is_422(client, recording):
    r = client.post("/analyze", files={"image": (None, "not a file"), "instruction": (None, "Go")}, headers=AUTH)
    assert r.status_code == 422 and "must be a file upload" in r.json()["detail"]
    assert recording.images == []


def test_malformed_multipart_is_400(client, recording):
    r = client.post("/analyze", content=b"garbage", headers={**AUTH, "Content-Type": "multipart/form-data"})
    assert r.status_code == 400 and "malformed multipart body" in r.json()["detail"]
    assert recording.images == []


def test_decode_image_checks_header_against_pixels(photo_jpeg, scene_png):
    rgb = decode_image(scene_png, "image/png")
    assert rgb.shape == (96, 128, 3) and rgb.dtype == np.uint8
    with pytest.raises(ImageError) as exc:
        decode_image(photo_jpeg, "image/jpeg", max_pixels=100)
    assert exc.value.status == 413


def _with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """`jpeg` with an APP1 Exif segment holding only the Orientation tag (as phone cameras write)."""
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    app1 = b"Exif\x00\x00" + tiff + struct.pack(">I", 0)
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def test_portrait_phone_photo_with_exif_rotation_is_accepted(client, recording):
    """A phone's portrait JPEG is stored landscape with EXIF Orientation 6 (rotate 90 degrees): OpenCV
    decodes it upright, so its shape is the header's transposed; that is a valid photo, not a corrupt one."""
    landscape = np.zeros((40, 100, 3), np.uint8)
    landscape[:, :50] = 255  # left half white
    ok, buf = cv2.imencode(".jpg", landscape)
    assert ok
    photo = _with_exif_orientation(buf.tobytes(), 6)
    rgb = decode_image(photo, "image/jpeg")
    assert rgb.shape == (100, 40, 3)  # upright: as cv2.imread shows it
    assert rgb[:45].mean() > 200 and rgb[55:].mean() < 50  # the white half is now on top
    r = _post(client, photo, "Find survivors")
    assert r.status_code == 200, r.text
    assert [im.shape for im in recording.images] == [(100, 40, 3)]


# -- a real server -----------------------------------------------------------------------------


def test_serve_refuses_a_missing_bundle(tmp_path):
    proc = subprocess.run([*serve_command(), "--bundle", str(tmp_path / "nope")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "cannot load the bundle" in proc.stderr and "does not exist" in proc.stderr


def test_real_uvicorn_server_on_loopback(tiny_bundle, photo_jpeg):
    with running_server(tiny_bundle, "--max-body-mb", "1", env={"EMBER_SERVE_TOKEN": TOKEN}) as server:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.get("/health").json()["status"] == "ok"
            assert http.get("/model").status_code == 401
            r = http.post("/analyze", headers=AUTH, files={"image": ("f.jpg", photo_jpeg, "image/jpeg")},
                          data={"instruction": "Find survivors"})
            assert r.status_code == 200, r.text
            assert r.json()["incident_type"] in INCIDENT_LABELS
            bad = http.post("/analyze", headers=AUTH, files={"image": ("f.jpg", photo_jpeg[:500], "image/jpeg")},
                            data={"instruction": "Find survivors"})
            assert bad.status_code == 422 and "corrupt JPEG" in bad.json()["detail"]
            big = http.post("/analyze", headers=AUTH, files={"image": ("f.jpg", b"\xff\xd8\xff" + bytes(2 << 20))},
                            data={"instruction": "x"})
            assert big.status_code == 413
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=20) == 0, "ember-serve should exit 0 on SIGINT"
