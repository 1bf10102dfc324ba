#!/usr/bin/env bash
# Stop what tests/slurm/up.sh started, by the PIDs it recorded, newest first.
# Never by name: other Slurm or MariaDB processes on this machine are left alone.
set -uo pipefail
STATE=${COSMOPEDIA_SLURM_STATE:-/run/cosmopedia-slurm}
MARK="# written by cosmopedia tests/slurm/up.sh"
running() { ps -o stat= -p "$1" 2>/dev/null | grep -qv Z; }  # a zombie has stopped
for name in slurmd slurmctld slurmdbd mariadbd munged; do
  f=$STATE/$name.pid
  [ -s "$f" ] || continue
  pid=$(cat "$f")
  if running "$pid"; then
    kill -TERM "$pid"
    for _ in $(seq 80); do running "$pid" || break; sleep 0.25; done
    running "$pid" && kill -KILL "$pid"
  fi
  rm -f "$f"
  echo "stopped $name ($pid)"
done
# Remove the config up.sh wrote: with a slurm.conf but no controller, every Slurm client
# call (and every snakemake start, whose Slurm plugin runs `scontrol show config`) waits
# about 10 s for a timeout; without one they fail at once. up.sh writes it again.
for f in /etc/slurm/slurm.conf /etc/slurm/gres.conf /etc/slurm/slurmdbd.conf; do
  [ -f "$f" ] && grep -qF "$MARK" "$f" && rm -f "$f"
done
exit 0
