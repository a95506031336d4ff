"""The run script written into every deployment package (`run.sh`)."""

from __future__ import annotations

RUN_SH = r"""#!/usr/bin/env bash
# Ember robot package: run this robot's incident node (or the REST API) from this folder.
#
#   ./run.sh setup     create .venv here and install requirements.txt (robot side, no torch)
#   ./run.sh check     verify the package's hashes and load the engine (ember-deploy check)
#   ./run.sh ros       ros2 run ember incident_node (a ROS 2 distro with the ember workspace sourced)
#   ./run.sh docker    the same node in the ember-robot image ($EMBER_IMAGE, default ember-robot:latest)
#   ./run.sh serve     ember-serve on $EMBER_SERVE_HOST:$EMBER_SERVE_PORT (default 127.0.0.1:8000)
#
# Without an argument: `ros` when `ros2` is on PATH, else `serve`. robot.env holds this
# robot's id and type; variables already set in the environment win over it.
set -euo pipefail

PKG="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -f "$PKG/robot.env" ]]; then
    while IFS='=' read -r key value; do
        [[ -z "$key" || "$key" == \#* ]] && continue
        [[ -n "${!key:-}" ]] || export "$key=$value"
    done <"$PKG/robot.env"
fi
: "${EMBER_ROBOT_ID:?robot.env must set EMBER_ROBOT_ID}"
: "${EMBER_ROBOT_TYPE:?robot.env must set EMBER_ROBOT_TYPE}"
PARAMS="$PKG/config/robot.yaml"
PY="$PKG/.venv/bin/python"
[[ -x "$PY" ]] || PY="$(command -v python3)"
# check and serve run the ember code shipped in python/; ros and docker use the installed package.
with_shipped_code() { export PYTHONPATH="$PKG/python${PYTHONPATH:+:$PYTHONPATH}"; }

mode="${1:-}"
[[ $# -gt 0 ]] && shift
if [[ -z "$mode" ]]; then
    if command -v ros2 >/dev/null 2>&1; then mode=ros; else mode=serve; fi
fi

case "$mode" in
setup)
    venv_args=()
    constraint_args=()
    if [[ -n "${ROS_DISTRO:-}" ]]; then
        # Next to a ROS 2 distro: see its rclpy, and keep its numpy 1.x ABI.
        venv_args+=(--system-site-packages)
        constraint_args+=(-c "$PKG/constraints-ros.txt")
    fi
    python3 -m venv "${venv_args[@]}" "$PKG/.venv"
    "$PKG/.venv/bin/python" -m pip install --disable-pip-version-check -r "$PKG/requirements.txt" "${constraint_args[@]}"
    ;;
check)
    with_shipped_code
    exec "$PY" -m ember.deploy.cli check "$PKG" "$@"
    ;;
ros)
    exec ros2 run ember incident_node --ros-args -r "__ns:=/$EMBER_ROBOT_ID" --params-file "$PARAMS" \
        -p "bundle:=$PKG/bundle" -p "robot_id:=$EMBER_ROBOT_ID" -p "robot_type:=$EMBER_ROBOT_TYPE" "$@"
    ;;
docker)
    # Host network and IPC: DDS discovery on the robot's network, and Fast DDS shared memory
    # with other ROS 2 processes of this computer (camera driver) works.
    env_args=(-e "ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-0}" -e "EMBER_ROBOT_ID=$EMBER_ROBOT_ID")
    for var in ROS_AUTOMATIC_DISCOVERY_RANGE ROS_STATIC_PEERS RMW_IMPLEMENTATION ROS_DISCOVERY_SERVER; do
        if [[ -n "${!var:-}" ]]; then env_args+=(-e "$var=${!var}"); fi
    done
    exec docker run --rm --init --network host --ipc host --name "ember-$EMBER_ROBOT_ID" "${env_args[@]}" \
        -v "$PKG/bundle:/opt/ember/bundle:ro" -v "$PARAMS:/opt/ember/robot.yaml:ro" \
        "${EMBER_IMAGE:-ember-robot:latest}" \
        ros2 run ember incident_node --ros-args -r "__ns:=/$EMBER_ROBOT_ID" --params-file /opt/ember/robot.yaml \
        -p bundle:=/opt/ember/bundle -p "robot_id:=$EMBER_ROBOT_ID" -p "robot_type:=$EMBER_ROBOT_TYPE" "$@"
    ;;
serve)
    with_shipped_code
    exec "$PY" -m ember.serve.app --bundle "$PKG/bundle" \
        --host "${EMBER_SERVE_HOST:-127.0.0.1}" --port "${EMBER_SERVE_PORT:-8000}" "$@"
    ;;
*)
    echo "usage: $0 [setup|check|ros|docker|serve] [args...]" >&2
    exit 2
    ;;
esac
"""

CONSTRAINTS_ROS = """\
# Used by `./run.sh setup` next to a ROS 2 distro (venv with --system-site-packages):
# the distro's rclpy and message packages are built against its numpy 1.x C ABI.
numpy<2
"""
