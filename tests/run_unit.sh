#!/usr/bin/env bash
# Runs every C unit-test binary given, prints one closing line for all.
set -u
pass=0; fail=0; failed=()
for t in "$@"; do
  if out=$("$t" 2>&1); then pass=$((pass+1)); else fail=$((fail+1)); failed+=("$t"); echo "$out" | tail -20; fi
  echo "$out" | tail -1 | sed "s|^|  $(basename "$t"): |"
done
[ ${#failed[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failed[@]}"
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ]
