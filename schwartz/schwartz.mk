# schwartz: schwartzd (TheSchwartz as a daemon), libschwartz, the schwartz
# CLI, unit tests, fuzz target and benchmark.
SW_PROTO  := schwartz/proto_sw.c
SW_SERVER := schwartz/schwartzd.c schwartz/session.c schwartz/cmd_sw.c schwartz/store.c schwartz/dbconn.c \
             schwartz/admin.c $(SW_PROTO)

$(eval $(call program,schwartzd,$(SW_SERVER)))
