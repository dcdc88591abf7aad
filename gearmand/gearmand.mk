# gearmand: the Gearman job server, its client/worker library (libgm) and
# CLI (gearman-cli), unit tests, fuzz target and benchmark.
GM_PROTO  := gearmand/proto_bin.c gearmand/proto_text.c
GM_SERVER := gearmand/gearmand.c gearmand/session.c gearmand/cmd_bin.c gearmand/cmd_text.c gearmand/admin.c \
             gearmand/jobs.c gearmand/store.c $(GM_PROTO)

$(eval $(call program,gearmand,$(GM_SERVER)))

$(eval $(call unit_test,gearmand/test_proto,$(GM_PROTO)))
$(eval $(call unit_test,common/test_db))
$(eval $(call unit_test,gearmand/test_libgm,gearmand/client/libgm.c $(GM_PROTO)))
$(eval $(call fuzz_target,fuzz_gm_proto,tests/fuzz/fuzz_gm_proto.c $(GM_PROTO) common/num.c))
# The whole connection path (session + commands + job state + core conn)
# over a socketpair.
GM_SESSION_FUZZ_SRCS := tests/fuzz/fuzz_gm_session.c gearmand/session.c gearmand/cmd_bin.c gearmand/cmd_text.c \
                        gearmand/admin.c gearmand/jobs.c gearmand/store.c $(GM_PROTO) $(COMMON_SRCS)
$(eval $(call fuzz_target,fuzz_gm_session,$(GM_SESSION_FUZZ_SRCS)))

BENCHES += tests/bench/bench_gearmand.py

# libgm: the client/worker library (static + shared, header, pkg-config) and
# the gearman-cli CLI on it.
GM_CLIENT_SRCS := gearmand/client/libgm.c $(GM_PROTO) common/hash.c
GM_CLIENT_SOFLAGS := -Wl,--version-script=gearmand/client/libgm.map $(shell pkg-config --libs zlib libcrypto)
$(eval $(call library,gm,$(GM_CLIENT_SRCS),$(GM_CLIENT_SOFLAGS)))
HEADERS += gearmand/client/libgm.h
PCFILES += $(BUILD)/lib/pkgconfig/libgm.pc
$(BUILD)/lib/pkgconfig/libgm.pc: gearmand/client/libgm.pc.in gearmand/gearmand.mk
	@mkdir -p $(@D)
	sed -e 's|@VERSION@|1.0.0|' $< > $@
$(eval $(call program,gearman-cli,gearmand/client/cli.c,,$(BUILD)/lib/libgm.a))
