/* Unit tests of schwartzd's pure parsers: request lines and DSNs. */
#include "schwartz/schwartzd.h"
#include "common/db.h"
#include "tests/unit/unit.h"

static enum sw_err parse(const char *text, bool jobline, struct sw_req *r, char *buf)
{
    const char *why;
    strcpy(buf, text);
    return sw_parse_line(buf, strlen(buf), jobline, 1000, r, &why);
}

static void test_insert_with_options(void)
{
    struct sw_req r;
    char b[256];
    CHECK_EQ_INT(parse("insert foo 5 uniqkey=k priority=3 run_after=10 coalesce=a.b", false, &r, b), SW_OK);
    CHECK_EQ_INT(r.cmd, SW_CMD_INSERT);
    CHECK_STR(r.func, "foo");
    CHECK_EQ_INT(r.bytes, 5);
    CHECK(r.has_block);
    CHECK_STR(r.uniqkey, "k");
    CHECK_STR(r.coalesce, "a.b");
    CHECK(r.priority.set && r.priority.v == 3);
    CHECK(r.run_after.set && r.run_after.v == 10);
}

static void test_job_line_and_limits(void)
{
    struct sw_req r;
    char b[256];
    CHECK_EQ_INT(parse("Child 3", true, &r, b), SW_OK);
    CHECK_STR(r.func, "Child");
    CHECK_EQ_INT(parse("insert foo 1001", false, &r, b), SW_E_ARG_TOO_BIG);
    CHECK_EQ_INT(parse("insert foo -1", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("insert foo 1x", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("insert foo 1 priority=65536", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("insert foo 1 floor=3", false, &r, b), SW_E_BAD_ARGS); /* grab-only option */
    CHECK_EQ_INT(parse("nope", false, &r, b), SW_E_UNKNOWN_COMMAND);
}

static void test_grab(void)
{
    struct sw_req r;
    char b[256];
    CHECK_EQ_INT(parse("grab 10 0 a b prioritize=1 floor=2", false, &r, b), SW_OK);
    CHECK_EQ_INT(r.count, 10);
    CHECK_EQ_INT(r.grab_for, 1); /* 0 counts as 1, as TheSchwartz */
    CHECK_EQ_INT(r.nfuncs, 2);
    CHECK_STR(r.funcs[1], "b");
    CHECK(r.prioritize);
    CHECK(r.floor.set && r.floor.v == 2);
    CHECK_EQ_INT(parse("grab 0 10 a", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("grab 1 10", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("grab 1 10 a coalesce=x coalesce_prefix=y", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("grab_job 0123456789abcdef0123456789abcdef-9 0", false, &r, b), SW_OK);
    CHECK_EQ_INT(r.cmd, SW_CMD_GRAB_JOB);
    CHECK_EQ_INT(r.grab_for, 1);
    CHECK_EQ_INT(parse("grab_job 0123456789abcdef0123456789abcdef-9", false, &r, b), SW_E_BAD_ARGS);
}

static void test_failed_message_and_handles(void)
{
    struct sw_req r;
    char b[256];
    CHECK_EQ_INT(parse("failed 0123456789abcdef0123456789abcdef-12 exit=3 :it broke: badly", false, &r, b), SW_OK);
    CHECK_STR(r.handle, "0123456789abcdef0123456789abcdef-12");
    CHECK_STR(r.message, "it broke: badly");
    CHECK(r.exit_status.set && r.exit_status.v == 3);
    CHECK_EQ_INT(parse("completed 0123456789ABCDEF0123456789abcdef-1", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("completed 0123456789abcdef0123456789abcdef-0", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("completed abc", false, &r, b), SW_E_BAD_ARGS);
    CHECK_EQ_INT(parse("declined 0123456789abcdef0123456789abcdef-1 :x", false, &r, b), SW_E_BAD_ARGS);
}

static void test_dsn(void)
{
    struct db_config d = { 0 };
    char err[160];
    CHECK_EQ_INT(sw_dsn_config("dbi:SQLite:dbname=/tmp/x.db", &d, err, sizeof err), 0);
    CHECK_EQ_INT(d.driver, DB_SQLITE);
    CHECK_STR(d.path, "/tmp/x.db");
    db_config_clear(&d);
    CHECK_EQ_INT(
        sw_dsn_config("DBI:mysql:database=jobs;host=db1;port=3307;mysql_socket=/run/m.sock", &d, err, sizeof err), 0);
    CHECK_EQ_INT(d.driver, DB_MYSQL);
    CHECK_STR(d.database, "jobs");
    CHECK_STR(d.host, "db1");
    CHECK_EQ_INT(d.port, 3307);
    CHECK_STR(d.socket, "/run/m.sock");
    db_config_clear(&d);
    CHECK_EQ_INT(sw_dsn_config("dbi:Pg:dbname=x", &d, err, sizeof err), -1);
    CHECK_EQ_INT(sw_dsn_config("dbi:mysql:host=h", &d, err, sizeof err), -1);
    CHECK(strstr(err, "database") != NULL);
    CHECK_EQ_INT(sw_dsn_config("dbi:mysql:database=d;port=99999", &d, err, sizeof err), -1);
    CHECK_EQ_INT(sw_dsn_config("sqlite:x", &d, err, sizeof err), -1);
    db_config_clear(&d);
}

int main(void)
{
    RUN(test_insert_with_options);
    RUN(test_job_line_and_limits);
    RUN(test_grab);
    RUN(test_failed_message_and_handles);
    RUN(test_dsn);
    return unit_done();
}
