#!/bin/bash
# Entry point of the Ember robot image: the ROS 2 distro, then the Ember workspace, then the command.
set -e
# shellcheck disable=SC1090
source "/opt/ros/${ROS_DISTRO}/setup.bash"
# shellcheck disable=SC1091
source /opt/ember/ros2_ws/install/setup.bash
exec "$@"
