#!/usr/bin/env bash
# Stop the test cluster started by slurm/testing/start.sh, each daemon by the PID it recorded in DIR/pids/:
# cancel the jobs still queued or running, SIGTERM to the SLURM daemons, then to MariaDB and munged; SIGKILL to any still alive after 15 s.
#   slurm/testing/stop.sh [DIR] [--purge]   (--purge also removes DIR)
set -uo pipefail
D=$(realpath -m "${1:-${TDMT_SLURM_DIR:-/tmp/tdmt-slurm}}")
[ "${2:-}" = "--purge" ] && purge=1 || purge=0

stop() {  # stop NAME...: TERM them all, wait for each, KILL the stragglers
  declare -A alive=()
  local name pid
  for name in "$@"; do
    f="$D/pids/$name.pid"
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" && alive[$name]=$pid; fi
    rm -f "$f"
  done
  for _ in $(seq 150); do
    for name in "${!alive[@]}"; do
      if ! kill -0 "${alive[$name]}" 2>/dev/null; then
        echo "[slurm/testing] stopped $name (pid ${alive[$name]})"; unset "alive[$name]"
      fi
    done
    [ ${#alive[@]} = 0 ] && return
    sleep 0.1
  done
  for name in "${!alive[@]}"; do
    kill -KILL "${alive[$name]}" 2>/dev/null && echo "[slurm/testing] killed $name (pid ${alive[$name]})"
  done
}

# Jobs first: with proctrack/linuxproc, job processes would outlive slurmd.
export SLURM_CONF="$D/slurm.conf"
if [ -f "$SLURM_CONF" ] && timeout 5 scontrol ping >/dev/null 2>&1; then
  jobs=$(squeue -h -o %F | sort -u)
  if [ -n "$jobs" ]; then
    echo "[slurm/testing] cancelling jobs: $jobs"
    scancel $jobs
    for _ in $(seq 100); do [ -z "$(squeue -h -o %i)" ] && break; sleep 0.1; done
  fi
fi
stop slurmd slurmctld slurmdbd
stop mariadbd munged
if [ $purge = 1 ]; then rm -rf "$D"; fi
exit 0
