#!/usr/bin/env bash
# Make .venv with everything pipeit_ros needs; idempotent: a second run only checks a stamp (about a second).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${PIPEIT_VENV:-$repo/.venv}"
stamp="$venv/.pipeit-setup"
# The ROS 2 launch system and CLI (ros2 launch / node / topic / param ...) as wheels, where the project has them:
# installed into the venv too, so `ros2 launch` and the tests that use the real tools run.
tools="${PIPEIT_ROS2_TOOLS:-$repo/../shared/ros2-tools}"
[ -x "$tools/install.sh" ] || tools=""
want="$( { cat "$repo/requirements.txt" "$repo/setup.py" "$repo/setup.cfg"
          [ -z "$tools" ] || cat "$tools/install.sh" "$tools/VERSIONS.txt" 2>/dev/null || true; } | sha256sum | cut -c1-16)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/pipeit" ]; then
  exit 0
fi

py=""
for cand in "${PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    py="$cand"; break
  fi
done
[ -n "$py" ] || { echo "setup: need Python >= 3.10 (python3 not found or too old)" >&2; exit 2; }

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv with $("$py" --version)" >&2
  "$py" -m venv "$venv" || { echo "setup: '$py -m venv' failed; on Debian/Ubuntu: sudo apt install python3-venv" >&2; exit 2; }
fi
echo "setup: installing dependencies into $venv (first run: about a minute)" >&2
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$repo/requirements.txt"
"$venv/bin/python" -m pip install -q --no-deps -e "$repo"
if [ -n "$tools" ]; then
  "$tools/install.sh" "$venv"
fi
echo "$want" > "$stamp"
echo "setup: ready" >&2
