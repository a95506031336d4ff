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
#   ./run.sh swap-bundle NEW   check the bundle NEW (copied beside this package) and swap it in as
#                              bundle/: the running node loads it without a restart (ember-deploy swap-bundle)
#
# Without an argument: `ros` when `ros2` is on PATH, else `serve`. robot.env holds this
# robot's id and type and its fleet.yaml respawn; variables already set in the environment win over it.
#
# ros and docker supervise the node when EMBER_RESPAWN=1: an exit other than 0 starts it again after
# EMBER_RESPAWN_DELAY_S, at most EMBER_RESPAWN_MAX_RESTARTS times within EMBER_RESPAWN_WINDOW_S; one
# more and run.sh gives up with the node's exit code (for systemd or docker to take over). Exit 0 is a
# clean stop. SIGINT, SIGTERM and SIGHUP go to the node's whole process group (ros2 run and the node it
# starts) and end run.sh with 0. Processes of the group left when the node ended get SIGTERM, and
# SIGKILL EMBER_STOP_TIMEOUT_S (default 10) later.
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

# --- the respawn supervisor of `ros` and `docker` ----------------------------------------------
NODE="incident_node of $EMBER_ROBOT_ID"
say() { echo "run.sh: $*" >&2; }
bad_setting() {  # NAME WHAT: say what the variable must be, exit 2
    say "$1 must be $2, not '${!1:-}' (robot.env or the environment)"
    exit 2
}
setting() {  # NAME REGEX WHAT: the variable matches REGEX, or bad_setting
    [[ "${!1:-}" =~ $2 ]] || bad_setting "$1" "$3"
}
SECONDS_RE='^[0-9]{1,9}(\.[0-9]+)?$'
ms() {  # seconds ("2", "0.25") -> integer milliseconds
    local frac=""
    [[ "$1" == *.* ]] && frac="${1#*.}"
    frac="${frac}000"
    echo $((10#${1%%.*} * 1000 + 10#${frac:0:3}))
}
now_ms() {  # monotonic (since boot) where /proc/uptime exists
    local up
    if read -r up _ 2>/dev/null </proc/uptime; then ms "$up"; else echo $(($(date +%s) * 1000)); fi
}
group_alive() {  # a process of group $1 that is not a zombie
    local stat fields state pgrp
    kill -0 -- "-$1" 2>/dev/null || return 1
    for stat in /proc/[0-9]*/stat; do
        read -r fields 2>/dev/null <"$stat" || continue
        read -r state _ pgrp _ <<<"${fields##*) }"  # after "pid (comm) ": state ppid pgrp ...
        [[ "$pgrp" == "$1" && "$state" != Z ]] && return 0
    done
    [[ ! -d /proc/self ]]  # no /proc: kill -0 is all there is
}
on_stop() {  # the trap of INT, TERM, HUP: pass the signal to the node's process group
    woke=1
    [[ -n "$stop_signal" ]] || say "SIG$1: stopping $NODE"
    stop_signal="$1"
    if [[ -n "$child" ]]; then kill -s "$1" -- "-$child" 2>/dev/null || true; fi
}
run_child() {  # start "$@" as its own process group; wait for it (through stop signals); sets $code
    code=0
    [[ -z "$stop_signal" ]] || return 0
    set -m  # job control while forking: the child gets a process group of its own, SIGINT not ignored
    "$@" &
    child=$!
    set +m  # and no job notices ("[1]+ Interrupt") on a terminal
    if [[ -n "$stop_signal" ]]; then kill -s "$stop_signal" -- "-$child" 2>/dev/null || true; fi
    while :; do
        woke="" code=0
        wait "$child" || code=$?
        [[ -n "$woke" ]] || break  # else a trap ended the wait: the child may still run
    done
    group_alive "$child" || { child=""; return 0; }
    # a process that outlived the node's leader (a node left by a crashed `ros2 run`): stop it too
    [[ -n "$stop_signal" ]] || kill -TERM -- "-$child" 2>/dev/null || true
    local left=$(($(ms "$EMBER_STOP_TIMEOUT_S") / 100)) i
    for ((i = 0; i <= left; i++)); do
        group_alive "$child" || { child=""; return 0; }
        sleep 0.1 &
        wait $! || true  # (a stop signal ends the wait; the trap has passed it on)
    done
    say "processes of $NODE still running after it ended; killing them"
    kill -KILL -- "-$child" 2>/dev/null || true
    child=""
}
supervise() {  # run the node command "$@" under fleet.yaml's respawn (see the top of this file)
    EMBER_RESPAWN="${EMBER_RESPAWN:-0}"  # a robot.env without it: off, as fleet.yaml's default
    setting EMBER_RESPAWN '^[01]$' "0 or 1"
    [[ "$EMBER_RESPAWN" == 1 ]] || exec "$@"
    EMBER_STOP_TIMEOUT_S="${EMBER_STOP_TIMEOUT_S:-10}"
    setting EMBER_RESPAWN_DELAY_S "$SECONDS_RE" "a number of seconds >= 0"
    setting EMBER_RESPAWN_MAX_RESTARTS '^0*[1-9][0-9]{0,8}$' "an integer >= 1"
    setting EMBER_RESPAWN_WINDOW_S "$SECONDS_RE" "a number of seconds > 0"
    setting EMBER_STOP_TIMEOUT_S "$SECONDS_RE" "a number of seconds >= 0"
    local delay="$EMBER_RESPAWN_DELAY_S" max=$((10#$EMBER_RESPAWN_MAX_RESTARTS)) window="$EMBER_RESPAWN_WINDOW_S"
    local window_ms now t
    local -a times=() kept
    window_ms=$(ms "$window")
    ((window_ms > 0)) || bad_setting EMBER_RESPAWN_WINDOW_S "a number of seconds > 0"
    stop_signal="" child="" woke="" code=0
    trap 'on_stop INT' INT
    trap 'on_stop TERM' TERM
    trap 'on_stop HUP' HUP
    while :; do
        run_child "$@"
        [[ -z "$stop_signal" ]] || exit 0
        if ((code == 0)); then say "$NODE finished (exit code 0): not respawned"; exit 0; fi
        now=$(now_ms)
        kept=()
        for t in "${times[@]}"; do ((now - t > window_ms)) || kept+=("$t"); done
        times=("${kept[@]}")
        if ((${#times[@]} >= max)); then
            say "$NODE exited $((max + 1)) times within ${window}s (respawn.max_restarts $max); giving up"
            exit "$code"
        fi
        times+=("$now")
        say "$NODE exited with code $code; respawning in ${delay}s (restart ${#times[@]} of at most $max within ${window}s)"
        run_child sleep "$delay"
        [[ -z "$stop_signal" ]] || exit 0
    done
}

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
swap-bundle)
    [[ $# -ge 1 ]] || { echo "usage: $0 swap-bundle NEW_BUNDLE_DIR [--threads N]" >&2; exit 2; }
    with_shipped_code
    new="$1"; shift
    exec "$PY" -m ember.deploy.cli swap-bundle "$new" "$PKG/bundle" "$@"
    ;;
ros)
    supervise ros2 run ember incident_node --ros-args -r "__ns:=/$EMBER_ROBOT_ID" --params-file "$PARAMS" \
        -p "bundle:=$PKG/bundle" -p "robot_id:=$EMBER_ROBOT_ID" -p "robot_type:=$EMBER_ROBOT_TYPE" "$@"
    ;;
docker)
    # Host network and IPC: DDS discovery on the robot's network, and Fast DDS shared memory
    # with other ROS 2 processes of this computer (camera driver) works.
    # TINI_KILL_PROCESS_GROUP: --init's tini passes `docker stop`'s SIGTERM to the whole process group
    # of `ros2 run`, so the node it started stops cleanly too instead of being killed 10 s later.
    env_args=(-e "ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-0}" -e "EMBER_ROBOT_ID=$EMBER_ROBOT_ID" -e TINI_KILL_PROCESS_GROUP=1)
    for var in ROS_AUTOMATIC_DISCOVERY_RANGE ROS_STATIC_PEERS RMW_IMPLEMENTATION ROS_DISCOVERY_SERVER; do
        if [[ -n "${!var:-}" ]]; then env_args+=(-e "$var=${!var}"); fi
    done
    # run.sh supervises `docker run --rm` (the same respawn as ros); docker's own --restart would
    # conflict with --rm and outlive run.sh.
    # The package folder is mounted, not its bundle: a bind mount pins the directory it mounts, so a
    # bundle swapped in on the host (ember-deploy swap-bundle) would not be seen through one.
    supervise docker run --rm --init --network host --ipc host --name "ember-$EMBER_ROBOT_ID" "${env_args[@]}" \
        -v "$PKG:/opt/ember/package:ro" -v "$PARAMS:/opt/ember/robot.yaml:ro" \
        "${EMBER_IMAGE:-ember-robot:latest}" \
        ros2 run ember incident_node --ros-args -r "__ns:=/$EMBER_ROBOT_ID" --params-file /opt/ember/robot.yaml \
        -p bundle:=/opt/ember/package/bundle -p "robot_id:=$EMBER_ROBOT_ID" -p "robot_type:=$EMBER_ROBOT_TYPE" "$@"
    ;;
serve)
    with_shipped_code
    exec "$PY" -m ember.serve.app --bundle "$PKG/bundle" \
        --host "${EMBER_SERVE_HOST:-127.0.0.1}" --port "${EMBER_SERVE_PORT:-8000}" "$@"
    ;;
*)
    echo "usage: $0 [setup|check|ros|docker|serve|swap-bundle] [args...]" >&2
    exit 2
    ;;
esac
"""

CONSTRAINTS_ROS = """\
# Used by `./run.sh setup` next to a ROS 2 distro (venv with --system-site-packages):
# the distro's rclpy and message packages are built against its numpy 1.x C ABI.
numpy<2
"""
