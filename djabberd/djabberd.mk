# djabberd: the XMPP server (expat for XML), its unit tests, fuzz targets
# and benchmark.
DJ_PROTO := djabberd/proto_xml.c djabberd/proto_sasl.c
DJ_SRCS  := djabberd/djabberd.c djabberd/session.c djabberd/cmd_xmpp.c djabberd/roster.c djabberd/store.c \
            djabberd/hooks.c djabberd/admin.c djabberd/s2s.c djabberd/cluster.c djabberd/plugins/ping.c djabberd/plugins/version.c \
            djabberd/plugins/vcard.c djabberd/plugins/vcard_update.c $(DJ_PROTO)
DJ_LIBS  := $(shell pkg-config --libs expat)

$(eval $(call program,djabberd,$(DJ_SRCS),$(DJ_LIBS)))

$(eval $(call unit_test,djabberd/test_proto,$(DJ_PROTO),$(DJ_LIBS)))

$(eval $(call fuzz_target,fuzz_dj_xml,tests/fuzz/fuzz_dj_xml.c djabberd/proto_xml.c,$(DJ_LIBS)))
$(eval $(call fuzz_target,fuzz_dj_sasl,tests/fuzz/fuzz_dj_sasl.c djabberd/proto_sasl.c common/base64.c))

BENCHES += tests/bench/bench_djabberd.py
