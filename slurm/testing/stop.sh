#!/usr/bin/env bash
# Stop the test cluster started by slurm/testing/start.sh: each daemon by the PID in DIR/pids/, newest first.
#   slurm/testing/stop.sh [DIR] [--purge]   (--purge also removes DIR)
set -uo pipefail
D=$(realpath -m "${1:-${TDMT_SLURM_DIR:-/tmp/tdmt-slurm}}")
[ "${2:-}" = "--purge" ] && purge=1 || purge=0
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f="$D/pids/$name.pid"
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    echo "[slurm/testing] stopped $name (pid $pid)"
  fi
  rm -f "$f"
done
if [ $purge = 1 ]; then rm -rf "$D"; fi
exit 0
