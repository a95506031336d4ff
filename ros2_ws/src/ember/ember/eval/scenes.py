"""Built-in camera frames for text-only evaluation rows: neutral outdoor scenes, no incident.

Deterministic (seeded) drawings of sky, horizon, ground and a few buildings or trees, so
robot-selection rows get an ordinary camera frame as on a robot, never a blank image.
"""

from __future__ import annotations

import cv2
import numpy as np

NEUTRAL_SOURCE = "builtin:neutral-scenes"


def neutral_frames(n: int = 4, size: int = 256, seed: int = 0) -> list[np.ndarray]:
    """`n` RGB uint8 frames of `size` x `size`: street, field, park and coast style scenes."""
    rng = np.random.default_rng(seed)
    frames = []
    grounds = [(110, 110, 115), (90, 140, 70), (80, 130, 60), (200, 185, 140)]
    for k in range(n):
        img = np.zeros((size, size, 3), np.uint8)
        horizon = int(size * rng.uniform(0.4, 0.55))
        top, bottom = np.array([90, 150, 225]), np.array([190, 215, 240])
        for y in range(horizon):
            img[y] = top + (bottom - top) * (y / max(horizon - 1, 1))
        img[horizon:] = grounds[k % len(grounds)]
        for _ in range(int(rng.integers(2, 5))):
            x, w, h = int(rng.integers(0, size - 30)), int(rng.integers(20, 50)), int(rng.integers(20, horizon))
            if k % 2 == 0:  # buildings
                cv2.rectangle(img, (x, horizon - h), (x + w, horizon), tuple(int(c) for c in rng.integers(120, 200, 3)), -1)
            else:  # trees
                cv2.circle(img, (x + w // 2, horizon - h // 2), max(6, w // 2), (40, 100 + int(rng.integers(0, 40)), 40), -1)
        noise = rng.normal(0, 4, img.shape)
        frames.append(np.clip(img.astype(np.float64) + noise, 0, 255).astype(np.uint8))
    return frames
