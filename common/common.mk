# The shared core: built once as build/lib/libcore.a (see build.mk), plus the
# unit tests of its modules.
$(eval $(call unit_test,common/test_line))
$(eval $(call unit_test,common/test_config))
$(eval $(call unit_test,common/test_stats))
$(eval $(call unit_test,common/test_loop_conn))
$(eval $(call unit_test,common/test_admin))
$(eval $(call unit_test,common/test_log))
$(eval $(call unit_test,common/test_daemon))
$(eval $(call unit_test,common/test_tls))
$(eval $(call fuzz_target,fuzz_line,tests/fuzz/fuzz_line.c common/line.c))
$(eval $(call fuzz_target,fuzz_config,tests/fuzz/fuzz_config.c common/config.c))
