#!/usr/bin/env bash
# A real one-node Slurm cluster for the project's tests and for trying `reincarnate slurm` on one
# machine: Debian's slurm-wlm and munge, configured under .slurm/ (no cgroups, no accounting,
# no system files touched; the daemons run as the invoking user, with their own munge key and
# socket).
#
#   scripts/slurm-local.sh start     # installs the packages if missing (apt-get), starts munged,
#                                    # slurmctld and slurmd, waits until the node is idle
#   eval "$(scripts/slurm-local.sh env)"   # SLURM_CONF for sbatch/squeue/scancel in this shell
#   scripts/slurm-local.sh stop
#
# Ports 16817/16818 on 127.0.0.1 (override with SLURM_LOCAL_PORT_BASE).
set -euo pipefail
cd "$(dirname "$0")/.."
DIR="$PWD/.slurm"
BASE="${SLURM_LOCAL_PORT_BASE:-16817}"

need_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
        && command -v sbatch >/dev/null
}

install_packages() {
    need_packages && return 0
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "slurm-local: installing Debian's slurm-wlm and munge" >&2
    $sudo apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        slurm-wlm munge >/dev/null
}

write_config() {
    local host cpus mem
    host="$(hostname -s)"
    cpus="$(nproc)"
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat >"$DIR/slurm.conf" <<CONF
# Written by scripts/slurm-local.sh: a one-node cluster on 127.0.0.1.
ClusterName=reincarnate-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=$(id -un)
SlurmdUser=$(id -un)
SlurmctldPort=$BASE
SlurmdPort=$((BASE + 1))
AuthType=auth/munge
AuthInfo=socket=$DIR/munge.sock
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
InactiveLimit=0
KillWait=5
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
    install_packages
    stop_daemons quiet
    write_config
    if [ ! -f "$DIR/munge.key" ]; then
        head -c 1024 /dev/urandom >"$DIR/munge.key"
        chmod 400 "$DIR/munge.key"
    fi
    chmod 700 "$DIR"
    munged --force --key-file="$DIR/munge.key" --socket="$DIR/munge.sock" \
        --pid-file="$DIR/munged.pid" --log-file="$DIR/log/munged.log" \
        --seed-file="$DIR/munged.seed"
    export SLURM_CONF="$DIR/slurm.conf"
    slurmctld -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF"
    for _ in $(seq 1 60); do
        if sinfo -h -o '%t' 2>/dev/null | grep -q '^idle'; then
            echo "slurm-local: one node idle ($(nproc) CPUs); SLURM_CONF=$SLURM_CONF" >&2
            return 0
        fi
        sleep 1
    done
    echo "slurm-local: the node did not become idle in 60 s; logs in $DIR/log/" >&2
    sinfo >&2 || true
    tail -n 20 "$DIR"/log/*.log >&2 || true
    return 1
}

stop_daemons() {
    local f pid
    for f in slurmd slurmctld munged; do
        if [ -f "$DIR/$f.pid" ]; then
            pid="$(cat "$DIR/$f.pid")"
            kill "$pid" 2>/dev/null || true
            # Wait for it to exit (it writes its state as it goes) before clearing its folders.
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            rm -f "$DIR/$f.pid"
        fi
    done
    # slurmctld keeps jobs across restarts in its state folder: a fresh start forgets them.
    rm -rf "$DIR/state" "$DIR/spool"
    [ "${1:-}" = quiet ] || echo "slurm-local: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop_daemons ;;
    env) echo "export SLURM_CONF=$DIR/slurm.conf" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
