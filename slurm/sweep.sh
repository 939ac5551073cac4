#!/usr/bin/env bash
# Launch a sweep from the repository root with the project's virtualenv:
#   slurm/sweep.sh slurm/sweeps/example.yaml [key=value ...] [--dry-run] [--wait]
# equivalent to `tdmt sweep ...` (see docs/README_slurm.md).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exec "$root/.venv/bin/python" -m tdmt.cli sweep "$@"
