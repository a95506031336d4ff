"""Robots whose clocks are not synchronised (a Raspberry Pi has no real-time clock): the manager's
estimate of each robot's clock offset from its heartbeats, and fusion on corrected stamps. No ROS."""

from __future__ import annotations

from ember.ros.fusion import OFFSET_WINDOW, ClockOffset, IncidentFuser, Report, skew_change

FIRE = [0.9, 0.7, 0.1, 0.2, 0.0]
BEHIND = 612.3
"""the robot's clock is this far behind the manager's (s)"""


def beats(est: ClockOffset, manager_times: list[float], offset: float, delay: float = 0.02) -> None:
    """Heartbeats sent at these manager times by a robot whose clock is `offset` behind, arriving `delay` later."""
    for t in manager_times:
        est.add(t - offset, t + delay)


def test_no_heartbeat_no_estimate_and_raw_stamps_stay():
    est = ClockOffset()
    assert est.value is None
    assert est.to_manager(1000.0) == 1000.0


def test_the_offset_is_the_low_delay_not_one_delayed_heartbeat():
    est = ClockOffset()
    beats(est, [100.0, 100.5, 101.0], BEHIND)
    est.add(101.5 - BEHIND, 101.5 + 3.0)  # stuck 3 s in a Wi-Fi retransmission
    beats(est, [102.0], BEHIND)
    assert abs(est.value - (BEHIND + 0.02)) < 1e-9
    assert abs(est.to_manager(50.0) - (50.0 + BEHIND + 0.02)) < 1e-9


def test_a_clock_stepped_forward_by_ntp_is_followed_within_two_heartbeats():
    est = ClockOffset()
    beats(est, [100.0 + 0.5 * i for i in range(OFFSET_WINDOW)], BEHIND)
    beats(est, [110.0, 110.5], 0.0)  # chrony stepped the robot's clock to the right time
    assert abs(est.value - 0.02) < 1e-9


def test_a_clock_stepped_back_by_ntp_is_followed_within_a_few_heartbeats():
    est = ClockOffset()
    beats(est, [100.0 + 0.5 * i for i in range(OFFSET_WINDOW)], -3600.0)  # an hour ahead
    new = [110.0 + 0.5 * i for i in range(OFFSET_WINDOW - 1)]
    beats(est, new[:-1], 0.0)
    assert est.value < -3000.0  # the old estimate holds until most of the window agrees
    beats(est, new[-1:], 0.0)
    assert abs(est.value - 0.02) < 1e-9


def test_one_heartbeat_stamped_across_a_clock_step_does_not_move_the_estimate():
    """A simulation reset (/clock jumps back) reaches the robot a moment before the manager: one
    heartbeat is stamped on the new clock and compared with the old one."""
    est = ClockOffset()
    beats(est, [100.0 + 0.5 * i for i in range(4)], 0.0)
    est.add(0.1, 102.0)  # looks 102 s behind
    beats(est, [102.5], 0.0)
    assert abs(est.value - 0.02) < 1e-9


def test_heartbeats_without_a_clock_are_ignored():
    """A heartbeat with a zero stamp (a third-party robot that leaves it unset, a simulated clock
    with no /clock yet) or a manager clock at zero (its /clock not come yet) says nothing."""
    est = ClockOffset()
    est.add(0.0, 100.0)
    est.add(42.0, 0.0)
    assert est.value is None


def test_reports_of_two_robots_ten_minutes_apart_fuse_on_corrected_stamps():
    f = IncidentFuser(window_s=10)
    a = f.add_analysis(Report("drone_1", 1000.0, "on fire", 0.9), received=1.0)
    # drone_2's clock is 612.3 s behind: its image of the same fire is stamped 612.3 s earlier
    b = f.add_analysis(Report("drone_2", 1001.0 - BEHIND, "on fire", 0.8, offset=BEHIND), received=2.0)
    assert b is a and a.reporters == ["drone_1", "drone_2"]
    assert a.first_seen == 1000.0 and abs(a.last_seen - 1001.0) < 1e-9
    # its selection carries the same raw header: joined by the raw stamp
    assert f.add_selection("drone_2", 1001.0 - BEHIND, FIRE, ["drone"], 0.8) is a
    assert a.reports["drone_2"].selection_scores == tuple(FIRE)
    assert f.incident_of("drone_2", 1001.0 - BEHIND) is a


def test_without_an_offset_the_same_reports_stay_apart():
    """Today's behaviour for a robot the manager has no heartbeat from: raw stamps."""
    f = IncidentFuser(window_s=10)
    a = f.add_analysis(Report("drone_1", 1000.0, "on fire", 0.9), received=1.0)
    b = f.add_analysis(Report("drone_2", 1001.0 - BEHIND, "on fire", 0.8), received=2.0)
    assert b is not a


def test_a_robot_far_behind_does_not_join_an_old_incident_its_raw_stamps_hit():
    f = IncidentFuser(window_s=10)
    old = f.add_analysis(Report("drone_1", 1000.0 - BEHIND, "on fire", 0.9), received=1.0)  # ten minutes ago
    now = f.add_analysis(Report("drone_1", 1000.0, "on fire", 0.9), received=613.0)  # the fire now
    late = f.add_analysis(Report("drone_2", 1000.5 - BEHIND, "on fire", 0.8, offset=BEHIND), received=614.0)
    assert old is not now and late is now
    assert old.reporters == ["drone_1"] and now.reporters == ["drone_1", "drone_2"]


def test_a_skewed_clock_is_alerted_once_then_again_only_when_it_changes_a_lot():
    assert skew_change(1.5, None, 2.0) == ""  # within the limit
    assert skew_change(-612.3, None, 2.0) == "alert"  # ahead or behind alike
    assert skew_change(612.3, 612.3, 2.0) == ""
    assert skew_change(640.0, 612.3, 2.0) == ""  # drifting: under a tenth of the offset
    assert skew_change(700.0, 612.3, 2.0) == "alert"
    assert skew_change(4.5, 2.1, 2.0) == "alert"  # a small offset: the limit is what counts
    assert skew_change(1.5, 612.3, 2.0) == ""  # just within the limit: no flapping at its edge
    assert skew_change(0.5, 612.3, 2.0) == "clear"  # NTP synced it
    assert skew_change(0.5, None, 2.0) == ""
