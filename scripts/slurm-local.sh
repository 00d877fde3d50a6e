#!/usr/bin/env bash
# A real single-node SLURM on this machine, for testing `snakemake --profile profiles/slurm`.
#
#   sudo scripts/slurm-local.sh start    install (Debian packages) if missing, configure, start
#                                        munged + slurmctld + slurmd, wait until the node is idle
#   sudo scripts/slurm-local.sh status   show daemons, node and queue
#   sudo scripts/slurm-local.sh stop     cancel this cluster's jobs, stop the daemons it started
#   scripts/slurm-local.sh env           print `export SLURM_CONF=...` for client commands
#
# Everything lives under one state dir (MFPIPE_SLURM_STATE, default /var/lib/mfpipe-slurm-local):
# slurm.conf, gres.conf, a private munge key and socket, spool, logs, pid files. Nothing under
# /etc is overwritten: if /etc/slurm/slurm.conf does not exist, it becomes a symlink to ours
# (so plain `sinfo`/`sbatch` work) and `stop` removes that symlink again; otherwise clients need
# SLURM_CONF (see `env`). The node gets the host's short name and the CPUs/memory `slurmd -C`
# reports, plus NGPUS fake GPUs (placeholder files listed in gres.conf) so `--gpus` jobs schedule.
# There is no accounting database: `sacct` does not work, so status queries use `squeue` and
# MinJobAge keeps finished jobs visible to squeue for MFPIPE_SLURM_MIN_JOB_AGE seconds.
#
# Settings (environment): MFPIPE_SLURM_STATE, MFPIPE_SLURM_PARTITION (default gpu),
# MFPIPE_SLURM_NGPUS (default 4), MFPIPE_SLURM_GPU_TYPE (gres type of the fake GPUs, default
# fake: --gpus=1 and --gpus=fake:1 both schedule), MFPIPE_SLURM_CTLD_PORT / MFPIPE_SLURM_SLURMD_PORT
# (default 6817 / 6818), MFPIPE_SLURM_MIN_JOB_AGE (default 600), MFPIPE_SLURM_START_TIMEOUT
# (seconds to wait for an idle node, default 90).
set -euo pipefail

STATE=${MFPIPE_SLURM_STATE:-/var/lib/mfpipe-slurm-local}
PARTITION=${MFPIPE_SLURM_PARTITION:-gpu}
NGPUS=${MFPIPE_SLURM_NGPUS:-4}
GPU_TYPE=${MFPIPE_SLURM_GPU_TYPE:-fake}
CTLD_PORT=${MFPIPE_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${MFPIPE_SLURM_SLURMD_PORT:-6818}
MIN_JOB_AGE=${MFPIPE_SLURM_MIN_JOB_AGE:-600}
START_TIMEOUT=${MFPIPE_SLURM_START_TIMEOUT:-90}
PACKAGES=(slurmctld slurmd slurm-client munge)

CONF=$STATE/etc/slurm.conf
MUNGE_DIR=$STATE/munge
MUNGE_SOCKET=$MUNGE_DIR/munge.socket.2
SYSTEM_CONF=/etc/slurm/slurm.conf

log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (it installs packages and starts daemons)"
}

