# perlbal: HTTP web server / reverse proxy / load balancer (Perlbal-compatible)
PERLBAL_SRCS := perlbal/perlbal.c perlbal/proto_manage.c perlbal/cmd_manage.c perlbal/admin.c perlbal/service.c \
                perlbal/session.c perlbal/proxy.c perlbal/backend.c perlbal/reproxy.c perlbal/upload.c \
                perlbal/web.c perlbal/plugin.c perlbal/regex.c perlbal/accesslog.c perlbal/upload_status.c perlbal/proto_upload.c $(sort $(wildcard perlbal/plugins/*.c))
# libmc (memcached's client library): Throttle's shared state in memcached;
# PCRE2: the Perl regexes of Perlbal configs
PB_LIBS := $(shell pkg-config --libs libpcre2-8)
$(eval $(call program,perlbal,$(PERLBAL_SRCS),$(PB_LIBS),$(BUILD)/lib/libmc.a))
$(eval $(call unit_test,common/test_http))
$(eval $(call unit_test,perlbal/test_proto_manage,perlbal/proto_manage.c))
$(eval $(call unit_test,perlbal/test_proto_upload,perlbal/proto_upload.c))
$(eval $(call fuzz_target,fuzz_http,tests/fuzz/fuzz_http.c common/http.c))
$(eval $(call fuzz_target,fuzz_pb_config,tests/fuzz/fuzz_pb_config.c perlbal/proto_manage.c))
$(eval $(call fuzz_target,fuzz_pb_upload,tests/fuzz/fuzz_pb_upload.c perlbal/proto_upload.c))
BENCHES += tests/bench/bench_perlbal.py
# the core modules perlbal lifted into common/ (their unit tests live here: common.mk is the core's)
$(eval $(call unit_test,common/test_pool))
$(eval $(call unit_test,common/test_httpd))
$(eval $(call unit_test,common/test_httpc))
$(eval $(call fuzz_target,fuzz_perlbal_addr,tests/fuzz/fuzz_perlbal_addr.c common/pool.c))
