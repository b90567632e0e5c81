#!/bin/sh
# tests/mpi/comm_cuda_hang.sh: the comm watchdog ends a job whose device collective hangs, naming it.
#
# Usage: comm_cuda_hang.sh TEST_COMM_CUDA wait|blocked [MPIRUN ARGS...]. Exits 77 without a GPU.
# Runs `TEST_COMM_CUDA --hang-MODE` on one rank with device collective #7 stalled on the
# communication stream (ADDC_TEST_DEVICE_HANG=7: comm_enable_device takes #1 to #4 on an MPI
# communicator, so #7 is the loop's step 3) and a 2 s timeout.
#   wait: the main thread waits in comm_wait and fires: the watchdog's usual line, about 2 s in.
#   blocked: blocking collectives, then the main thread waits in a copy to the host; the watchdog
#   thread fires 10 s after the timeout with "on the device; ranks not in it: unknown (...)".
# Passes when the job ends by itself (not by `timeout 90`) with a non-zero status, within 60 s,
# with that line on stderr.
set -u
prog=$1
mode=$2
shift 2
"$prog" --probe
rc=$?
if [ "$rc" -eq 77 ]; then echo "comm_cuda_hang: skipped (no CUDA device)"; exit 77; fi
err=$(mktemp /tmp/addc_comm_cuda_hang.XXXXXX)
trap 'rm -f "$err"' EXIT
start=$(date +%s.%N)
ADDC_TEST_DEVICE_HANG=7 ADDC_COMM_TIMEOUT=2 timeout 90 \
    mpirun --oversubscribe --mca btl self,vader -np 1 -x ADDC_TEST_DEVICE_HANG -x ADDC_COMM_TIMEOUT "$@" \
    "$prog" "--hang-$mode" >/dev/null 2>"$err"
rc=$?
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "comm_cuda_hang $mode: mpirun exit status $rc after $elapsed s; stderr:"
sed 's/^/  | /' "$err"
if [ "$mode" = wait ]; then
    want="^addc: rank 0: collective 'device hang step 3' \(allreduce #7\) in phase 'device hang test' timed out after 2 s; ranks not in it: none$"
else
    want="^addc: rank 0: collective 'device hang step 3' \(allreduce #7\) in phase 'device hang test' timed out after 2 s on the device; ranks not in it: unknown"
fi
fail=0
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; fail=1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: the job did not end by itself (timeout 90 killed it)"; fail=1; fi
if ! grep -Eq "$want" "$err"; then echo "FAIL: no watchdog line matching: $want"; fail=1; fi
if ! awk -v e="$elapsed" 'BEGIN { exit !(e < 60) }'; then echo "FAIL: took $elapsed s (want under 60 s)"; fail=1; fi
[ "$fail" -eq 0 ] && echo "comm_cuda_hang $mode: ok"
exit "$fail"
