#!/usr/bin/env bash
# One idempotent setup path for every Makefile target (make demo, make test, ...).
#
#   .venv                 the project's virtual environment (Python 3.11)
#   requirements/*.txt    robot side (+ its tools: bags, plots), ROS 2 Kilted wheels, training side, dev tools
#   ember_msgs            generated with cmake into the venv prefix
#   ember, ember_training installed editable
#
# Each step writes a stamp (a hash of its inputs) under .venv/.ember-stamps only after it
# succeeded, so a second run does nothing and a run killed mid-way redoes just that step.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EMBER_VENV:-$ROOT/.venv}"
STAMPS="$VENV/.ember-stamps"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
MSG_BUILD="$ROOT/build/ember_msgs"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

stamp_ok() { [[ -f "$STAMPS/$1" && "$(cat "$STAMPS/$1")" == "$2" ]]; }

stamp_write() { mkdir -p "$STAMPS"; printf '%s' "$2" >"$STAMPS/$1.tmp" && mv "$STAMPS/$1.tmp" "$STAMPS/$1"; }

# 1. The venv: recreated when missing or broken (e.g. killed during creation).
if ! "$VENV/bin/python" -c 'import pip, sys; assert sys.version_info >= (3, 10)' >/dev/null 2>&1; then
    log "creating $VENV with $("$PYTHON" --version)"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
VPY="$VENV/bin/python"

# 2. Pinned dependencies. pip is itself idempotent, so a half-finished install is simply redone.
REQS=("$ROOT"/requirements/robot.txt "$ROOT"/requirements/robot-tools.txt "$ROOT"/requirements/ros.txt "$ROOT"/requirements/train.txt "$ROOT"/requirements/dev.txt)
deps_hash="$(hash_of "${REQS[@]}")"
if ! stamp_ok deps "$deps_hash"; then
    log "installing pinned dependencies (first run: a few minutes; torch comes from the local disk)"
    req_args=()
    for r in "${REQS[@]}"; do req_args+=(-r "$r"); done
    "$VPY" -m pip install --disable-pip-version-check --progress-bar off -q "${req_args[@]}" 2>&1 \
        | grep -v -E "^WARNING: Location 'file:///opt/" || true
    "$VPY" -m pip check >/dev/null 2>&1 || "$VPY" -m pip check | grep -v -i "not supported" || true
    "$VPY" -c 'import rclpy, torch, onnxruntime, tokenizers, cv2, timm, transformers, rosbags, matplotlib' \
        || { log "dependency import check failed"; exit 1; }
    stamp_write deps "$deps_hash"
    rm -f "$STAMPS/cmake-fix" "$STAMPS/msgs"
fi

# 3. The ROS wheels' exported cmake files name their build machine's Python and numpy
#    include dirs (/opt/python/...): point them at this venv's.
PYINC="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
NPINC="$("$VPY" -c 'import numpy; print(numpy.get_include())')"
fix_hash="$(printf '%s|%s|%s' "$deps_hash" "$PYINC" "$NPINC" | sha256sum | cut -c1-16)"
if ! stamp_ok cmake-fix "$fix_hash"; then
    log "rewriting rosidl_generator_py cmake include paths to $PYINC and $NPINC"
    shopt -s nullglob
    for f in "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
        sed -i -E "s#INTERFACE_INCLUDE_DIRECTORIES \"[^\"]*include/python3\.[0-9]+;[^\"]*numpy/_?core/include\"#INTERFACE_INCLUDE_DIRECTORIES \"$PYINC;$NPINC\"#" "$f"
    done
    shopt -u nullglob
    if grep -l "/opt/python" "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake >/dev/null 2>&1; then
        log "some cmake export files still point at /opt/python:"
        grep -l "/opt/python" "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake
        exit 1
    fi
    stamp_write cmake-fix "$fix_hash"
fi

# 4. ember_msgs: generated and installed into the venv prefix.
msgs_hash="$(printf '%s|%s' "$fix_hash" "$(hash_of "$ROOT"/ember_msgs/CMakeLists.txt "$ROOT"/ember_msgs/package.xml "$ROOT"/ember_msgs/msg/*.msg "$ROOT"/ember_msgs/srv/*.srv)" | sha256sum | cut -c1-16)"
if ! stamp_ok msgs "$msgs_hash" || ! "$VPY" -c 'import ember_msgs.msg' >/dev/null 2>&1; then
    log "generating ember_msgs into $VENV"
    rm -rf "$MSG_BUILD"
    mkdir -p "$MSG_BUILD"
    (
        export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
        cd "$MSG_BUILD"
        cmake "$ROOT/ember_msgs" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$VPY" \
            -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >cmake.log 2>&1 \
            || { tail -30 cmake.log; exit 1; }
        make -j"$(nproc)" >make.log 2>&1 || { tail -30 make.log; exit 1; }
        make install >install.log 2>&1 || { tail -30 install.log; exit 1; }
    )
    "$VPY" -c 'from ember_msgs.msg import IncidentAnalysis, RobotSelection, ActionPlan, ActionStep, RobotStatus
from ember_msgs.srv import AnalyzeImage, SubmitTask'
    stamp_write msgs "$msgs_hash"
fi

# 5. Our own packages, editable: the robot side (ember) and the training side (ember_training).
pkg_hash="$(printf '%s|%s' "$deps_hash" "$(hash_of "$ROOT"/pyproject.toml "$ROOT"/ros2_ws/src/ember/setup.py)" | sha256sum | cut -c1-16)"
if ! stamp_ok packages "$pkg_hash" || ! "$VPY" -c 'import ember, ember_training' >/dev/null 2>&1; then
    log "installing ember (robot side) and ember_training (training side) in editable mode"
    "$VPY" -m pip install --disable-pip-version-check -q --no-deps --no-build-isolation \
        -e "$ROOT/ros2_ws/src/ember" -e "$ROOT" 2>&1 | grep -v -E "^WARNING: Location 'file:///opt/" || true
    "$VPY" -c 'import ember, ember_training'
    stamp_write packages "$pkg_hash"
fi
