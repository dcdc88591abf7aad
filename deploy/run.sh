#!/usr/bin/env bash
# make run: every built daemon on localhost on its embedded defaults, in a
# scratch run directory; prints each address and console; Ctrl-C stops all.
set -u
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
RUN=${RUN_DIR:-$(mktemp -d -t stack-run.XXXXXX)}
mkdir -p "$RUN"
pids=()
names=()

start() { # name "address" "console" args...
  local name=$1 addr=$2 console=$3; shift 3
  [ -x "$BIN/$name" ] || return 0
  "$BIN/$name" "$@" >"$RUN/$name.log" 2>&1 &
  pids+=($!); names+=("$name")
  printf '  %-10s %-32s console %-18s log %s\n' "$name" "$addr" "$console" "$RUN/$name.log"
}

echo "Starting the stack (run directory $RUN):"
# each component adds itself with a snippet in deploy/run.d/
for f in deploy/run.d/*.sh; do . "$f"; done
[ ${#pids[@]} -gt 0 ] || { echo "nothing is built: run make first"; exit 1; }

stop() {
  echo; echo "Stopping..."
  for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null; done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}"; echo "  ${names[$i]} exited with $?"
  done
  exit 0
}
trap stop INT TERM
sleep 1
for i in "${!pids[@]}"; do
  kill -0 "${pids[$i]}" 2>/dev/null || { echo "${names[$i]} failed to start:"; tail -5 "$RUN/${names[$i]}.log"; }
done
echo "Running. Ctrl-C stops everything."
while :; do sleep 1; done
