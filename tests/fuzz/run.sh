#!/usr/bin/env bash
# run.sh SECONDS FUZZER... : runs each libFuzzer target for SECONDS on a scratch
# copy of its seed corpus (tests/fuzz/corpus/NAME), never writing to the tree.
# FUZZ_JOBS targets run at once (default 1); each one's report is printed
# whole when it ends. A crash keeps its reproducers in $BUILD/fuzz-artifacts/.
set -u
secs=$1; shift
jobs=${FUZZ_JOBS:-1}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT

run_one() { # FUZZER: prints its report, leaves ok/crash in $results/NAME
  local f=$1 name work
  name=$(basename "$f")
  work=$(mktemp -d)
  [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/"
  if "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
        -artifact_prefix="$work/" "$work" </dev/null >"$work.log" 2>&1; then
    { echo "  fuzz $name: ok"; grep -E '^#[0-9]+.*DONE' "$work.log" | tail -1 | sed 's/^/    /'; } >"$results/$name.out"
    echo ok >"$results/$name"
  else
    local keep=${BUILD:-build}/fuzz-artifacts/$name
    mkdir -p "$keep"
    cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$keep"/ 2>/dev/null
    { echo "  fuzz $name: CRASH"; tail -40 "$work.log"; echo "  reproducer(s) kept in $keep"; } >"$results/$name.out"
    echo crash >"$results/$name"
  fi
  cat "$results/$name.out"
  rm -rf "$work" "$work.log"
}
export -f run_one
export secs results

printf '%s\n' "$@" | xargs -r -P "$jobs" -I{} bash -c 'run_one "$1"' _ {}

pass=$(grep -lx ok "$results"/* 2>/dev/null | wc -l)
fail=$(grep -lx crash "$results"/* 2>/dev/null | wc -l)
missing=$(( $# - pass - fail ))
[ $missing -eq 0 ] || { echo "fuzz: $missing target(s) did not report"; fail=$((fail + missing)); }
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
