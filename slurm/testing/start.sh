#!/usr/bin/env bash
# Start a single-node SLURM cluster WITH accounting on localhost, everything under one folder:
#   munged (as user munge), mariadbd (as user mysql, TCP 127.0.0.1:$TDMT_SLURM_DB_PORT), slurmdbd, slurmctld, slurmd.
# No systemd, no cgroups (proctrack/linuxproc, task/none). Requeued jobs restart within seconds
# (cred_expire=5, bf_interval=1, sched_interval=1). DESIGN §8 lists the measured facts behind these settings.
#
#   slurm/testing/start.sh [DIR]      (default DIR: /tmp/tdmt-slurm)
#   export SLURM_CONF=DIR/slurm.conf  (printed at the end; every client command and the launcher need it)
#   slurm/testing/stop.sh [DIR]       stops every daemon by the PID it wrote into DIR/pids/
set -euo pipefail
D=$(realpath -m "${1:-${TDMT_SLURM_DIR:-/tmp/tdmt-slurm}}")
DB_PORT=${TDMT_SLURM_DB_PORT:-3307}
PORT=${TDMT_SLURM_PORT:-6817}  # slurmctld; slurmd and slurmdbd use the next two
CPUS=${TDMT_SLURM_CPUS:-4}   # slots advertised by the node (config_overrides lets it exceed the real cores)
here=$(dirname "$(realpath "$0")")
if [ -d "$D/pids" ] && ls "$D"/pids/*.pid >/dev/null 2>&1; then
  "$here/stop.sh" "$D"
fi
rm -rf "$D"
mkdir -p "$D"/{pids,log,spool/ctld,spool/d,munge,mysql}
chmod 755 "$D"
if ! runuser -u munge -- test -x "$D" || ! runuser -u mysql -- test -x "$D"; then
  echo "[slurm/testing] $D must be reachable by users munge and mysql (a parent folder is private?)" >&2
  exit 1
fi
log() { echo "[slurm/testing] $*"; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local t=$1 what=$2; shift 2
  for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  log "timed out waiting for $what; logs in $D/log:"; tail -n 20 "$D"/log/*.log >&2 || true
  return 1
}

# --- munge: private key, default socket (slurmctld's connection to slurmdbd only uses the default socket)
MUNGE_SOCK=/run/munge/munge.socket.2
if [ -S "$MUNGE_SOCK" ] && munge -n -S "$MUNGE_SOCK" >/dev/null 2>&1; then
  log "another munged already serves $MUNGE_SOCK (a cluster is running?): stop it first with slurm/testing/stop.sh DIR"
  exit 1
fi
mkdir -p /run/munge; chown munge:munge /run/munge; chmod 755 /run/munge
chown munge:munge "$D/munge"; chmod 700 "$D/munge"
dd if=/dev/urandom of="$D/munge/munge.key" bs=1 count=1024 status=none
chown munge:munge "$D/munge/munge.key"; chmod 400 "$D/munge/munge.key"
runuser -u munge -- munged --key-file="$D/munge/munge.key" --socket="$MUNGE_SOCK" \
  --pid-file="$D/munge/munged.pid" --log-file="$D/munge/munged.log" --seed-file="$D/munge/munged.seed" --force
wait_for 10 munged test -S "$MUNGE_SOCK"
cp "$D/munge/munged.pid" "$D/pids/munged.pid"

# --- MariaDB for slurmdbd
chown mysql:mysql "$D/mysql"
mariadb-install-db --user=mysql --datadir="$D/mysql/data" --auth-root-authentication-method=normal \
  --skip-test-db >"$D/log/mariadb-install.log" 2>&1
chown -R mysql:mysql "$D/mysql"
mariadbd --user=mysql --datadir="$D/mysql/data" --socket="$D/mysql/mysqld.sock" --port="$DB_PORT" \
  --bind-address=127.0.0.1 --pid-file="$D/mysql/mariadbd.pid" --log-error="$D/log/mariadbd.log" \
  --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --skip-name-resolve >/dev/null 2>&1 &
echo $! > "$D/pids/mariadbd.pid"
wait_for 30 mariadbd mariadb --socket="$D/mysql/mysqld.sock" -uroot -e "select 1"
mariadb --socket="$D/mysql/mysqld.sock" -uroot <<SQL
CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE DATABASE slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --- SLURM configuration
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat > "$D/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$D/spool/slurmdbd.pid
LogFile=$D/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
chmod 600 "$D/slurmdbd.conf"
cat > "$D/slurm.conf" <<CONF
ClusterName=tdmt
SlurmctldHost=localhost(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
AuthInfo=cred_expire=5
CredType=cred/munge
StateSaveLocation=$D/spool/ctld
SlurmdSpoolDir=$D/spool/d
SlurmctldPidFile=$D/spool/slurmctld.pid
SlurmdPidFile=$D/spool/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
JobRequeue=1
KillWait=5
MinJobAge=300
ReturnToService=2
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$((PORT + 2))
JobCompType=jobcomp/none
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$D/slurm.conf

# --- daemons
slurmdbd  # reads slurmdbd.conf next to $SLURM_CONF
wait_for 30 slurmdbd test -s "$D/spool/slurmdbd.pid"
cp "$D/spool/slurmdbd.pid" "$D/pids/slurmdbd.pid"
wait_for 30 "slurmdbd port" bash -c "exec 3<>/dev/tcp/127.0.0.1/$((PORT + 2))"
slurmctld -i -f "$D/slurm.conf"
wait_for 30 slurmctld scontrol ping
cp "$D/spool/slurmctld.pid" "$D/pids/slurmctld.pid"
slurmd -N localhost -f "$D/slurm.conf"
wait_for 30 slurmd test -s "$D/spool/slurmd.pid"
cp "$D/spool/slurmd.pid" "$D/pids/slurmd.pid"
wait_for 60 "node idle" bash -c "sinfo -h -N -o %t | grep -qx idle"
log "cluster up in $D (partition debug, $CPUS slots, accounting on)"
echo "export SLURM_CONF=$D/slurm.conf"
