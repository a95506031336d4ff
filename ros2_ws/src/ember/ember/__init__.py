"""Ember robot side: the torch-free engine and the ROS 2 nodes."""

__version__ = "0.1.0"
