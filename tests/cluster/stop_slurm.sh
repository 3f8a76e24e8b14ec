#!/usr/bin/env bash
# Stops the daemons that tests/cluster/start_slurm.sh started in STATE_DIR (default /tmp/onebit-slurm): exactly the
# PIDs in STATE_DIR/{slurmd,slurmctld,munged}.pid, and only while each PID is still that program. Idempotent.
set -uo pipefail

STATE=$(realpath -m "${1:-/tmp/onebit-slurm}")
for d in slurmd slurmctld munged; do
    f=$STATE/$d.pid
    [[ -f $f ]] || continue
    pid=$(cat "$f")
    if [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$d" ]]; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$f"
done
exit 0
