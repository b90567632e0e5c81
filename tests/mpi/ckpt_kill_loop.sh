#!/bin/bash
# tests/mpi/ckpt_kill_loop.sh: checkpoints survive SIGKILL at any moment (distributed/checkpoint).
#
# usage: ckpt_kill_loop.sh PROGRAM [MPIRUN...]   (PROGRAM: the test_checkpoint binary)
#
# ITERS times (default 20): start a writer on 2 ranks that resumes after the newest checkpoint
# and saves MB-megabyte checkpoints (values a function of the step) in a loop, keeping 3; once it
# has started, wait a random 0.05-1.5 s (the first time: 0.3 s after the launch) and SIGKILL
# mpirun's process group and the ranks. Then, without mpirun, check that ckpt_open_latest finds the newest committed file (or
# none when nothing was committed yet), that every committed file verifies and holds its step's
# values, that `latest` names a committed file, and that no step the writer reported committed
# was lost. Prints how many kills landed during a save (a .tmp left behind).
set -u
prog=$1
shift
if [ $# -gt 0 ]; then mpirun=("$@"); else mpirun=(mpirun --oversubscribe --mca btl self,vader); fi
iters=${ITERS:-20}
mb=${MB:-4}
export ADDC_THREADS=1
work=$(mktemp -d "${TMPDIR:-/tmp}/addc_ckpt_kill_XXXXXX")
dir=$work/checkpoints
trap 'rm -rf "$work"' EXIT

alive() { [ -d "/proc/$1" ] && grep -q test_checkpoint "/proc/$1/cmdline" 2>/dev/null; }
gone() { [ ! -d "/proc/$1" ] || grep -q "^State:.*Z" "/proc/$1/status" 2>/dev/null; }

fail=0 during=0 before_first=0 committed_max=0 t0=$SECONDS
for i in $(seq 1 "$iters"); do
    log=$work/writer.$i.log
    rm -f "$dir".pid.*
    # Not a process group leader here, so setsid makes mpirun the leader of a new group: $! is it.
    setsid "${mpirun[@]}" -np 2 "$prog" writer "$dir" "$mb" >"$log" 2>&1 &
    leader=$!
    disown "$leader" # no "Killed" notice from the shell
    if [ "$i" -eq 1 ]; then
        sleep 0.3 # the first one dies early, before any commit most times
    else
        for _ in $(seq 1 400); do
            grep -q "started at step" "$log" 2>/dev/null && break
            kill -0 "$leader" 2>/dev/null || break
            sleep 0.05
        done
        if ! grep -q "started at step" "$log"; then
            echo "iteration $i: the writer did not start:"; cat "$log"; fail=$((fail + 1))
        fi
        sleep "$(awk -v r="$RANDOM" 'BEGIN { printf "%.3f", 0.05 + 1.45 * r / 32767 }')"
    fi
    # Open MPI puts each rank in a process group of its own: kill the ranks (by the pids they
    # wrote) and mpirun's group with one signal each, at once.
    pids=()
    for f in "$dir".pid.*; do
        [ -f "$f" ] || continue
        p=$(cat "$f")
        alive "$p" && pids+=("$p")
    done
    kill -9 "${pids[@]}" -- "-$leader" 2>/dev/null
    for p in "${pids[@]}" "$leader"; do
        for _ in $(seq 1 100); do gone "$p" && break; sleep 0.05; done
    done
    problem() { echo "iteration $i: $1"; [ -n "${2:-}" ] && echo "$2"; fail=$((fail + 1)); }
    grep -q "writer:" "$log" && problem "the writer failed:" "$(cat "$log")"
    note=""
    if compgen -G "$dir/step-*.h5.tmp" >/dev/null; then
        during=$((during + 1))
        note=", killed during a save"
    fi
    last=$(grep -o "committed [0-9]*" "$log" | tail -1 | cut -d' ' -f2)
    [ -n "$last" ] && [ "$last" -gt "$committed_max" ] && committed_max=$last
    if ! out=$("$prog" verify "$dir" "$mb" 2>&1); then
        problem "verify failed:" "$out"
    elif echo "$out" | grep -q "no checkpoint"; then
        before_first=$((before_first + 1))
        [ "$committed_max" -gt 0 ] && problem "step $committed_max was reported committed, none found"
    else
        newest=$(echo "$out" | grep -o "newest step [0-9]*" | cut -d' ' -f3)
        if [ -z "$newest" ] || [ "$newest" -lt "$committed_max" ]; then
            problem "newest step '$newest' but step $committed_max was reported committed"
        fi
    fi
    echo "kill $i: $(echo "$out" | grep -E "newest step|no checkpoint")$note"
done
echo "kill loop: $iters kills in $((SECONDS - t0)) s, $during during a save (a .tmp left behind), $before_first before" \
     "the first commit, last step the writers reported committed $committed_max; $fail failures"
[ "$fail" -eq 0 ]
