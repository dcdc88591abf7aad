#!/usr/bin/env bash
# make run: every built daemon on localhost on its embedded defaults, in a
# scratch run directory; prints each address, console and metrics URL.
#
# One Ctrl-C stops everything gracefully: the daemons run in sessions of
# their own, so the terminal's SIGINT reaches only this script, which sends
# each daemon one SIGTERM (a second signal would mean "stop now") and waits.
# A daemon that dies meanwhile is reported with the end of its log. The run
# directory is removed at the end unless RUN_DIR named it or KEEP_RUN=1.
#
# Each component adds itself with a snippet in deploy/run.d/ (RUN_D to use
# another folder): start NAME ADDRESS CONSOLE ARGS... starts a daemon built
# on the core with metrics on the next free port from 9150; spawn NAME
# CMD... starts any other helper process the same way.
set -u
cd "$(dirname "$0")/.."
BIN=${BUILD:-build}/bin
RUN_D=${RUN_D:-deploy/run.d}
own_run=0
if [ -z "${RUN_DIR:-}" ]; then
  RUN=$(mktemp -d -t stack-run.XXXXXX); own_run=1
else
  RUN=$RUN_DIR; mkdir -p "$RUN"
fi
METRICS_BASE=${METRICS_BASE:-9150}
pids=()
names=()
metrics_next=$METRICS_BASE

# A port nobody listens on, from $1 up.
free_port_from() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

# spawn NAME CMD...: a helper in a session of its own (no terminal signals).
spawn() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$RUN/$name.log" 2>&1 &
  pids+=($!); names+=("$name")
}

start() { # name "address" "console" args...
  local name=$1 addr=$2 console=$3; shift 3
  [ -x "$BIN/$name" ] || return 0
  local mport
  mport=$(free_port_from "$metrics_next"); metrics_next=$((mport + 1))
  spawn "$name" "$BIN/$name" "$@" --metrics "127.0.0.1:$mport"
  printf '  %-10s %-32s console %-18s metrics http://127.0.0.1:%s/metrics\n' "$name" "$addr" "$console" "$mport"
}

echo "Starting the stack (run directory $RUN):"
for f in "$RUN_D"/*.sh; do [ -e "$f" ] && . "$f"; done
[ ${#pids[@]} -gt 0 ] || { echo "nothing is built: run make first"; exit 1; }

# Running (a zombie still answers kill -0: look at its state).
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ]
}

declare -A gone=()
report_exit() { # index status
  local i=$1 rc=$2
  gone[$i]=1
  echo "  ${names[$i]} exited with $rc"
  [ "$rc" = 0 ] || tail -5 "$RUN/${names[$i]}.log" 2>/dev/null | sed 's/^/    /'
}

stopping=0
stop() {
  [ $stopping = 1 ] && return
  stopping=1
  echo; echo "Stopping (one SIGTERM each; they finish what is in flight)..."
  for i in "${!pids[@]}"; do [ -n "${gone[$i]:-}" ] || kill -TERM "${pids[$i]}" 2>/dev/null; done
  for i in "${!pids[@]}"; do
    [ -n "${gone[$i]:-}" ] && continue
    wait "${pids[$i]}"
    report_exit "$i" $?
  done
  if [ $own_run = 1 ] && [ "${KEEP_RUN:-0}" != 1 ]; then
    rm -rf "$RUN"
    echo "Removed $RUN (KEEP_RUN=1 keeps it)."
  else
    echo "Logs are in $RUN."
  fi
  exit 0
}
trap stop INT TERM
echo "Running. Ctrl-C stops everything; logs in $RUN."
while :; do
  for i in "${!pids[@]}"; do
    [ -n "${gone[$i]:-}" ] && continue
    if ! alive "${pids[$i]}"; then
      wait "${pids[$i]}"; rc=$?
      echo "${names[$i]} died:"
      report_exit "$i" "$rc"
    fi
  done
  sleep 1 & wait $!   # a trap runs at once, not after the sleep
done
