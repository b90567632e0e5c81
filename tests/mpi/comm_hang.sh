#!/bin/sh
# tests/mpi/comm_hang.sh: the comm watchdog ends a job with a hung rank and names it.
#
# Usage: comm_hang.sh TEST_COMM [MPIRUN ARGS...]. Runs `TEST_COMM --hang` on 3 ranks with rank 1
# hanging in its 5th collective (ADDC_TEST_HANG=1:5) and a 2 s timeout. Passes when the job ends
# by itself (not by `timeout 60`) with a non-zero status, well under 60 s, and stderr carries the
# watchdog's line naming rank 1 as the only rank not in the collective.
set -u
prog=$1
shift
err=$(mktemp /tmp/addc_comm_hang.XXXXXX)
trap 'rm -f "$err"' EXIT
start=$(date +%s.%N)
ADDC_TEST_HANG=1:5 ADDC_COMM_TIMEOUT=2 timeout 60 \
    mpirun --oversubscribe --mca btl self,vader -np 3 -x ADDC_TEST_HANG -x ADDC_COMM_TIMEOUT "$@" \
    "$prog" --hang >/dev/null 2>"$err"
rc=$?
end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
echo "comm_hang: mpirun exit status $rc after $elapsed s; stderr:"
sed 's/^/  | /' "$err"
fail=0
if [ "$rc" -eq 0 ]; then echo "FAIL: the job exited 0"; fail=1; fi
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "FAIL: the job did not end by itself (timeout 60 killed it)"; fail=1; fi
if ! grep -Eq "^addc: rank [02]: collective 'hang test step 5' \(allreduce #5\) in phase 'hang test' timed out after 2 s; ranks not in it: 1$" "$err"; then
    echo "FAIL: no watchdog line from rank 0 or 2 naming rank 1 (alone) as not in it"
    fail=1
fi
if ! awk -v e="$elapsed" 'BEGIN { exit !(e < 30) }'; then echo "FAIL: took $elapsed s (want well under 60 s)"; fail=1; fi
[ "$fail" -eq 0 ] && echo "comm_hang: ok"
exit "$fail"
