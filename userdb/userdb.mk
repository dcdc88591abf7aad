# userdb: userdbd (the user-cluster MySQL-protocol router), the user mover,
# unit tests, fuzz target and benchmark.
UD_PROTO := userdb/proto_mysql.c
UD_SRCS  := userdb/userdbd.c userdb/session.c userdb/backend.c userdb/topology.c userdb/directory.c userdb/dsn.c \
            userdb/admin.c $(UD_PROTO)

$(eval $(call program,userdbd,$(UD_SRCS)))
$(eval $(call program,usermove,userdb/tools/usermove.c userdb/dsn.c))
$(eval $(call program,userdb,userdb/tools/userdb.c))

$(eval $(call unit_test,userdb/test_proto,$(UD_PROTO)))
$(eval $(call unit_test,userdb/test_dsn,userdb/dsn.c))
$(eval $(call fuzz_target,fuzz_ud_proto,tests/fuzz/fuzz_ud_proto.c $(UD_PROTO),-lcrypto))

BENCHES += tests/bench/bench_userdb.py

# The whole client path (session, routing, directory, pools) over a socketpair.
UD_SESSION_FUZZ_SRCS := tests/fuzz/fuzz_ud_session.c userdb/session.c userdb/backend.c userdb/topology.c \
                        userdb/directory.c userdb/dsn.c $(UD_PROTO) $(COMMON_SRCS)
$(eval $(call fuzz_target,fuzz_ud_session,$(UD_SESSION_FUZZ_SRCS)))
