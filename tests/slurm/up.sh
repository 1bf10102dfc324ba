#!/usr/bin/env bash
# Start a single-node Slurm for the tests: partitions `cpu` (default) and `gpu`, one node
# with 8 fake H100s (gres on mknod'ed character devices), slurmdbd + MariaDB accounting.
# Idempotent: installs the Debian packages once, rewrites config only when it changed,
# starts only daemons it has not started yet, records each PID for tests/slurm/down.sh.
#
# Why accounting (slurmdbd + MariaDB, two more daemons, ~1 s more start-up): the tests
# check every job's partition and GPU request (ReqTRES/AllocTRES) after a run of several
# minutes, and `scontrol show job` forgets a job MinJobAge (300 s) after it ends; sacct
# keeps them all. Without slurmdbd, sacct fails, and the plugin, which polls with sacct by
# default (the profiles choose squeue, see there), would wait forever without an error.
set -euo pipefail
STATE=${COSMOPEDIA_SLURM_STATE:-/run/cosmopedia-slurm}   # PID files
LOGS=${COSMOPEDIA_SLURM_LOGS:-/var/log/cosmopedia-slurm}
LIB=/var/lib/cosmopedia-slurm                              # spool, state, fake devices
CONF=/etc/slurm/slurm.conf
MARK="# written by cosmopedia tests/slurm/up.sh"
NODE=$(hostname -s)
PKGS="munge slurm-client slurmctld slurmd slurmdbd mariadb-server"

alive() {  # alive NAME: the PID recorded for NAME runs (a zombie does not count)
  [ -s "$STATE/$1.pid" ] && ps -o stat= -p "$(cat "$STATE/$1.pid")" 2>/dev/null | grep -qv Z
}
start() {  # start NAME CMD...: in its own session, unless the recorded one still runs
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" >"$LOGS/$name.out" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}
await() {  # await WHAT CHECK: poll CHECK for up to 30 s
  for _ in $(seq 60); do bash -c "$2" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "up.sh: $1 did not come up; see $LOGS" >&2; exit 1
}
install_file() {  # install_file PATH MODE < text: replace PATH if different; 0 if changed
  local tmp; tmp=$(mktemp)
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; return 1; fi
  install -m "$2" "$tmp" "$1"; rm -f "$tmp"
}

[ "$(id -u)" = 0 ] || { echo "up.sh: run as root" >&2; exit 1; }
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
  echo "up.sh: $CONF was not written by this script: not touching a real cluster" >&2
  exit 1
fi

if ! dpkg -s $PKGS >/dev/null 2>&1; then
  # Package scripts must not start system services: we start (and stop) our own.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $PKGS \
    >/dev/null
fi

mkdir -p "$STATE" "$LOGS" /etc/slurm "$LIB"/{ctld,d,gpu} /run/munge /run/mysqld
chown munge:munge /run/munge; chown mysql:mysql /run/mysqld
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --force; chown munge:munge /etc/munge/munge.key
fi
for i in 0 1 2 3 4 5 6 7; do  # fake GPUs: slurmd drops gres without device files
  [ -c "$LIB/gpu/nvidia$i" ] || mknod "$LIB/gpu/nvidia$i" c 195 "$i"
done

changed=0
install_file "$CONF" 644 <<CONF && changed=1
$MARK
ClusterName=cosmopedia
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
MailProg=/bin/true
MpiDefault=none
# no cgroups in containers/VMs: track processes by parent, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu,gres/gpu:h100
# keep sbatch --comment (the plugin's rule_<name>_wildcards_...) in sacct
AccountingStoreFlags=job_comment
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that asks for no memory takes the whole node
DefMemPerCPU=500
# 8 schedulable CPUs on a 2-core machine so several jobs run at once
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=300
StateSaveLocation=$LIB/ctld
SlurmdSpoolDir=$LIB/d
SlurmctldPidFile=$STATE/slurmctld.own.pid
SlurmdPidFile=$STATE/slurmd.own.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
GresTypes=gpu
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=8 RealMemory=16000 Gres=gpu:h100:8 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=60 State=UP
PartitionName=gpu Nodes=$NODE Default=NO MaxTime=60 State=UP
CONF
install_file /etc/slurm/gres.conf 644 <<CONF && changed=1
$MARK
NodeName=$NODE Name=gpu Type=h100 File=$LIB/gpu/nvidia[0-7]
CONF
install_file /etc/slurm/slurmdbd.conf 600 <<CONF || true
$MARK
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=cosmopedia
StorageLoc=slurm_acct_db
LogFile=$LOGS/slurmdbd.log
PidFile=$STATE/slurmdbd.own.pid
CONF

start munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
await munged "munge -n | unmunge"
start mariadbd /usr/sbin/mariadbd --user=mysql --skip-networking
await mariadbd "mariadb-admin ping"
mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'cosmopedia';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
start slurmdbd /usr/sbin/slurmdbd -D
await slurmdbd "sacctmgr -n list cluster"
sacctmgr -n -P list cluster format=cluster | grep -qx cosmopedia ||
  sacctmgr -i add cluster cosmopedia >/dev/null
if alive slurmctld && [ "$changed" = 1 ]; then scontrol reconfigure; fi
start slurmctld /usr/sbin/slurmctld -D -i
await slurmctld "scontrol ping | grep -q UP"
start slurmd /usr/sbin/slurmd -D
await slurmd "sinfo -h -n $NODE -o %T | grep -qvE '[*]|unknown|down'"
# a node drained by an earlier bad config stays drained in the saved state
if sinfo -h -n "$NODE" -o %T | grep -qE 'drain|inval'; then
  scontrol update nodename="$NODE" state=resume
fi
await node "sinfo -h -p gpu -n $NODE -o %T | grep -qE '^(idle|mixed|allocated)$'"
sinfo -N -o '%N %P %c %m %G %T'
