#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine (Debian 12, root, no systemd), for the cluster tests.
#
#   .ci/slurm-setup.sh            install the Debian packages (if missing) and write the config
#   .ci/slurm-setup.sh start      ... then start munged, slurmctld and slurmd; wait until the node is idle
#   .ci/slurm-setup.sh stop       cancel every job, stop the daemons this script started (by PID file)
#   .ci/slurm-setup.sh status     exit 0 when the controller answers and the node is up
#
# Idempotent: a second `start` returns at once when the cluster is up. It refuses to overwrite an
# /etc/slurm/slurm.conf it did not write (SLURM_LOCAL_FORCE=1 to override). Facts behind each line:
# ../shared/notes/slurm-local.md (packages, the /run/munge fix, -N localhost, cred_expire, scheduler knobs).
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by lens .ci/slurm-setup.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
LOG_DIR=/var/log/slurm

log() { printf 'slurm-setup: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it installs packages and starts the SLURM daemons)."

install_packages() {
    local missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    command -v apt-get >/dev/null || die "apt-get not found: this script needs Debian/Ubuntu packages ${PACKAGES[*]}."
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Without Recommends: 8 packages, 12.7 MiB (with them: 42 packages).
    apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
}

write_config() {
    if [[ -e $CONF ]] && ! grep -qF "$MARK" "$CONF" && [[ ${SLURM_LOCAL_FORCE:-0} != 1 ]]; then
        die "$CONF exists and was not written by this script; refusing to overwrite it (SLURM_LOCAL_FORCE=1 to do so)."
    fi
    mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
    # The node line from slurmd -C (sockets/cores/threads as the node reports them), 90 % of its memory.
    local node cpus mem
    node=$(slurmd -C | head -n1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$node")
    mem=$((mem * 9 / 10))
    local topo
    topo=$(grep -o 'Boards=[0-9]* SocketsPerBoard=[0-9]* CoresPerSocket=[0-9]* ThreadsPerCore=[0-9]*' <<<"$node" || true)
    # proctrack/cgroup matches real clusters' signal semantics and leaves no orphans; it needs the
    # cgroup-v1 freezer. Without it, fall back to proctrack/linuxproc (no cgroup.conf).
    local proctrack task
    if [[ -d /sys/fs/cgroup/freezer && -d /sys/fs/cgroup/memory ]]; then
        proctrack=proctrack/cgroup
        task=task/cgroup,task/affinity
        cat >"$CONF_DIR/cgroup.conf.tmp" <<EOF
$MARK
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=yes
ConstrainRAMSpace=yes
EOF
        mv "$CONF_DIR/cgroup.conf.tmp" "$CONF_DIR/cgroup.conf"
    else
        proctrack=proctrack/linuxproc
        task=task/none
        rm -f "$CONF_DIR/cgroup.conf"
    fi
    cat >"$CONF.tmp" <<EOF
$MARK
ClusterName=localcluster
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
# requeued jobs may start again after ~11 s instead of 120 s
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
MailProg=/bin/true
MpiDefault=none
ProctrackType=$proctrack
TaskPlugin=$task
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$((mem / cpus))
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus $topo RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    if [[ -e $CONF ]] && cmp -s "$CONF" "$CONF.tmp"; then
        rm -f "$CONF.tmp"
    else
        mv "$CONF.tmp" "$CONF"
    fi
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

cluster_up() { scontrol ping 2>/dev/null | grep -q "is UP" && sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; }

start() {
    if cluster_up; then
        return 0
    fi
    install -d -o munge -g munge -m 0755 /run/munge   # missing without systemd
    if ! pid_alive /run/munge/munged.pid; then
        runuser -u munge -- /usr/sbin/munged
    fi
    munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)."
    pid_alive /run/slurmctld.pid || slurmctld
    pid_alive /run/slurmd.pid || slurmd -N localhost
    local i
    for i in $(seq 1 150); do
        if cluster_up; then
            return 0
        fi
        # a node left DOWN by an earlier unclean stop comes back with this
        if ((i % 10 == 0)); then
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.2
    done
    sinfo >&2 || true
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    die "the node did not become idle within 30 s."
}

stop_pid() {
    local pidfile=$1 i
    pid_alive "$pidfile" || return 0
    local pid
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
}

stop() {
    if scontrol ping >/dev/null 2>&1; then
        scancel --full --quiet --user=root 2>/dev/null || true
        # slurmstepd processes outlive slurmd: let the cancellations finish first
        local i
        for i in $(seq 1 60); do
            [[ -z $(squeue -h -o %i 2>/dev/null) ]] && break
            sleep 0.25
        done
    fi
    stop_pid /run/slurmd.pid
    stop_pid /run/slurmctld.pid
    stop_pid /run/munge/munged.pid
}

case "${1:-install}" in
    install) install_packages; write_config ;;
    start) install_packages; write_config; start ;;
    stop) stop ;;
    status) cluster_up ;;
    *) die "usage: $0 [install|start|stop|status]" ;;
esac
