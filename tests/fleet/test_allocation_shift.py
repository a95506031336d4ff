"""A shift of a mixed 20-robot fleet on the Allocator (tests/fleet/shift.py): batteries draining and
charging with +-1% noise, `available` toggled, network drops of 5-60 s, 5-30 tasks open and closed
in random order; thousands of events, the user's invariants checked after each one."""

from __future__ import annotations

import pytest

from tests.fleet.shift import Shift


@pytest.mark.parametrize("seed", range(4))
def test_a_shift_keeps_every_step_accounted_for_and_steps_stay_put(seed):
    shift = Shift(seed)
    shift.run(400)
    assert shift.events > 7000
    assert shift.n_tasks > 40 and shift.moves > 0 and shift.alerts > 0  # the shift did exercise it all
