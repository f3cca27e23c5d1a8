#!/usr/bin/env bash
# A one-node SLURM cluster on localhost for the tests: munged, slurmctld and slurmd from
# Debian's slurm-wlm and munge, with a generated slurm.conf, all state under one folder.
#
#   scripts/slurm-local.sh start DIR   start (or reuse) the cluster; prints SLURM_CONF=DIR/slurm.conf
#   scripts/slurm-local.sh stop DIR    stop the daemons started for DIR and remove DIR
#
# Needs root (slurmd runs jobs as their user) and the Debian packages slurm-wlm, munge.
# Nothing outside DIR is written: the munge key, socket, spool, state and logs live there, the
# daemons listen on free ports, and clients find the cluster through SLURM_CONF. Stopping kills
# only the pids recorded in DIR, so other clusters and daemons on the machine are left alone.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[[ -n "$cmd" && -n "$dir" ]] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
  for name in slurmd slurmctld munged; do
    local pidf="$dir/$name.pid"
    if [[ -f "$pidf" ]]; then
      local pid
      pid=$(cat "$pidf")
      if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
      fi
    fi
  done
}

if [[ "$cmd" == stop ]]; then
  [[ -d "$dir" ]] || exit 0
  stop
  rm -rf "$dir"
  exit 0
fi
[[ "$cmd" == start ]] || { echo "unknown command: $cmd" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "$0: must run as root (slurmd starts jobs as their user)" >&2; exit 1; }
for bin in munged slurmctld slurmd sbatch squeue scancel; do
  command -v "$bin" >/dev/null || { echo "$0: $bin not found: apt-get install -y slurm-wlm munge" >&2; exit 1; }
done

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf="$dir/slurm.conf"
if [[ -f "$conf" ]] && SLURM_CONF="$conf" timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
  echo "SLURM_CONF=$conf"
  exit 0
fi
stop
mkdir -p "$dir/state" "$dir/spool" "$dir/log"
chmod 755 "$dir"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# munge: its own key and socket under DIR (munged insists on private permissions).
if [[ ! -f "$dir/munge.key" ]]; then
  dd if=/dev/urandom of="$dir/munge.key" bs=1 count=1024 status=none
fi
chmod 0400 "$dir/munge.key"
mkdir -p "$dir/munge"
chmod 0700 "$dir/munge"
munged --force --key-file="$dir/munge.key" --socket="$dir/munge/munge.sock" \
  --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed"
chmod 0755 "$dir/munge"

cpus=$(nproc)
mem=$(awk '/MemTotal/ { printf "%d", $2 / 1024 / 2 }' /proc/meminfo)
host=$(hostname -s)
cat > "$conf" <<EOF
ClusterName=membittest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CryptoType=crypto/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=300
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=60 State=UP
EOF

export SLURM_CONF="$conf"
slurmctld -c -f "$conf"
slurmd -f "$conf" -N "$host"
for _ in $(seq 100); do
  if timeout 5 sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|alloc'; then
    echo "SLURM_CONF=$conf"
    exit 0
  fi
  sleep 0.2
done
echo "$0: the cluster did not come up; logs in $dir/log:" >&2
tail -n 20 "$dir"/log/*.log >&2 || true
stop
exit 1
