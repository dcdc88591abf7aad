# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory.
# MogileFS: one storage node (two devices), a tracker on SQLite with domain
# "files" and class "pair" ready, and perlbal on :8090 serving /<key> from
# mogstored through an X-REPROXY-URL application.
if [ -x "$BIN/mogilefsd" ] && [ -x "$BIN/mogstored" ]; then
  mkdir -p "$RUN/mogdata/dev1" "$RUN/mogdata/dev2"
  start mogstored "127.0.0.1:7500 (+ side channel :7501)" "127.0.0.1:7502" \
    --httplisten=127.0.0.1:7500 --mgmtlisten=127.0.0.1:7501 --docroot="$RUN/mogdata" --admin=127.0.0.1:7502
  start mogilefsd "127.0.0.1:7001" "127.0.0.1:7002" \
    --db_dsn="DBI:SQLite:dbname=$RUN/mogilefs.sqlite" --listen=127.0.0.1:7001 --admin=127.0.0.1:7002
  (
    for _ in $(seq 50); do "$BIN/mogile" --trackers=127.0.0.1:7001 ping >/dev/null 2>&1 && break; sleep 0.1; done
    m() { "$BIN/mogile" --trackers=127.0.0.1:7001 "$@" >>"$RUN/mogile-setup.log" 2>&1; }
    m host add store1 --ip=127.0.0.1 --port=7500 --status=alive
    m device add store1 1
    m device add store1 2
    m domain add files
    m class add files pair --mindevcount=2
  ) &
  if [ -x "$BIN/perlbal" ]; then
    /usr/bin/python3 deploy/mogilefs/reproxy_app.py --listen=127.0.0.1:9001 --trackers=127.0.0.1:7001 \
      --domain=files >"$RUN/reproxy-app.log" 2>&1 &
    pids+=($!); names+=(reproxy-app)
    sed -e "s|@APP@|127.0.0.1:9001|" -e "s|@LISTEN@|127.0.0.1:8090|" deploy/mogilefs/perlbal-mogilefs.conf \
      >"$RUN/perlbal-mogilefs.conf"
    "$BIN/perlbal" -c "$RUN/perlbal-mogilefs.conf" >"$RUN/perlbal-mogilefs.log" 2>&1 &
    pids+=($!); names+=(perlbal-mogilefs)
    printf '  %-10s %-32s upload: %s\n' "perlbal" "127.0.0.1:8090 /<key> from MogileFS" \
      "$BIN/mogile --domain=files upload KEY FILE"
  fi
fi
