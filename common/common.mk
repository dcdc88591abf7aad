# The shared core: built once as build/lib/libcore.a (see build.mk), plus the
# unit tests of its modules.
$(eval $(call unit_test,common/test_line))
$(eval $(call unit_test,common/test_config))
$(eval $(call unit_test,common/test_stats))
$(eval $(call unit_test,common/test_loop_conn))
$(eval $(call unit_test,common/test_loop_call))
$(eval $(call unit_test,common/test_conn_sendfile))
$(eval $(call unit_test,common/test_admin))
$(eval $(call unit_test,common/test_log))
$(eval $(call unit_test,common/test_daemon))
$(eval $(call unit_test,common/test_tls))
$(eval $(call fuzz_target,fuzz_line,tests/fuzz/fuzz_line.c common/line.c))
$(eval $(call fuzz_target,fuzz_config,tests/fuzz/fuzz_config.c common/config.c))
$(eval $(call unit_test,common/test_work))
$(eval $(call unit_test,common/test_num))
$(eval $(call unit_test,common/test_db_kit))
$(eval $(call fuzz_target,fuzz_db_sql,tests/fuzz/fuzz_db_sql.c common/db_sql.c common/num.c))
$(eval $(call unit_test,common/test_net))
$(eval $(call unit_test,common/test_db_fault))
$(eval $(call unit_test,common/test_client))
$(eval $(call unit_test,common/test_uring))
$(eval $(call unit_test,common/test_base64))
# io_uring (common/uring.c) through liburing when pkg-config finds it;
# without it conn stays on epoll.
ifneq ($(shell pkg-config --exists liburing && echo yes),)
CFLAGS += -DCORE_HAVE_LIBURING $(shell pkg-config --cflags liburing)
LIBS += $(shell pkg-config --libs liburing)
endif
