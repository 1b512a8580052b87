#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the `slurm` tests and for trying hydra/launcher=slurm locally.
#
#   scripts/slurm_local.sh start    install slurm-wlm + munge with apt when absent (root), write the config,
#                                   start munged, slurmctld and slurmd, wait until sinfo shows the node idle
#   scripts/slurm_local.sh status   each daemon's pid and state, sinfo, and the SLURM_CONF line to export
#   scripts/slurm_local.sh stop     cancel the cluster's jobs, end exactly the daemons `start` started
#                                   (their pid files), wait until they are gone
#
# Everything it writes lives under one folder, $PTSBENCH_SLURM_DIR (default /tmp/ptsbench-slurm): the munge
# key and socket, etc/slurm.conf, state, spool, logs and pid files. Client commands (sinfo, sbatch, the
# launcher) find this cluster through SLURM_CONF=$PTSBENCH_SLURM_DIR/etc/slurm.conf; munge runs on its own
# socket, so a system munged or another Slurm on the machine is left alone. Ports: $PTSBENCH_SLURM_PORT
# (slurmctld, default 6817) and the next one (slurmd).
#
# The node is this machine as `slurmd -C` sees it (its CPUs and memory, no GPUs), in one partition,
# `ptsbench` (MaxTime 6 h). Job accounting is off (no slurmdbd): `sacct` answers "accounting storage is
# disabled", and ptsbench's Slurm launcher reads job states from squeue/scontrol instead (MinJobAge keeps a
# finished job's state in slurmctld for 10 minutes). See docs/cluster.md.
# Exit status: 0 done; 1 failed (the logs' tails are printed); 3 cannot run here (not root / no apt / no Slurm).
set -euo pipefail

DIR="${PTSBENCH_SLURM_DIR:-/tmp/ptsbench-slurm}"
PORT="${PTSBENCH_SLURM_PORT:-6817}"
PARTITION=ptsbench
CONF="$DIR/etc/slurm.conf"
SOCKET="$DIR/munge/munge.socket"
DAEMONS=(slurmd slurmctld munged) # stop order; start is the reverse
export SLURM_CONF="$CONF"

say() { echo "[slurm_local] $*"; }
cannot() {
    say "cannot start a Slurm cluster here: $*" >&2
    exit 3
}

pid_of() { # the pid in the daemon's pid file if that process is alive and is that daemon, else nothing
    local file="$DIR/run/$1.pid" pid
    [[ -s $file ]] || return 0
    pid=$(tr -dc 0-9 <"$file")
    [[ -n $pid && -r /proc/$pid/comm ]] || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] && echo "$pid"
    return 0
}

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null &&
        command -v sinfo >/dev/null && return 0
    [[ $(id -u) -eq 0 ]] || cannot "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || cannot "slurm-wlm and munge are not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q --no-install-recommends slurm-wlm munge >"$DIR/log/apt.log" 2>&1; then
        apt-get update -q >>"$DIR/log/apt.log" 2>&1 || true
        apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$DIR/log/apt.log" 2>&1 ||
            cannot "apt-get install slurm-wlm munge failed (see $DIR/log/apt.log)"
    fi
}

write_config() {
    local node host
    host=$(hostname -s)
    # "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105"
    node=$(slurmd -C | head -n1)
    [[ $node == NodeName=* ]] || {
        say "slurmd -C did not describe this node: $node" >&2
        exit 1
    }
    node="${node/NodeName=* CPUs=/NodeName=$host NodeAddr=127.0.0.1 CPUs=}"
    cat >"$CONF" <<EOF
# written by scripts/slurm_local.sh: a one-node cluster on this machine
ClusterName=ptsbench
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
# scancel sends SIGTERM, which submitit's job wrapper ignores (it reads it as preemption): the job ends at the
# SIGKILL KillWait seconds later
KillWait=5
SchedulerType=sched/backfill
# CPUs and memory are what jobs ask for and are given; a job that asks nothing gets 1 GB per CPU
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
# no slurmdbd: sacct is off, squeue/scontrol tell job states, kept 10 minutes after a job ends
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=$host Default=YES MaxTime=6:00:00 State=UP
EOF
}

