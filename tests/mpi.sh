#!/usr/bin/env bash
# The trainer under MPI, on the tiny synthetic IDX data set.
# Usage: mpi.sh CASE TRAIN MPIEXEC
#   same     2 ranks (1 thread each) vs 1 process with 2 threads, same
#            global batch: bit-identical model and optimizer files, and the
#            same test bits/dim; 4 ranks vs 4 threads: the same bits
#   bound    3 ranks vs 1 process with 3 threads: weights within 1e-6 of
#            their scale after 20 steps (see docs/scaling.md)
#   resume   one checkpoint resumed by 2 ranks and by 1 process (2
#            threads): bit-identical results
#   faults   a rank killed mid-run, a rank with a missing data file, a
#            batch that does not split: every run ends, promptly, non-zero,
#            the failing rank named where it can be
set -euo pipefail
case=$1 train=$2 mpiexec=$3
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 "$here/make_idx.py" "$dir"

# Open MPI refuses root without these; 3 ranks on 2 cores need
# --oversubscribe.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mpirun() { timeout 120 "$mpiexec" --oversubscribe -np "$@"; }
common=(--data "$dir" --levels 2 --depth 2 --hidden 16 --warmup 5 --minutes 2)
fail() { echo "mpi $case: $*"; exit 1; }
same_files() { # same_files DIR_A DIR_B: bit-identical model and optimizer
  for f in model.safetensors optimizer.bin; do
    cmp "$1/$f" "$2/$f" || fail "$1/$f and $2/$f differ"
  done
}
test_bpd() { sed -n 's/^test bits\/dim: //p' "$1"; }
# pair N NAME ARGS...: the trainer with ARGS as one process of N threads
# (into $dir/NAME-1) and as N ranks of one thread (into $dir/NAME-N).
pair() {
  local n=$1 name=$2
  shift 2
  "$train" "$@" --threads "$n" --out "$dir/$name-1" >"$dir/$name-1.txt" 2>&1 ||
    { cat "$dir/$name-1.txt"; fail "1 process of $n threads failed"; }
  mpirun "$n" "$train" "$@" --threads 1 --out "$dir/$name-$n" \
    >"$dir/$name-$n.txt" 2>&1 || { cat "$dir/$name-$n.txt"; fail "$n ranks failed"; }
  tail -n 5 "$dir/$name-$n.txt"
  grep -q "over $n ranks" "$dir/$name-$n.txt" || fail "not $n ranks"
}

case $case in
same)
  pair 2 run "${common[@]}" --batch 16 --steps 20
  same_files "$dir/run-1" "$dir/run-2"
  [ "$(test_bpd "$dir/run-1.txt")" = "$(test_bpd "$dir/run-2.txt")" ] ||
    fail "test bits/dim differ"
  for f in samples.png curve.png log.csv; do
    test -s "$dir/run-2/$f" || fail "2 ranks did not write $f"
  done
  # Only rank 0 talks: one banner, one result.
  [ "$(grep -c '^libglow' "$dir/run-2.txt")" = 1 ] || fail "more than one rank printed"
  # 4 ranks add their parts in the order 4 threads add their shards.  Not
  # in sanitizer builds (GLOW_TEST_QUICK): four instrumented processes on
  # two cores take minutes, and the code is the 2-rank case's.
  [ -n "${GLOW_TEST_QUICK:-}" ] && { echo "mpi same: 4 ranks skipped"; exit 0; }
  pair 4 four "${common[@]}" --batch 16 --steps 20
  same_files "$dir/four-1" "$dir/four-4"
  ;;
bound)
  pair 3 run "${common[@]}" --batch 18 --steps 20
  python3 "$here/compare_params.py" "$dir/run-1" "$dir/run-3" 1e-6
  ;;
resume)
  "$train" "${common[@]}" --batch 16 --steps 12 --out "$dir/run" >/dev/null 2>&1
  pair 2 resumed --data "$dir" --resume "$dir/run" --steps 20
  grep -q "resumed Adam state at step 12" "$dir/resumed-2.txt" || fail "did not resume at step 12"
  grep -q "^20 steps" "$dir/resumed-2.txt" || fail "did not reach step 20"
  same_files "$dir/resumed-1" "$dir/resumed-2"
  ;;
faults)
  # Each rank writes its pid, then becomes the trainer; rank 1 may get
  # other arguments ($RANK1_ARGS).
  cat >"$dir/rank.sh" <<'SH'
#!/bin/sh
echo $$ >"$PIDS/$OMPI_COMM_WORLD_RANK"
[ "$OMPI_COMM_WORLD_RANK" = 1 ] && exec "$@" $RANK1_ARGS
exec "$@"
SH
  chmod +x "$dir/rank.sh"
  export PIDS=$dir/pids
  mkdir "$PIDS"
  # 1. Kill rank 1 once training runs; the run must end within 30 s.
  start=$SECONDS
  mpirun 2 "$dir/rank.sh" "$train" "${common[@]}" --batch 16 --steps 100000 \
    --minutes 5 --out "$dir/kill" >"$dir/kill.txt" 2>&1 &
  run=$!
  # Until the first step's row is in the log (the header comes first).
  for _ in $(seq 600); do
    grep -qs '^0' "$dir/kill/log.csv" && [ -s "$PIDS/1" ] && break
    sleep 0.1
  done
  grep -qs '^0' "$dir/kill/log.csv" || { cat "$dir/kill.txt"; fail "training did not start"; }
  sleep 1
  kill -KILL "$(cat "$PIDS/1")"
  rc=0
  wait "$run" || rc=$?
  # mpirun may return while rank 0 is still going down: give it a moment.
  for _ in $(seq 50); do
    kill -0 "$(cat "$PIDS/0")" 2>/dev/null || break
    sleep 0.1
  done
  took=$((SECONDS - start))
  echo "killed rank 1: mpirun ended with status $rc, all ranks after $took s"
  [ "$rc" -ne 0 ] || fail "status 0 after a rank was killed"
  [ "$rc" -ne 124 ] || fail "the run hung after a rank was killed"
  ! kill -0 "$(cat "$PIDS/0")" 2>/dev/null || fail "rank 0 outlived the run"
  [ "$took" -le 30 ] || fail "took $took s to end"
  # 2. Rank 1 cannot read its data: it says so, and every rank ends.
  rc=0
  RANK1_ARGS="--data $dir/missing" mpirun 2 "$dir/rank.sh" "$train" \
    "${common[@]}" --batch 16 --steps 20 --out "$dir/bad" >"$dir/bad.txt" 2>&1 || rc=$?
  echo "rank 1 without data: status $rc"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "status $rc with a missing data file"
  grep -q "train (rank 1 of 2): .*missing" "$dir/bad.txt" ||
    { cat "$dir/bad.txt"; fail "no message from rank 1"; }
  # 3. A batch that does not split over the ranks is an error at start.
  rc=0
  mpirun 2 "$train" "${common[@]}" --batch 15 --steps 20 --out "$dir/odd" \
    >"$dir/odd.txt" 2>&1 || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] || fail "status $rc with --batch 15 on 2 ranks"
  grep -q "does not split over 2 ranks" "$dir/odd.txt" || fail "no message for --batch 15"
  ;;
*)
  fail "unknown case"
  ;;
esac
echo "mpi $case: passed"
