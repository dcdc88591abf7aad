#!/usr/bin/env bash
# run.sh SECONDS FUZZER... : runs each libFuzzer target for SECONDS on a scratch
# copy of its seed corpus (tests/fuzz/corpus/NAME), never writing to the tree.
set -u
secs=$1; shift
pass=0; fail=0
for f in "$@"; do
  name=$(basename "$f")
  work=$(mktemp -d)
  [ -d "tests/fuzz/corpus/$name" ] && cp -r "tests/fuzz/corpus/$name/." "$work/"
  if "$f" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=0 \
        -artifact_prefix="$work/" "$work" </dev/null >"$work.log" 2>&1; then
    pass=$((pass+1)); echo "  fuzz $name: ok"
    grep -E '^#[0-9]+.*DONE' "$work.log" | tail -1 | sed 's/^/    /'
  else
    fail=$((fail+1)); echo "  fuzz $name: CRASH"; tail -40 "$work.log"
    keep=${BUILD:-build}/fuzz-artifacts/$name; mkdir -p "$keep"
    cp "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$keep"/ 2>/dev/null
    echo "  reproducer(s) kept in $keep"
  fi
  rm -rf "$work" "$work.log"
done
echo "fuzz: $pass passed, $fail failed"
[ $fail -eq 0 ]
