#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM cluster with accounting (slurmdbd + MariaDB).
# Needs root and apt (CI runs as root). ~45 s on a fresh Debian 12 machine. Daemons are NOT started here:
# the packages' init scripts are left alone; slurm/testing/start.sh starts everything under a temporary folder.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
   && command -v munged >/dev/null && command -v sbatch >/dev/null; then
  echo "[slurm/testing] SLURM, slurmdbd, MariaDB and munge are already installed"
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[slurm/testing] cannot install SLURM: needs root and apt-get" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d 101: package post-install scripts must not start daemons (no systemd here).
had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
if [ $had_policy = 0 ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT  # removed even when the install fails
fi
apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge mariadb-server >/dev/null
echo "[slurm/testing] installed: $(slurmctld -V), $(mariadbd --version | cut -d' ' -f1-4)"
