# schwartz: schwartzd (TheSchwartz as a daemon), libschwartz, the schwartz
# CLI, unit tests, fuzz target and benchmark.
SW_PROTO  := schwartz/proto_sw.c
SW_SERVER := schwartz/schwartzd.c schwartz/session.c schwartz/cmd_sw.c schwartz/store.c \
             schwartz/admin.c $(SW_PROTO)

$(eval $(call program,schwartzd,$(SW_SERVER)))

# libschwartz: the client/worker library (static + shared, header, pkg-config)
# and the schwartz CLI on it.
SW_CLIENT_SRCS := schwartz/client/libschwartz.c
SW_CLIENT_SOFLAGS := -Wl,--version-script=schwartz/client/libschwartz.map
$(eval $(call library,schwartz,$(SW_CLIENT_SRCS),$(SW_CLIENT_SOFLAGS)))
HEADERS += schwartz/client/libschwartz.h
PCFILES += $(BUILD)/lib/pkgconfig/libschwartz.pc
$(BUILD)/lib/pkgconfig/libschwartz.pc: schwartz/client/libschwartz.pc.in schwartz/schwartz.mk
	@mkdir -p $(@D)
	sed -e 's|@VERSION@|1.0.0|' $< > $@
$(eval $(call program,schwartz,schwartz/tools/schwartz.c,,$(BUILD)/lib/libschwartz.a))

$(eval $(call unit_test,schwartz/test_proto,$(SW_PROTO)))
$(eval $(call fuzz_target,fuzz_sw_proto,tests/fuzz/fuzz_sw_proto.c $(SW_PROTO) common/db_sql.c common/line.c))
BENCHES += tests/bench/bench_schwartz.py
