# mogilefs: the tracker (mogilefsd), the storage node (mogstored), unit
# tests, fuzz targets and the benchmark.
MOG_PROTO   := mogilefs/proto_tracker.c mogilefs/proto_storage.c
MOG_TRACKER := mogilefs/mogilefsd.c mogilefs/session.c mogilefs/cmd_tracker.c mogilefs/store.c \
               mogilefs/jobs.c mogilefs/rebalance.c mogilefs/zones.c mogilefs/nodehttp.c mogilefs/iostat.c mogilefs/admin.c mogilefs/conf.c $(MOG_PROTO)
MOG_STORED  := mogilefs/mogstored.c mogilefs/storage.c mogilefs/conf.c $(MOG_PROTO)

$(eval $(call program,mogilefsd,$(MOG_TRACKER)))
$(eval $(call program,mogstored,$(MOG_STORED)))

$(eval $(call unit_test,mogilefs/test_proto,$(MOG_PROTO)))
$(eval $(call fuzz_target,fuzz_mog_tracker,tests/fuzz/fuzz_mog_tracker.c mogilefs/proto_tracker.c))
$(eval $(call fuzz_target,fuzz_mog_storage,tests/fuzz/fuzz_mog_storage.c mogilefs/proto_storage.c common/http.c))

# libmogile: the client library (static + shared, header, pkg-config) and
# the mogile CLI (mogadm and mog* file tools in one).
MOG_CLIENT_SRCS := mogilefs/client/libmogile.c mogilefs/proto_tracker.c common/http.c
MOG_CLIENT_SOFLAGS := -Wl,--version-script=mogilefs/client/libmogile.map $(shell pkg-config --libs libevent libcrypto)
$(eval $(call library,mogile,$(MOG_CLIENT_SRCS),$(MOG_CLIENT_SOFLAGS)))
HEADERS += mogilefs/client/libmogile.h
PCFILES += $(BUILD)/lib/pkgconfig/libmogile.pc
$(BUILD)/lib/pkgconfig/libmogile.pc: mogilefs/client/libmogile.pc.in mogilefs/mogilefs.mk
	@mkdir -p $(@D)
	sed -e 's|@VERSION@|1.0.0|' $< > $@
$(eval $(call program,mogile,mogilefs/tools/mogile.c,,$(BUILD)/lib/libmogile.a))
$(eval $(call program,mogile-bench,mogilefs/tools/mogile-bench.c,,$(BUILD)/lib/libmogile.a))

BENCHES += tests/bench/bench_mogilefs.py
# mogstored's connection path (storage.c + the core) over a socketpair.
MOG_STORAGE_FUZZ_SRCS := tests/fuzz/fuzz_mog_storage_session.c mogilefs/storage.c $(MOG_PROTO) $(COMMON_SRCS)
$(eval $(call fuzz_target,fuzz_mog_storage_session,$(MOG_STORAGE_FUZZ_SRCS)))
