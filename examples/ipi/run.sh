#!/usr/bin/env bash
# Run one of the i-PI examples with the mdplugin client.
#   ./run.sh nvt          # NVT, one client
#   ./run.sh pimd 2       # path integrals, two clients sharing the beads
# Needs dipole.npz and polarizability.npz in this folder (see README.md).
#
# Environment:
#   ENERGY=tblite|MODEL.npz      energy and forces (default tblite; a relative path is seen from nvt/ or pimd/)
#   OUT=DIR                      write the outputs in DIR/<case>/ instead of this folder's <case>/
#   MDPLUGIN_EXAMPLE_QUICK=1     reduced mode (CI, a first try): 20 NVT / 10 PIMD steps, a socket
#                                name of its own (parallel runs do not collide), and, if dipole.npz or
#                                polarizability.npz is missing here, small RPR models trained on the fly on
#                                40 frames of ../trajectories/dce_train.xyz (OUT/quick-*.npz, kept for the next run)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
case=${1:-nvt}
clients=${2:-1}
[ -f "$here/$case/input.xml" ] || { echo "unknown case '$case' (nvt or pimd)" >&2; exit 2; }
quick=${MDPLUGIN_EXAMPLE_QUICK:-}
[ "$quick" = 0 ] && quick=
out=$(mkdir -p "${OUT:-$here}" && cd "${OUT:-$here}" && pwd)
work="$out/$case"
mkdir -p "$work"
energy=${ENERGY:-tblite}
if [ "$energy" != tblite ]; then
    energy=$(cd "$here/$case" && realpath -m "$energy")
fi
dipole=$here/dipole.npz
polarizability=$here/polarizability.npz
address=mdplugin-$case
input=$here/$case/input.xml

if [ -n "$quick" ]; then
    address=mdplugin-$case-$$-$RANDOM   # unique: several quick runs may share the machine
    steps=$([ "$case" = pimd ] && echo 10 || echo 20)
    data=$here/../trajectories/dce_train.xyz
    for target in dipole polarizability; do
        [ -f "${!target}" ] && continue
        model=$out/quick-$target.npz
        if [ ! -f "$model" ]; then
            if [ ! -f "$work/quick-train.xyz" ]; then  # every 30th frame: 40 frames from all four runs
                lines=$(( $(head -n 1 "$data") + 2 ))   # lines per frame (every frame has 8 atoms)
                awk -v n="$lines" 'int((NR - 1) / n) % 30 == 0' "$data" > "$work/quick-train.xyz"
            fi
            echo "quick mode: training a small $target model -> $model"
            mdplugin train "$work/quick-train.xyz" --target "$target" --model rpr -o "$model"
        fi
        printf -v "$target" '%s' "$model"
    done
fi
for model in "$dipole" "$polarizability"; do
    [ -f "$model" ] || { echo "missing $model: train the models first (README.md, step 1)" >&2; exit 1; }
done

# The input i-PI reads: input.xml itself for the documented run; otherwise a copy in the output
# folder with the structure's absolute path, the socket name and (quick mode) the number of steps.
if [ -n "$quick" ] || [ "$work" != "$here/$case" ]; then
    run_input=$work/$case-run.xml
    edits=(-e "s#<address>[^<]*</address>#<address> $address </address>#" -e "s#\.\./dce\.xyz#$here/dce.xyz#")
    [ -n "$quick" ] && edits+=(-e "s#<total_steps>[^<]*</total_steps>#<total_steps> $steps </total_steps>#")
    sed "${edits[@]}" "$input" > "$run_input"
    input=$run_input
fi

cd "$work"
export OMP_NUM_THREADS=1              # one thread per client; run several clients instead
socket=/tmp/ipi_$address
rm -f "$socket"                       # a socket file left by a killed run would block i-PI
i-pi "$input" > ipi.log 2>&1 &
server=$!
pids=()
cleanup() {
    kill "$server" "${pids[@]}" 2>/dev/null || true
    rm -f "$socket"
}
trap cleanup EXIT
for _ in $(seq "$clients"); do
    mdplugin ipi --template "$here/dce.xyz" --energy "$energy" --dipole "$dipole" \
        --polarizability "$polarizability" --unix --address "$address" &
    pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid"; done
wait "$server" || { echo "i-PI failed; the end of $work/ipi.log:" >&2; tail -n 20 ipi.log >&2; exit 1; }
trap - EXIT
rm -f "$socket"
echo "done: outputs in $work (i-PI log: ipi.log)"
