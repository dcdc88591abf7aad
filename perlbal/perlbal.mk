# perlbal: HTTP web server / reverse proxy / load balancer (Perlbal-compatible)
PERLBAL_SRCS := perlbal/perlbal.c perlbal/pb_cmd.c perlbal/pb_manage.c perlbal/pb_service.c \
                perlbal/pb_client.c perlbal/pb_proxy.c perlbal/pb_web.c perlbal/pb_plugin.c
$(eval $(call program,perlbal,$(PERLBAL_SRCS)))
$(eval $(call unit_test,common/test_http))
$(eval $(call unit_test,perlbal/test_pb_cmd,perlbal/pb_cmd.c))
$(eval $(call fuzz_target,fuzz_http,tests/fuzz/fuzz_http.c common/http.c))
$(eval $(call fuzz_target,fuzz_pb_config,tests/fuzz/fuzz_pb_config.c perlbal/pb_cmd.c))
BENCHES += tests/bench/bench_perlbal.py
# the core modules perlbal lifted into common/ (their unit tests live here: common.mk is the core's)
$(eval $(call unit_test,common/test_pool))
$(eval $(call unit_test,common/test_httpd))
$(eval $(call unit_test,common/test_httpc))
