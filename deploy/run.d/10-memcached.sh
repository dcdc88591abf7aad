# sourced by deploy/run.sh: start NAME ADDRESS CONSOLE ARGS...; $RUN is the run directory
start memcached "127.0.0.1:11211" "127.0.0.1:11311" -l 127.0.0.1 -p 11211 --admin 127.0.0.1:11311
