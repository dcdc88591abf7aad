/* Unit tests for perlbal/proto_manage: Perlbal's config/management language. */
#include "perlbal/proto_manage.h"

#include <string.h>

#include "tests/unit/unit.h"

static struct pb_cmd c;

static int parse(const char *s) { return pb_cmd_parse(s, strlen(s), &c); }

static void test_empty_and_comments(void)
{
    CHECK_EQ_INT(parse(""), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_EMPTY);
    CHECK_EQ_INT(parse("   # just a comment"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_EMPTY);
}

static void test_create_pool(void)
{
    CHECK_EQ_INT(parse("CREATE POOL my_apaches"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_CREATE);
    CHECK_STR(c.a1, "pool");
    CHECK_STR(c.a2, "my_apaches");
    CHECK_EQ_INT(parse("  POOL my_apaches ADD 10.0.0.10:8080"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_POOL);
    CHECK_STR(c.a1, "my_apaches");
    CHECK_STR(c.a2, "add");
    CHECK_STR(c.a3, "10.0.0.10:8080");
    CHECK_EQ_INT(parse("pool remove my_apaches 10.0.0.12"), 0);
    CHECK_STR(c.a1, "my_apaches");
    CHECK_STR(c.a2, "remove");
    CHECK_EQ_INT(parse("pool x frob 1.2.3.4"), -1);
    CHECK_EQ_INT(parse("create thing x"), -1);
}

static void test_set(void)
{
    CHECK_EQ_INT(parse("  SET listen          = 0.0.0.0:80"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_SET);
    CHECK(c.a1 == NULL);
    CHECK_STR(c.a2, "listen");
    CHECK_STR(c.a3, "0.0.0.0:80");
    CHECK_EQ_INT(parse("set balancer persist_client=On"), 0);
    CHECK_STR(c.a1, "balancer");
    CHECK_STR(c.a2, "persist_client");
    CHECK_STR(c.a3, "On");
    CHECK_EQ_INT(parse("SET demo.notmodified.host_pattern = ^immutable\\."), 0);
    CHECK_STR(c.a1, "demo");
    CHECK_STR(c.a2, "notmodified.host_pattern");
    CHECK_STR(c.a3, "^immutable\\.");
    CHECK_EQ_INT(parse("SET docroot = /Var/WWW # comment"), 0);
    CHECK_STR(c.a3, "/Var/WWW");
    CHECK_EQ_INT(parse("set x ="), -1);
    CHECK_EQ_INT(parse("set = 1"), -1);
    CHECK_EQ_INT(parse("default persist_client = on"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_DEFAULT);
    CHECK_EQ_INT(parse("server max_reproxy_connections(10.0.0.1) = 5"), -1 + 1);
    CHECK_EQ_INT(c.kind, PB_CMD_SERVER);
}

static void test_misc(void)
{
    CHECK_EQ_INT(parse("ENABLE balancer"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_ENABLE);
    CHECK_STR(c.a1, "balancer");
    CHECK_EQ_INT(parse("disable balancer"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_DISABLE);
    CHECK_EQ_INT(parse("LOAD vhosts"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_LOAD);
    CHECK_STR(c.a1, "vhosts");
    CHECK_EQ_INT(parse("use my_pool"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_USE);
    CHECK_EQ_INT(parse("HEADER web insert X-Foo: Bar Baz"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_HEADER);
    CHECK_STR(c.a1, "web");
    CHECK_STR(c.a2, "insert");
    CHECK_STR(c.a3, "X-Foo");
    CHECK_STR(c.a4, "Bar Baz");
    CHECK_EQ_INT(parse("header web remove Cookie"), 0);
    CHECK_STR(c.a3, "Cookie");
    CHECK(c.a4 == NULL);
    CHECK_EQ_INT(parse("header web insert X-Foo"), -1);
    CHECK_EQ_INT(parse("VHOST *.site.com  = site"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_VHOST);
    CHECK(c.a1 == NULL);
    CHECK_STR(c.a2, "*.site.com");
    CHECK_STR(c.a3, "site");
    CHECK_EQ_INT(parse("vhost vdemo www.x.com = site"), 0);
    CHECK_STR(c.a1, "vdemo");
    CHECK_EQ_INT(parse("vhost a/b = site"), -1);
    CHECK_EQ_INT(parse("Show   Service balancer"), 0);
    CHECK_EQ_INT(c.kind, PB_CMD_WORD);
    CHECK_EQ_INT(c.argc, 3);
    CHECK_STR(c.argv[0], "show");
    CHECK_STR(c.argv[2], "balancer");
    CHECK_EQ_INT(parse("nodes"), 0);
    CHECK_EQ_INT(c.argc, 1);
    CHECK_EQ_INT(parse("sh!ow"), -1);
}

int main(void)
{
    RUN(test_empty_and_comments);
    RUN(test_create_pool);
    RUN(test_set);
    RUN(test_misc);
    return unit_done();
}
