#!/usr/bin/env bash
# A real single-node SLURM cluster for the tests (tests/cluster/conftest.py starts it): Debian's slurm-wlm and
# munge, a private munged, slurmctld and slurmd, all of their files in one state directory.
#
#   tests/cluster/start_slurm.sh [STATE_DIR]   # default /tmp/onebit-slurm; prints `export SLURM_CONF=...`
#   tests/cluster/stop_slurm.sh [STATE_DIR]    # stops the daemons this script started (their PIDs: STATE_DIR/*.pid)
#
# Idempotent: a second call with the cluster up only prints the line again. Installs the packages with apt-get when
# a program is missing (root). Nothing outside STATE_DIR is touched: its own munge key and socket (the system's
# munged, if any, is left alone), its own ports (ONEBIT_SLURM_PORT, default 16817, and the next one for slurmd).
# Exit status 0 and the export line on stdout when `sinfo` shows the node idle; else non-zero and one line on stderr.
set -euo pipefail

STATE=$(realpath -m "${1:-/tmp/onebit-slurm}")
PORT=${ONEBIT_SLURM_PORT:-16817}
WAIT_S=${ONEBIT_SLURM_WAIT_S:-60}
CONF=$STATE/slurm.conf
MUNGE_SOCKET=$STATE/munge/munge.socket.2

die() { echo "start_slurm.sh: error: $*" >&2; exit 1; }
alive() { [[ -f $1 && $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]; }  # FILE.pid

# (a) the programs
missing() { for p in slurmctld slurmd munged mungekey sbatch sinfo; do command -v "$p" >/dev/null || echo "$p"; done; }
if [[ -n $(missing) ]]; then
    [[ $(id -u) == 0 ]] || die "missing $(missing | xargs) and not root: install Debian's slurm-wlm and munge"
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge; } \
        >"${TMPDIR:-/tmp}/onebit-slurm-apt.log" 2>&1 || true
    [[ -z $(missing) ]] || die "missing $(missing | xargs): apt-get install slurm-wlm munge failed (log: ${TMPDIR:-/tmp}/onebit-slurm-apt.log)"
fi

mkdir -p "$STATE"/{munge,state,spool,log}
chmod 711 "$STATE/munge"  # munged wants the socket's directory searchable by all

# (b) munge: a private key and daemon (--force: munged refuses to run as root without it)
[[ -s $STATE/munge/munge.key ]] || mungekey -c -k "$STATE/munge/munge.key" >/dev/null
chmod 600 "$STATE/munge/munge.key"
if ! alive "$STATE/munged.pid"; then
    munged --force --socket="$MUNGE_SOCKET" --key-file="$STATE/munge/munge.key" --pid-file="$STATE/munged.pid" \
        --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed" \
        || die "munged did not start (log: $STATE/log/munged.log)"
fi

# (c) slurm.conf: this machine's one node, all of its CPUs, a bit less than its memory
HOST=$(hostname -s)
read -r CPUS SOCKETS CORES THREADS MEM < <(slurmd -C | awk 'NR==1 {for (i=1; i<=NF; i++) {split($i, kv, "="); v[kv[1]]=kv[2]}
    print v["CPUs"], v["SocketsPerBoard"], v["CoresPerSocket"], v["ThreadsPerCore"], v["RealMemory"]}')
[[ -n ${MEM:-} ]] || die "slurmd -C did not describe this machine"
cat >"$CONF.new" <<EOF
# written by tests/cluster/start_slurm.sh: a one-node test cluster; every path is under $STATE
ClusterName=onebit-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again only after cred_expire + 1 s (default 120 s); the tests requeue jobs
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
MpiDefault=none
SwitchType=switch/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS Boards=1 SocketsPerBoard=$SOCKETS CoresPerSocket=$CORES ThreadsPerCore=$THREADS RealMemory=$((MEM * 9 / 10)) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$CONF.new" "$CONF"; then
    mv "$CONF.new" "$CONF"
    # a changed conf: daemons this script started before must read it again
    for d in slurmd slurmctld; do
        alive "$STATE/$d.pid" || continue
        kill "$(cat "$STATE/$d.pid")"
        for _ in $(seq 50); do alive "$STATE/$d.pid" || break; sleep 0.1; done
    done
else
    rm -f "$CONF.new"
fi
export SLURM_CONF=$CONF

alive "$STATE/slurmctld.pid" || slurmctld -f "$CONF" || die "slurmctld did not start (log: $STATE/log/slurmctld.log)"
alive "$STATE/slurmd.pid" || slurmd -f "$CONF" || die "slurmd did not start (log: $STATE/log/slurmd.log)"

# the node idle (or already running jobs), within WAIT_S seconds
for ((i = 0; i < WAIT_S * 2; i++)); do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
    case $state in
        idle | mix | alloc) echo "export SLURM_CONF=$CONF"; exit 0 ;;
        down* | drain* | fail*) [[ $i -gt 10 ]] && scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
die "node $HOST not idle after ${WAIT_S}s (sinfo: '${state:-no answer}'; logs: $STATE/log/)"
