"""ember-serve picks up a bundle swapped in at its --bundle path (periodic stat check, or POST /reload):
the real app and real engines on copies of the tiny bundle (bundle.json's model_version changed for
the "new" one); one real `ember-serve` process for the command line's wiring."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from ember.engine.reload import BundleSlot, engine_slot, load_checked_engine
from ember.serve.app import ServeSettings, create_app
from tests.deploy.serving import running_server
from tests.fleet.rollout import corrupt_file, swap_in, with_version

TOKEN = "rollout token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
V1 = "tiny-random-int8"
V2 = "tiny-random-int8-v2"


@pytest.fixture()
def live(tiny_bundle: Path, tmp_path: Path) -> Path:
    return shutil.copytree(tiny_bundle, tmp_path / "srv" / "bundle")


@pytest.fixture()
def new_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    return with_version(tiny_bundle, tmp_path / "new", V2)


def _analyze(client: TestClient, jpeg: bytes) -> str:
    r = client.post("/analyze", headers=AUTH, files={"image": ("p.jpg", jpeg, "image/jpeg")},
                    data={"instruction": "Find survivors", "max_new_tokens": "2"})
    assert r.status_code == 200, r.text
    return r.json()["model_version"]


def _until(predicate, timeout: float = 30.0) -> bool:
    """Poll the API until `predicate()` holds (the server's own check period paces the change)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_a_swapped_in_bundle_is_served_after_the_periodic_check_and_a_bad_one_keeps_the_old(
    live, new_bundle, tmp_path, photo_jpeg
):
    app = create_app(engine_slot(live), ServeSettings(token=TOKEN, bundle_check_period_s=0.1))
    with TestClient(app) as client:
        health = client.get("/health").json()
        assert health["model_version"] == V1 and health["model_reload_error"] == "", health
        assert _analyze(client, photo_jpeg) == V1

        swap_in(new_bundle, live)
        assert _until(lambda: client.get("/health").json()["model_version"] == V2), client.get("/health").json()
        assert _analyze(client, photo_jpeg) == V2
        assert client.get("/model", headers=AUTH).json()["bundle"]["model_version"] == V2

        bad = shutil.copytree(new_bundle, tmp_path / "bad")
        corrupt_file(bad)
        swap_in(bad, live)
        assert _until(lambda: client.get("/health").json()["model_reload_error"] != ""), client.get("/health").json()
        health = client.get("/health").json()
        assert health["status"] == "ok" and health["model_version"] == V2, health
        assert "sha256 mismatch for decoder.onnx" in health["model_reload_error"], health
        assert _analyze(client, photo_jpeg) == V2, "the old engine keeps serving"

        swap_in(new_bundle, live)  # a good bundle again clears the error
        assert _until(lambda: client.get("/health").json()["model_reload_error"] == ""), client.get("/health").json()
        assert client.get("/health").json()["model_version"] == V2


def test_post_reload_needs_the_token_and_answers_what_it_loaded_or_why_not(live, new_bundle, tmp_path, photo_jpeg):
    app = create_app(engine_slot(live), ServeSettings(token=TOKEN, bundle_check_period_s=0.0))
    with TestClient(app) as client:
        swap_in(new_bundle, live)
        assert client.post("/reload").status_code == 401
        assert client.get("/health").json()["model_version"] == V1, "bundle_check_period_s 0: no automatic reload"
        r = client.post("/reload", headers=AUTH)
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == V2 and f"{V1} -> {V2}" in r.json()["message"], r.json()
        assert _analyze(client, photo_jpeg) == V2

        bad = shutil.copytree(new_bundle, tmp_path / "bad")
        corrupt_file(bad)
        swap_in(bad, live)
        r = client.post("/reload", headers=AUTH)
        assert r.status_code == 409, r.text
        assert "sha256 mismatch" in r.json()["detail"] and f"still running {V2}" in r.json()["detail"], r.json()
        assert "sha256 mismatch" in client.get("/health").json()["model_reload_error"]
        assert _analyze(client, photo_jpeg) == V2


class _Gated:
    """A real engine whose analyses wait at `gate` once they started (the test holds one in flight)."""

    def __init__(self, engine) -> None:
        self.engine, self.meta = engine, engine.meta
        self.model_version = engine.model_version
        self.gate, self.entered = threading.Event(), threading.Event()
        self.gate.set()

    def analyze(self, image, task=None, max_new_tokens=None):
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.engine.analyze(image, task=task, max_new_tokens=max_new_tokens)


def test_an_analysis_in_flight_finishes_on_the_engine_it_started_on(live, new_bundle, photo_jpeg):
    loaded: list[_Gated] = []
    new_loaded = threading.Event()

    def load(path: Path) -> tuple[_Gated, str]:
        engine, version = load_checked_engine(path)
        loaded.append(_Gated(engine))
        if len(loaded) > 1:
            new_loaded.set()  # the swap comes next: it waits for the analysis in flight
        return loaded[-1], version

    slot = BundleSlot(live, load)
    slot.load_initial()
    with TestClient(create_app(slot, ServeSettings(token=TOKEN))) as client:
        first = loaded[0]
        first.gate.clear()
        answers: dict[str, httpx.Response] = {}
        analysing = threading.Thread(target=lambda: answers.setdefault("analyze", client.post(
            "/analyze", headers=AUTH, files={"image": ("p.jpg", photo_jpeg, "image/jpeg")},
            data={"instruction": "Find survivors", "max_new_tokens": "2"})))
        analysing.start()
        assert first.entered.wait(30), "the analysis did not start"
        swap_in(new_bundle, live)
        reloading = threading.Thread(target=lambda: answers.setdefault("reload", client.post("/reload", headers=AUTH)))
        reloading.start()
        assert new_loaded.wait(60), "the new bundle was not loaded"
        health = client.get("/health").json()  # answers while an analysis and a reload are under way
        assert health["pending"] == 1 and health["model_version"] == V1, health
        first.gate.set()
        analysing.join(60)
        reloading.join(60)
        assert answers["analyze"].status_code == 200 and answers["analyze"].json()["model_version"] == V1
        assert answers["reload"].status_code == 200 and answers["reload"].json()["model_version"] == V2
        assert _analyze(client, photo_jpeg) == V2


def test_the_command_reloads_a_swapped_in_bundle(live, new_bundle):
    with running_server(live, "--bundle-check-period-s", "0.2", env={"EMBER_SERVE_TOKEN": TOKEN}) as server:
        with httpx.Client(base_url=server.base, timeout=30) as http:
            assert http.get("/health").json()["model_version"] == V1
            swap_in(new_bundle, live)
            assert _until(lambda: http.get("/health").json()["model_version"] == V2)
            assert http.post("/reload").status_code == 401
            assert http.post("/reload", headers=AUTH).json()["model_version"] == V2
        assert any(f"model reloaded: {V1} -> {V2}" in line for line in server.output), "".join(server.output)


def test_a_negative_check_period_is_a_usage_error(tiny_bundle):
    from ember.serve.app import main

    assert main(["--bundle", str(tiny_bundle), "--bundle-check-period-s", "-1"]) == 2
