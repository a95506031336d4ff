"""Is the robot's camera reaching its incident node? A watch over the camera topics' frames.

A node with no frames looks healthy and reports nothing, which on a real robot is the most
common failure: a topic name that does not match the driver's (a missing remap), a driver that
runs but stalled (a USB camera unplugged), or raw frames too large for the DDS transport (Fast
DDS's default shared-memory segment is 512 KiB and a 640x480 rgb8 frame is 900 KiB: the driver's
process needs config/fastdds.xml). The watch tells these apart by the matched publishers and
says which one it is, once per change, with what to do.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, NO_PUBLISHER, SILENT = "ok", "no publisher", "no frames"


@dataclass
class CameraWatch:
    """The camera's state from frame arrivals and matched-publisher counts (monotonic seconds).

    `check` returns (state, message): the message only when the state changed (a warning for
    NO_PUBLISHER / SILENT, a note when frames come again), else ''. A state counts once it held
    `warn_after_s`: a camera that starts late, or a publisher that just matched, gets that long.
    `warn_after_s` 0 turns the watch off (always OK)."""

    topics: str
    warn_after_s: float
    started: float
    state: str = OK
    last_frame: float | None = None
    _publishers: int = 0
    _publishers_since: float = 0.0

    def __post_init__(self) -> None:
        self._publishers_since = self.started

    def frame(self, now: float) -> None:
        """A frame (any transport, any content) arrived."""
        self.last_frame = now

    def silent_s(self, now: float) -> float:
        """Seconds since the last frame (since start when none came yet)."""
        return now - (self.last_frame if self.last_frame is not None else self.started)

    def check(self, publishers: int, now: float) -> tuple[str, str]:
        """The state now, and the message to log if it changed."""
        if (publishers > 0) != (self._publishers > 0):
            self._publishers_since = now
        self._publishers = publishers
        state = self._state(publishers, now)
        if state == self.state:
            return state, ""
        before, self.state = self.state, state
        silent = self.silent_s(now)
        if state == NO_PUBLISHER:
            return state, (f"no camera publishes on {self.topics} (for {silent:.0f} s): is the camera driver "
                           "running, on this ROS_DOMAIN_ID, and its topic remapped to this one?")
        if state == SILENT:
            return state, (f"{publishers} publisher(s) on {self.topics} but no frame for {silent:.0f} s: the camera "
                           "driver may have stalled, or its raw frames are larger than Fast DDS's 512 KiB "
                           "shared-memory segment (start the driver with FASTDDS_DEFAULT_PROFILES_FILE set to "
                           "ember's config/fastdds.xml, or publish compressed; docs/FLEET.md, 'Large camera frames')")
        return state, f"camera frames arriving on {self.topics} again (was: {before})"

    def _state(self, publishers: int, now: float) -> str:
        if self.warn_after_s <= 0:
            return OK
        recent = self.last_frame is not None and now - self.last_frame < self.warn_after_s
        if recent:
            return OK
        if now - self._publishers_since < self.warn_after_s:
            return self.state  # a change of publishers gets its time before it counts
        return NO_PUBLISHER if publishers == 0 else SILENT
