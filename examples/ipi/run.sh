#!/usr/bin/env bash
# Run one of the i-PI examples with the mdplugin client.
#   ./run.sh nvt          # NVT, one client
#   ./run.sh pimd 2       # path integrals, two clients sharing the beads
# Needs dipole.npz and polarizability.npz in this folder (see README.md).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case=${1:-nvt}
clients=${2:-1}
energy=${ENERGY:-tblite}
cd "$here/$case"
for model in ../dipole.npz ../polarizability.npz; do
    [ -f "$model" ] || { echo "missing $here/${model#../}: train the models first (README.md, step 1)" >&2; exit 1; }
done
export OMP_NUM_THREADS=1              # one thread per client; run several clients instead
rm -f "/tmp/ipi_mdplugin-$case"       # a socket file left by a killed run would block i-PI
i-pi input.xml > ipi.log 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT
pids=()
for _ in $(seq "$clients"); do
    mdplugin ipi --template ../dce.xyz --energy "$energy" --dipole ../dipole.npz \
        --polarizability ../polarizability.npz --unix --address "mdplugin-$case" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
wait "$server"
trap - EXIT
echo "done: outputs in $here/$case (i-PI log: ipi.log)"
