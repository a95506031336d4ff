#!/usr/bin/env bash
# The test command of `make test` (and so of CI). Fails when pytest collects nothing.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export EMBER_REQUIRE_LOCAL_DDS=1
MARKERS="${EMBER_TEST_MARKERS:-not slow}"
.venv/bin/python -m pytest -m "$MARKERS" "$@"
rc=$?
if [[ $rc -eq 5 ]]; then
    echo "pytest collected no tests for -m '$MARKERS': that is a failure, not a pass" >&2
    exit 1
fi
exit $rc
