"""ember-serve as real clients meet it: HEAD probes, a busy server, shutdown with requests in flight.

The shutdown tests run the real `ember-serve` command; a client that has sent only part of its
upload is an in-flight request the test controls exactly (no timing involved).
"""

from __future__ import annotations

import signal
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from ember.serve.app import ServeSettings, create_app, main
from tests.deploy.serving import running_server

INSTRUCTION = b"Find survivors"


def _multipart(image: bytes, boundary: bytes = b"bnd") -> bytes:
    return (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="f.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + image + b"\r\n--" + boundary
        + b'\r\nContent-Disposition: form-data; name="instruction"\r\n\r\n' + INSTRUCTION
        + b"\r\n--" + boundary + b"--\r\n"
    )


def _request_head(body_len: int) -> bytes:
    return (b"POST /analyze HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=bnd\r\n"
            b"Content-Length: %d\r\n\r\n" % body_len)


def _read_response(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(60)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def _wait_until_in_flight(base: str, sock: socket.socket, sent: bytes) -> None:
    """Send a partial upload and return once the server has accepted the connection (its request is open)."""
    sock.sendall(sent)
    with httpx.Client(base_url=base, timeout=10) as http:  # a full round trip after our bytes went out
        assert http.get("/health").status_code == 200


def test_head_and_get_health_for_probes(engine):
    """Load balancers and `wget --spider` probe with HEAD: /health answers it like GET, without a body."""
    with TestClient(create_app(engine, ServeSettings(token="t"))) as c:
        head = c.head("/health")
        assert head.status_code == 200 and head.content == b""
        assert c.get("/health").status_code == 200
        assert c.head("/model").status_code == 401  # HEAD elsewhere still needs the token


def test_busy_server_answers_503_before_reading_the_upload(engine, scene_png):
    """A refused request costs the server nothing: it is turned away before its image is read or decoded
    (here a corrupt image, which a server that decoded first would answer with 422)."""
    app = create_app(engine, ServeSettings(max_pending=1))
    with TestClient(app) as c:
        lock = app.state.runner._lock  # held as if an analysis were running
        lock.acquire()
        results: list[int] = []
        files = {"image": ("s.png", scene_png, "image/png")}
        first = threading.Thread(
            target=lambda: results.append(c.post("/analyze", files=files, data={"instruction": "Look"}).status_code)
        )
        first.start()
        try:
            deadline = time.monotonic() + 20
            while c.get("/health").json()["pending"] < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            busy = c.post("/analyze", files={"image": ("x.jpg", b"\xff\xd8\xffnot a jpeg", "image/jpeg")},
                          data={"instruction": "Look"})
            assert busy.status_code == 503 and "busy" in busy.json()["detail"], busy.text
            assert busy.headers["retry-after"] == "1"
        finally:
            lock.release()
            first.join(timeout=30)
        assert results == [200]
        assert c.get("/health").json()["pending"] == 0


def test_sigterm_lets_an_upload_in_flight_finish_and_exits_0(tiny_bundle, photo_jpeg):
    """docker stop / systemctl stop: the request in flight still gets its analysis, then exit code 0."""
    body = _multipart(photo_jpeg)
    with running_server(tiny_bundle) as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            _wait_until_in_flight(server.base, sock, _request_head(len(body)) + body[: len(body) // 2])
            server.proc.send_signal(signal.SIGTERM)
            sock.sendall(body[len(body) // 2 :])
            response = _read_response(sock)
        assert response.startswith(b"HTTP/1.1 200 "), response[:300]
        assert b'"incident_type"' in response
        assert server.proc.wait(timeout=60) == 0, "".join(server.output)


def test_a_stalled_upload_does_not_block_shutdown(tiny_bundle, photo_jpeg):
    """A client that stops sending mid-upload is dropped after --shutdown-timeout-s; the server exits 0."""
    body = _multipart(photo_jpeg)
    with running_server(tiny_bundle, "--shutdown-timeout-s", "0.5") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            _wait_until_in_flight(server.base, sock, _request_head(len(body)) + body[:100])
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(timeout=60) == 0, "".join(server.output)
            assert not _read_response(sock).startswith(b"HTTP/1.1 200")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--threads", "0"], "--threads must be >= 1"),
        (["--max-pending", "0"], "--max-pending must be >= 1"),
        (["--shutdown-timeout-s", "-1"], "--shutdown-timeout-s must be >= 0"),
    ],
    ids=["threads", "max-pending", "shutdown-timeout"],
)
def test_serve_refuses_bad_limits(tiny_bundle, capsys, args, fragment):
    assert main(["--bundle", str(tiny_bundle), *args]) == 2
    assert fragment in capsys.readouterr().err


def test_a_client_that_disconnects_mid_upload_is_no_server_error(tiny_bundle, photo_jpeg):
    """A robot on flaky Wi-Fi that drops mid-upload frees its place and leaves no error or traceback in the log."""
    body = _multipart(photo_jpeg)
    with running_server(tiny_bundle, "--max-pending", "1") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            _wait_until_in_flight(server.base, sock, _request_head(len(body)) + body[: len(body) // 2])
        with httpx.Client(base_url=server.base, timeout=30) as http:
            deadline = time.monotonic() + 30
            while http.get("/health").json()["pending"] and time.monotonic() < deadline:
                time.sleep(0.02)
            ok = http.post("/analyze", files={"image": ("f.jpg", photo_jpeg, "image/jpeg")},
                           data={"instruction": INSTRUCTION.decode()})
            assert ok.status_code == 200, ok.text  # its place (max-pending 1) is free again
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(timeout=60) == 0
    log = "".join(server.output)
    assert "Traceback" not in log and "ERROR" not in log, log


def test_a_stalled_upload_gives_its_place_back(tiny_bundle, photo_jpeg):
    """A client that stops sending mid-upload holds its admitted place only for --body-timeout-s."""
    body = _multipart(photo_jpeg)
    with running_server(tiny_bundle, "--max-pending", "1", "--body-timeout-s", "0.5") as server:
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            _wait_until_in_flight(server.base, sock, _request_head(len(body)) + body[:100])
            answer = _read_response(sock)  # the server gives up on it, says why and closes
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
            assert b"nothing sent for 0.5 s" in answer
            with httpx.Client(base_url=server.base, timeout=30) as http:
                assert http.get("/health").json()["pending"] == 0
                ok = http.post("/analyze", files={"image": ("f.jpg", photo_jpeg, "image/jpeg")},
                               data={"instruction": INSTRUCTION.decode()})
                assert ok.status_code == 200, ok.text
