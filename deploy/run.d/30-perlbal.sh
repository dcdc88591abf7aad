# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
if [ -x "$BIN/perlbal" ]; then
  sed "s|@RUN@|$RUN|g" deploy/conf/perlbal-run.conf >"$RUN/perlbal.conf"
  mkdir -p "$RUN/htdocs" && echo "hello from perlbal" >"$RUN/htdocs/index.html"
  start perlbal "127.0.0.1:8080 static, :8088 proxy" "127.0.0.1:60000" -c "$RUN/perlbal.conf"
fi
