"""rosbag2 tools for the embedded default (`ember-bag`), without `ros2 bag`.

`rosbags` reads and writes rosbag2 (sqlite3 and mcap) in pure Python; rclpy publishes the
recorded bytes unchanged. Submodules:

* `ember.bag.io` - opening bags with clear errors, writers, connections;
* `ember.bag.types` - message definitions and the rclpy classes behind type names;
* `ember.bag.ground_truth` - the /ember/ground_truth message and the labels files;
* `ember.bag.make`, `ember.bag.replay`, `ember.bag.record` - the three commands;
* `ember.bag.frames` - camera frames + ground truth out of a bag (for evaluation).
"""

from ember.bag.errors import BagError

__all__ = ["BagError"]
