# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
start gearmand "127.0.0.1:4730 (+ admin text)" "127.0.0.1:4731" -L 127.0.0.1 -p 4730 -q libsqlite3 --libsqlite3-db "$RUN/gearmand.sqlite" --admin 127.0.0.1:4731
