/* Unit tests: userdb's DSNs (the core's db_config_dsn plus ;weight=W). */
#include "tests/unit/unit.h"

#include <string.h>

#include "userdb/userdb.h"

static void test_dsn_forms(void)
{
    struct ud_dsn d;
    char err[256];
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=lj;host=10.0.0.5;port=3307", &d, err, sizeof err), 0);
    CHECK_STR(d.database, "lj");
    CHECK_STR(d.host, "10.0.0.5");
    CHECK_EQ_INT(d.port, 3307);
    CHECK_EQ_INT(d.weight, 1);
    CHECK_STR(d.socket, "");
    /* weight is userdb's own key, anywhere in the list */
    CHECK_EQ_INT(ud_dsn_parse("dbi:MariaDB:weight=3;db=c1;hostname=db1", &d, err, sizeof err), 0);
    CHECK_EQ_INT(d.weight, 3);
    CHECK_STR(d.database, "c1");
    CHECK_STR(d.host, "db1");
    CHECK_EQ_INT(d.port, 3306);
    /* a socket and no host: no default host */
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=g;mysql_socket=/run/m.sock", &d, err, sizeof err), 0);
    CHECK_STR(d.socket, "/run/m.sock");
    CHECK_STR(d.host, "");
    /* the old spelling socket= still works */
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=g;socket=/run/m.sock;weight=0", &d, err, sizeof err), 0);
    CHECK_STR(d.socket, "/run/m.sock");
    CHECK_EQ_INT(d.weight, 0);
    /* DBI's positional form, through the core */
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:lj:127.0.0.1:3310", &d, err, sizeof err), 0);
    CHECK_STR(d.database, "lj");
    CHECK_EQ_INT(d.port, 3310);
    /* no host, no socket: loopback */
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x", &d, err, sizeof err), 0);
    CHECK_STR(d.host, "127.0.0.1");
}

static void test_dsn_errors(void)
{
    struct ud_dsn d;
    char err[256];
    CHECK_EQ_INT(ud_dsn_parse("DBI:SQLite:dbname=/tmp/x.db", &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("mysql:database=x", &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x;port=70000", &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x;weight=-1", &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x;weight=abc", &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x;color=red", &d, err, sizeof err), -1);
    CHECK(strstr(err, "unknown key") != NULL);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=x;noequals", &d, err, sizeof err), -1);
    char big[2000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    memcpy(big, "DBI:mysql:host=", 15);
    CHECK_EQ_INT(ud_dsn_parse(big, &d, err, sizeof err), -1);
    CHECK_EQ_INT(ud_dsn_parse("DBI:mysql:database=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                              &d, err, sizeof err),
                 -1);
}

int main(void)
{
    RUN(test_dsn_forms);
    RUN(test_dsn_errors);
    return unit_done();
}
