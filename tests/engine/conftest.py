"""One torch thread for these tests: on a shared 2-core machine, OpenMP spinning makes tiny
models 10-30x slower with 2 threads than with 1."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # the robot-side install has no torch
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
