# memcached: the daemon, its client library (libmc) and CLI, unit tests,
# fuzz targets and the benchmark.
MC_SESSION := memcached/session.c memcached/cmd_text.c memcached/cmd_meta.c memcached/cmd_bin.c memcached/udp.c \
              memcached/proto_udp.c memcached/auth_ascii.c memcached/proto_auth.c
MC_SRCS := memcached/memcached.c $(MC_SESSION) memcached/proto_text.c memcached/proto_meta.c \
           memcached/proto_bin.c memcached/items.c memcached/slabs.c memcached/assoc.c memcached/crawler.c memcached/prefix.c \
           memcached/hugepages.c memcached/tls.c
MC_STORE := memcached/items.c memcached/slabs.c memcached/assoc.c memcached/crawler.c memcached/prefix.c \
            memcached/hugepages.c
# watch: the log streams (its hooks sit in items.c and session.c)
MC_SRCS += memcached/watch.c memcached/restart.c
MC_STORE += memcached/watch.c
MC_SRCS += memcached/extstore.c
MC_STORE += memcached/extstore.c

$(eval $(call program,memcached,$(MC_SRCS)))

$(eval $(call unit_test,common/test_hash))
$(eval $(call unit_test,memcached/test_proto,memcached/proto_text.c memcached/proto_meta.c memcached/proto_bin.c))
$(eval $(call unit_test,memcached/test_store,$(MC_STORE)))
$(eval $(call unit_test,memcached/test_udp,memcached/proto_udp.c))
# libmc's continuum checked against libmemcached itself (libmemcached-dev)
$(eval $(call unit_test,memcached/test_ketama_compat,,-lmemcached))
# libmc's event-loop client: a daemon that uses it adds MC_ASYNC_SRCS to its
# sources (it runs on libcore's conn/loop, so it is not in libmc.so). Its
# test starts BUILD/bin/memcached itself.
MC_ASYNC_SRCS := memcached/client/mc_async.c
$(eval $(call unit_test,memcached/test_mc_async,$(MC_ASYNC_SRCS)))

$(eval $(call fuzz_target,fuzz_mc_text,tests/fuzz/fuzz_mc_text.c memcached/proto_text.c memcached/proto_meta.c common/num.c common/base64.c))
$(eval $(call fuzz_target,fuzz_mc_bin,tests/fuzz/fuzz_mc_bin.c memcached/proto_bin.c))
# UDP frame header and the cut of a get's reply into response objects.
$(eval $(call fuzz_target,fuzz_mc_udp,tests/fuzz/fuzz_mc_udp.c memcached/proto_udp.c))
# -Y's login request.
$(eval $(call fuzz_target,fuzz_mc_auth,tests/fuzz/fuzz_mc_auth.c memcached/proto_auth.c))
# libmc's reply readers (all three protocols, compressed values) against
# arbitrary server bytes, served from a unix socket in the target.
$(eval $(call fuzz_target,fuzz_mc_client,tests/fuzz/fuzz_mc_client.c memcached/client/libmc.c common/client.c common/hash.c))
# mc_async's reply reader, pure (the event-loop client's parser).
$(eval $(call fuzz_target,fuzz_mc_async,tests/fuzz/fuzz_mc_async.c memcached/client/mc_async.c $(COMMON_SRCS)))

BENCHES += tests/bench/bench_memcached.py

# libmc: the client library (static + shared, header, pkg-config) and its CLI.
MC_CLIENT_SRCS := memcached/client/libmc.c common/hash.c
MC_CLIENT_SOFLAGS := -Wl,--version-script=memcached/client/libmc.map $(shell pkg-config --libs zlib libcrypto)
$(eval $(call library,mc,$(MC_CLIENT_SRCS),$(MC_CLIENT_SOFLAGS)))
HEADERS += memcached/client/libmc.h
PCFILES += $(BUILD)/lib/pkgconfig/libmc.pc
$(BUILD)/lib/pkgconfig/libmc.pc: memcached/client/libmc.pc.in memcached/memcached.mk
	@mkdir -p $(@D)
	sed -e 's|@VERSION@|1.0.0|' $< > $@
$(eval $(call program,memcached-cli,memcached/client/cli.c,-lz,$(BUILD)/lib/libmc.a))

# The whole connection path (session + store + core conn) over a socketpair.
MC_SESSION_FUZZ_SRCS := tests/fuzz/fuzz_mc_session.c $(MC_SESSION) memcached/proto_text.c memcached/proto_meta.c \
                        memcached/proto_bin.c $(MC_STORE) $(COMMON_SRCS)
$(eval $(call fuzz_target,fuzz_mc_session,$(MC_SESSION_FUZZ_SRCS)))
# -e's metadata file parser (restart.c) with the store it restores into.
$(eval $(call fuzz_target,fuzz_mc_restart,tests/fuzz/fuzz_mc_restart.c memcached/restart.c $(MC_STORE) $(COMMON_SRCS)))

# extstore's parsers: records read back from the file, the "extstore"
# command's arguments and the ext_* options.
$(eval $(call fuzz_target,fuzz_mc_ext,tests/fuzz/fuzz_mc_ext.c $(MC_STORE) $(COMMON_SRCS)))
# -o ssl_* values (TLS client certificates and the rest of memcached's TLS options).
$(eval $(call fuzz_target,fuzz_mc_tls,tests/fuzz/fuzz_mc_tls.c memcached/tls.c $(COMMON_SRCS)))