validate_settings() {
    [[ $NGPUS =~ ^[1-9][0-9]*$ ]] || die "MFPIPE_SLURM_NGPUS must be a positive integer, got '$NGPUS'"
    [[ $MIN_JOB_AGE =~ ^[0-9]+$ ]] && [ "$MIN_JOB_AGE" -ge 300 ] \
        || die "MFPIPE_SLURM_MIN_JOB_AGE must be an integer >= 300, got '$MIN_JOB_AGE'"
    [[ $GPU_TYPE =~ ^[A-Za-z0-9_]+$ ]] || die "MFPIPE_SLURM_GPU_TYPE must be letters, digits or '_', got '$GPU_TYPE'"
    [[ $PARTITION =~ ^[A-Za-z0-9_-]+$ ]] \
        || die "MFPIPE_SLURM_PARTITION must be letters, digits, '_' or '-', got '$PARTITION'"
    [[ $CTLD_PORT =~ ^[0-9]+$ && $SLURMD_PORT =~ ^[0-9]+$ ]] \
        || die "MFPIPE_SLURM_CTLD_PORT / MFPIPE_SLURM_SLURMD_PORT must be port numbers"
    [[ $STATE == /* ]] || die "MFPIPE_SLURM_STATE must be an absolute path, got '$STATE'"
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install ${missing[*]} yourself"
    log "installing ${missing[*]} (apt-get update first)"
    apt-get update -qq
    # The packages' postinst scripts try to start services; there is no init system in
    # containers and we start our own daemons, so tell invoke-rc.d not to.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e $policy ]; then
        printf '#!/bin/sh\nexit 101\n' >$policy && chmod +x $policy && created_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        >"$STATE/apt-install.log" 2>&1 || { cat "$STATE/apt-install.log" >&2; [ $created_policy -eq 1 ] && rm -f $policy; die "apt-get install failed"; }
    [ $created_policy -eq 1 ] && rm -f $policy
    return 0
}

pid_alive() {  # pid_alive NAME: the daemon NAME we started is running
    local pidfile=$STATE/run/$1.pid pid
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile")
    [ -d "/proc/$pid" ] || return 1
    # only count it if it is ours: its command line mentions our state dir
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$STATE"
}

node_name() { hostname -s; }

write_config() {
    local node hw
    node=$(node_name)
    # e.g. "NodeName=vm CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1
    # RealMemory=24105": use what the hardware reports so the node is never marked invalid.
    hw=$(slurmd -C | head -1 | tr ' ' '\n' \
        | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
        | tr '\n' ' ')
    [ -n "$hw" ] || die "slurmd -C reported no hardware"
    mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,fakegpu} "$MUNGE_DIR"
    chmod 700 "$MUNGE_DIR"
    local files="" i
    for ((i = 0; i < NGPUS; i++)); do
        : >"$STATE/fakegpu/gpu$i"
    done
    files="$STATE/fakegpu/gpu[0-$((NGPUS - 1))]"
    cat >"$STATE/etc/gres.conf" <<EOF
# Written by scripts/slurm-local.sh. Fake GPUs: placeholder files, so --gpus requests schedule.
AutoDetect=off
NodeName=$node Name=gpu Type=$GPU_TYPE File=$files
EOF
    cat >"$CONF" <<EOF
# Written by scripts/slurm-local.sh: a single-node test cluster (state in $STATE).
ClusterName=mfpipe-local
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$STATE/etc/plugstack.conf
ProctrackType=proctrack/pgid
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No accounting database: finished jobs stay visible to squeue this long (seconds).
MinJobAge=$MIN_JOB_AGE
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
NodeName=$node NodeAddr=127.0.0.1 ${hw}Gres=gpu:$GPU_TYPE:$NGPUS State=UNKNOWN
PartitionName=$PARTITION Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
    : >"$STATE/etc/plugstack.conf"
}

write_munge_key() {
    local key=$MUNGE_DIR/munge.key
    if [ ! -s "$key" ]; then
        dd if=/dev/urandom of="$key" bs=1 count=1024 status=none
    fi
    chmod 400 "$key"
}

link_system_conf() {
    if [ -L $SYSTEM_CONF ] && [ "$(readlink $SYSTEM_CONF)" = "$CONF" ]; then return 0; fi
    if [ -e $SYSTEM_CONF ] || [ -L $SYSTEM_CONF ]; then
        log "$SYSTEM_CONF exists and is not ours; client commands need: export SLURM_CONF=$CONF"
        return 0
    fi
    mkdir -p /etc/slurm
    ln -s "$CONF" $SYSTEM_CONF
    : >"$STATE/run/linked-system-conf"
}

start_munge() {
    pid_alive munged && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force \
        --key-file="$MUNGE_DIR/munge.key" \
        --socket="$MUNGE_SOCKET" \
        --pid-file="$STATE/run/munged.pid" \
        --log-file="$STATE/log/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" \
        || die "munged failed to start; see $STATE/log/munged.log"
    local i
    for ((i = 0; i < 50; i++)); do
        [ -S "$MUNGE_SOCKET" ] && return 0
        sleep 0.1
    done
    die "munged socket $MUNGE_SOCKET did not appear; see $STATE/log/munged.log"
}

start_slurm_daemons() {
    export SLURM_CONF=$CONF
    if ! pid_alive slurmctld; then
        # -i: ignore unreadable state left by a killed earlier run
        slurmctld -i -f "$CONF" || die "slurmctld failed; see $STATE/log/slurmctld.log"
    fi
    if ! pid_alive slurmd; then
        slurmd -f "$CONF" || die "slurmd failed; see $STATE/log/slurmd.log"
    fi
}

node_state() {
    SLURM_CONF=$CONF sinfo -h -n "$(node_name)" -o '%T' 2>/dev/null | head -1 || true
}

wait_until_idle() {
    local deadline=$((SECONDS + START_TIMEOUT)) state=""
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            down* | drain* | fail*)
                # e.g. left down by an earlier unclean stop: bring it back
                SLURM_CONF=$CONF scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    log "node not idle after ${START_TIMEOUT}s (state: '${state:-unknown}')"
    tail -n 20 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2 || true
    return 1
}

cmd_start() {
    require_root
    validate_settings
    mkdir -p "$STATE"
    install_packages
    if ! pid_alive slurmctld && ! pid_alive slurmd; then
        write_config  # only rewritten when nothing of ours is running
    fi
    write_munge_key
    link_system_conf
    start_munge
    start_slurm_daemons
    wait_until_idle || die "SLURM did not come up"
    log "running: node $(node_name) $(node_state), partition $PARTITION, $NGPUS fake GPUs, conf $CONF"
}

stop_daemon() {  # stop_daemon NAME
    local pidfile=$STATE/run/$1.pid pid i
    if pid_alive "$1"; then
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [ -d "/proc/$pid" ] || break
            sleep 0.1
        done
        [ -d "/proc/$pid" ] && kill -9 "$pid" 2>/dev/null || true
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$pidfile"
}

cmd_stop() {
    require_root
    if pid_alive slurmctld; then
        # cancel whatever still runs on this test cluster, so no job outlives it
        SLURM_CONF=$CONF scancel --full --quiet --user=root >/dev/null 2>&1 || true
        local i
        for ((i = 0; i < 30; i++)); do
            [ -z "$(SLURM_CONF=$CONF squeue -h -t running,completing,pending 2>/dev/null)" ] && break
            sleep 0.5
        done
    fi
    stop_daemon slurmd
    stop_daemon slurmctld
    stop_daemon munged
    if [ -e "$STATE/run/linked-system-conf" ]; then
        if [ -L $SYSTEM_CONF ] && [ "$(readlink $SYSTEM_CONF)" = "$CONF" ]; then
            rm -f $SYSTEM_CONF
        fi
        rm -f "$STATE/run/linked-system-conf"
    fi
}

cmd_status() {
    local name rc=0
    for name in munged slurmctld slurmd; do
        if pid_alive $name; then
            echo "$name: running (pid $(cat "$STATE/run/$name.pid"))"
        else
            echo "$name: stopped"
            rc=3
        fi
    done
    echo "conf: $CONF"
    if [ $rc -eq 0 ]; then
        SLURM_CONF=$CONF sinfo -N -o '%N %P %T %c %m %G' || rc=3
        SLURM_CONF=$CONF squeue -o '%i %j %T %M %b' || rc=3
    fi
    return $rc
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) usage ;;
esac
