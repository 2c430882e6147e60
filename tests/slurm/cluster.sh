#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for the workflow's cluster tests.
#   tests/slurm/cluster.sh start   install (when missing) Debian's slurmctld, slurmd, slurm-client and
#                                  munge, write a config with one fake GPU, start the daemons, wait for the node
#   tests/slurm/cluster.sh stop    stop the daemons
#   tests/slurm/cluster.sh status  sinfo
# No systemd is needed: the daemons are started directly. No accounting daemon runs, so Snakemake's
# SLURM profile must ask squeue for job states (workflow/profiles/slurm sets slurm-status-command).
set -euo pipefail

ETC=/etc/slurm
STATE=/var/spool/slurm
LOGS=/var/log/slurm

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
      && command -v munged >/dev/null; then
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  local node cpus memory
  node=$(hostname -s)
  # The machine's cores, not a thread limit a test run exports (GNU nproc honours OMP_NUM_THREADS: the node
  # would then offer 1 CPU, and a job asking for 2 would wait forever).
  cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
  memory=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  mkdir -p "$ETC" "$STATE/ctld" "$STATE/d" "$LOGS"
  cat > "$ETC/slurm.conf" <<CONF
ClusterName=sonoseg-test
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
SchedulerParameters=defer_batch
MinJobAge=600
NodeName=$node CPUs=$cpus RealMemory=$memory Gres=gpu:1 State=UNKNOWN
PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
  # A fake GPU: the device file is /dev/null, so GPU jobs schedule on a machine without one.
  cat > "$ETC/gres.conf" <<CONF
AutoDetect=off
NodeName=$node Name=gpu File=/dev/null
CONF
}

start_munge() {
  if pgrep -x munged >/dev/null; then return; fi
  mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown -R munge:munge /etc/munge /var/lib/munge /var/log/munge /run/munge 2>/dev/null || true
  chmod 0400 /etc/munge/munge.key
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged
  else
    /usr/sbin/munged --force
  fi
}

start() {
  install_packages
  write_config
  start_munge
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 1 60); do
    if sinfo -h -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
      sinfo
      return 0
    fi
    scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  echo "cluster.sh: the SLURM node did not come up; see $LOGS" >&2
  sinfo >&2 || true
  tail -n 20 "$LOGS/slurmctld.log" "$LOGS/slurmd.log" >&2 || true
  return 1
}

stop() {
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