start_munge() {
    [[ -n $(pid_of munged) ]] && return 0
    [[ -s $DIR/munge/munge.key ]] || {
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile="$DIR/munge/munge.key" >/dev/null
        else
            dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1 count=1024 status=none
        fi
        chmod 0400 "$DIR/munge/munge.key"
    }
    munged --force --key-file="$DIR/munge/munge.key" --socket="$SOCKET" --pid-file="$DIR/run/munged.pid" \
        --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed"
    for _ in $(seq 50); do
        munge -n --socket="$SOCKET" 2>/dev/null | unmunge --socket="$SOCKET" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    say "munged did not answer on $SOCKET" >&2
    return 1
}

node_state() { sinfo -h -N -p "$PARTITION" -o '%t' 2>/dev/null | head -n1; }

fail_start() {
    say "start failed: $*" >&2
    for f in munged slurmctld slurmd; do
        [[ -s $DIR/log/$f.log ]] && { echo "--- $DIR/log/$f.log" >&2; tail -n 15 "$DIR/log/$f.log" >&2; }
    done
    stop_cluster >&2 || true
    exit 1
}

start_cluster() {
    [[ $(id -u) -eq 0 ]] || cannot "slurmd runs jobs as their user and must run as root (this is uid $(id -u))"
    mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
    chmod 0700 "$DIR/munge"
    install_packages
    if [[ -n $(pid_of slurmctld) && -n $(pid_of slurmd) && -n $(pid_of munged) ]]; then
        say "already running"
        status_cluster
        return 0
    fi
    write_config
    start_munge || fail_start "munged"
    # job ids go on from the saved state, so a sweep folder's .submitit/<job id> of an earlier start is never reused
    [[ -n $(pid_of slurmctld) ]] || slurmctld -f "$CONF" || fail_start "slurmctld"
    [[ -n $(pid_of slurmd) ]] || slurmd -f "$CONF" || fail_start "slurmd"
    local state=""
    for _ in $(seq 240); do # at most 2 minutes
        state=$(node_state)
        case "$state" in
        idle) break ;;
        down* | drain* | fail*) scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    [[ $state == idle ]] || fail_start "the node is '${state:-not listed}' after 2 minutes, not idle"
    say "cluster up: partition $PARTITION, $(sinfo -h -N -o '%N %c CPUs %m MB %G gres')"
    say "export SLURM_CONF=$CONF"
}

stop_cluster() {
    local pids=() pid name
    if [[ -n $(pid_of slurmctld) ]]; then # jobs first: their slurmstepd would outlive slurmd
        scancel --quiet --partition="$PARTITION" 2>/dev/null || true
        for _ in $(seq 60); do
            [[ -z $(squeue -h -o %A 2>/dev/null) ]] && break
            sleep 0.5
        done
    fi
    for name in "${DAEMONS[@]}"; do
        pid=$(pid_of "$name")
        [[ -n $pid ]] || continue
        kill -TERM "$pid" 2>/dev/null || true
        pids+=("$pid:$name")
    done
    for entry in "${pids[@]}"; do
        pid=${entry%%:*}
        name=${entry#*:}
        for _ in $(seq 100); do # 10 s, then SIGKILL
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        if [[ -d /proc/$pid ]]; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        if [[ -d /proc/$pid ]]; then
            say "$name (pid $pid) is still running" >&2
            return 1
        fi
        say "stopped $name (pid $pid)"
    done
    rm -f "$DIR"/run/*.pid
}

status_cluster() {
    local rc=0 pid name
    for name in munged slurmctld slurmd; do
        pid=$(pid_of "$name")
        if [[ -n $pid ]]; then echo "$name: running (pid $pid)"; else
            echo "$name: not running"
            rc=1
        fi
    done
    if [[ $rc -eq 0 ]]; then
        sinfo -N -o '%P %N %t %c %m %G %l' || rc=1
        squeue -h -o '%i %T %r' | head -n 20 || true
    fi
    echo "SLURM_CONF=$CONF"
    return $rc
}

case "${1:-}" in
start) start_cluster ;;
stop) stop_cluster ;;
status) status_cluster ;;
*)
    echo "usage: $0 start|stop|status   (folder: \$PTSBENCH_SLURM_DIR, default /tmp/ptsbench-slurm)" >&2
    exit 2
    ;;
esac
