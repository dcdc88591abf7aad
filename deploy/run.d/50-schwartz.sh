# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
start schwartzd "127.0.0.1:7003" "127.0.0.1:7004" --listen 127.0.0.1:7003 --console 127.0.0.1:7004 --database "dbi:SQLite:dbname=$RUN/schwartzd.sqlite"
