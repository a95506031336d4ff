# syntax=docker/dockerfile:1
# Ember robot image: ROS 2 Jazzy + the torch-free engine + the `ember` nodes, for the robots'
# Raspberry Pi class computers (linux/arm64) and amd64 hosts. Build from the repository root:
#
#   docker buildx build --platform linux/arm64,linux/amd64 -f docker/robot.Dockerfile -t ember-robot .
#
# Run the whole fleet of config/fleet.yaml (default command) or one robot's node:
#
#   docker run --rm --network host --ipc host -v "$PWD/build/bundle:/opt/ember/bundle:ro" ember-robot
#   docker run --rm --network host --ipc host -e EMBER_ROBOT_ID=drone_1 -v ...bundle:/opt/ember/bundle:ro \
#       -v "$PWD/robot.yaml:/opt/ember/robot.yaml:ro" ember-robot \
#       ros2 run ember incident_node --ros-args -r __ns:=/drone_1 --params-file /opt/ember/robot.yaml
#
# See docs/DEPLOYMENT.md. The model bundle is mounted, not baked in: one image, any model.
FROM ros:jazzy-ros-base

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The venv sees the distro's Python packages (rclpy, messages, launch); pip installs the
# robot-side wheels (onnxruntime, tokenizers, opencv headless, FastAPI) into it.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-venv=3.12.* \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv --system-site-packages /opt/ember/venv \
    && touch /opt/ember/venv/COLCON_IGNORE
ENV PATH=/opt/ember/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/ember/venv

WORKDIR /opt/ember
# Requirements first: this layer is rebuilt only when they change. robot.txt only: the tools of
# requirements/robot-tools.txt (rosbags, matplotlib) stay out; the distro records with `ros2 bag`.
COPY requirements/robot.txt requirements/robot.txt
COPY docker/robot-constraints.txt requirements/robot-constraints.txt
RUN pip install --no-cache-dir -r requirements/robot.txt -c requirements/robot-constraints.txt \
    && python -c "import onnxruntime, tokenizers, cv2, numpy, fastapi, uvicorn; print('numpy', numpy.__version__)" \
    && if python -c "import torch" 2>/dev/null; then echo "torch must not be in the robot image" >&2; exit 1; fi

# The workspace keeps the repository's layout, so its symlinks resolve:
# ros2_ws/src/ember_msgs -> ../../ember_msgs, ros2_ws/src/ember/{launch,config} -> ../../../{launch,config},
# ros2_ws/src/ember/requirements.txt -> ../../../requirements/robot.txt.
COPY ember_msgs/ ember_msgs/
COPY launch/ launch/
COPY config/ config/
COPY ros2_ws/ ros2_ws/
WORKDIR /opt/ember/ros2_ws
RUN . "/opt/ros/${ROS_DISTRO}/setup.sh" \
    && python -m colcon build --merge-install --event-handlers console_direct+ \
        --cmake-args -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
    && rm -rf build log \
    && test -f install/share/ember/launch/fleet.launch.py \
    && test -f install/share/ember/config/fleet.yaml

COPY --chmod=755 docker/ros_entrypoint.sh /opt/ember/ros_entrypoint.sh

# Non-root: the nodes need no privileges (cameras arrive as ROS topics from their drivers).
# (uid 10001: Ubuntu's own user already has 1000.)
RUN groupadd --gid 10001 ember \
    && useradd --no-log-init --create-home --shell /bin/bash --uid 10001 --gid ember --groups video ember \
    && mkdir -p /opt/ember/bundle \
    && chown ember:ember /opt/ember/bundle
USER 10001:10001
WORKDIR /home/ember
ENV ROS_LOG_DIR=/home/ember/.ros/log

# Healthy while an incident node of this container publishes RobotStatus heartbeats
# (EMBER_ROBOT_ID narrows it to one robot).
HEALTHCHECK --interval=30s --timeout=25s --start-period=60s --retries=3 \
    CMD ["/opt/ember/ros_entrypoint.sh", "python", "-m", "ember.deploy.health", "--timeout", "20"]

ENTRYPOINT ["/opt/ember/ros_entrypoint.sh"]
# The fleet of the installed config/fleet.yaml with the mounted bundle; replay cameras off
# (robots publish their own camera topics). config:=/path/fleet.yaml picks another fleet.
CMD ["ros2", "launch", "ember", "fleet.launch.py", "bundle:=/opt/ember/bundle", "cameras:=false"]
