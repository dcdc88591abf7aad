# mogilefs: the tracker (mogilefsd), the storage node (mogstored), unit
# tests, fuzz targets and the benchmark.
MOG_PROTO   := mogilefs/proto_tracker.c mogilefs/proto_storage.c
MOG_TRACKER := mogilefs/mogilefsd.c mogilefs/session.c mogilefs/cmd_tracker.c mogilefs/store.c \
               mogilefs/jobs.c mogilefs/httpc.c mogilefs/admin.c $(MOG_PROTO)
MOG_STORED  := mogilefs/mogstored.c $(MOG_PROTO)

$(eval $(call program,mogilefsd,$(MOG_TRACKER)))
$(eval $(call program,mogstored,$(MOG_STORED)))

$(eval $(call unit_test,mogilefs/test_proto,$(MOG_PROTO)))
$(eval $(call fuzz_target,fuzz_mog_tracker,tests/fuzz/fuzz_mog_tracker.c mogilefs/proto_tracker.c))
$(eval $(call fuzz_target,fuzz_mog_storage,tests/fuzz/fuzz_mog_storage.c mogilefs/proto_storage.c common/http.c))
