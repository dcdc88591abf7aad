/* settings tables: defaults, file, command line, live set */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/config.h"
#include "common/daemon.h"
#include "tests/unit/unit.h"

static int port, verbose;
static uint64_t mem;
static bool udp;
static char *name;
static double factor;

static const struct cfg_setting table[] = { { "port", 'p', CFG_INT, &port, "11211", "TCP port", false, NULL },
                                            { "memory-limit", 'm', CFG_SIZE, &mem, "64m", "item memory", true, NULL },
                                            { "verbose", 'v', CFG_COUNT, &verbose, "0", "more logging", false, NULL },
                                            { "udp", 'U', CFG_BOOL, &udp, "no", "UDP", false, NULL },
                                            { "name", 'n', CFG_STRING, &name, "cache", "a name", true, NULL },
                                            { "factor", 'f', CFG_DOUBLE, &factor, "1.25", "growth", false, NULL },
                                            CFG_END };
static const struct cfg_setting *const tables[] = { table, core_settings, NULL };

static int load(int argc, char **argv, char *err) { return cfg_load(tables, argc, argv, "t", "1.0", err, 256); }

static void test_defaults(void)
{
    char err[256];
    char *argv[] = { "t", NULL };
    CHECK_EQ_INT(load(1, argv, err), 0);
    CHECK_EQ_INT(port, 11211);
    CHECK_EQ_INT(mem, 64 << 20);
    CHECK_EQ_INT(verbose, 0);
    CHECK(!udp);
    CHECK_STR(name, "cache");
    CHECK(factor == 1.25);
    CHECK_STR(core_opts.log_level, "info");
}

static void test_command_line(void)
{
    char err[256];
    char *argv[] = { "t", "-p", "99", "-vv", "--memory-limit=1g", "-U", "--name", "x", "--log-level", "debug", NULL };
    CHECK_EQ_INT(load(10, argv, err), 0);
    CHECK_EQ_INT(port, 99);
    CHECK_EQ_INT(verbose, 2);
    CHECK_EQ_INT(mem, 1ULL << 30);
    CHECK(udp);
    CHECK_STR(name, "x");
    CHECK_STR(core_opts.log_level, "debug");
}

static void test_errors(void)
{
    char err[256];
    char *a1[] = { "t", "-p", "abc", NULL };
    CHECK_EQ_INT(load(3, a1, err), -1);
    CHECK(strstr(err, "port") != NULL);
    char *a2[] = { "t", "--nope", NULL };
    CHECK_EQ_INT(load(2, a2, err), -1);
    char *a3[] = { "t", "-m", "12q", NULL };
    CHECK_EQ_INT(load(3, a3, err), -1);
    char *a4[] = { "t", "stray", NULL };
    CHECK_EQ_INT(load(2, a4, err), -1);
}

static void test_file_and_precedence(void)
{
    char dir[] = "/tmp/cfgtestXXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char main_path[256], inc_path[256];
    snprintf(main_path, sizeof(main_path), "%s/main.conf", dir);
    snprintf(inc_path, sizeof(inc_path), "%s/more.conf", dir);
    FILE *f = fopen(main_path, "w");
    fprintf(f, "# comment\nport = 1234\n\nname = from file\ninclude more.conf\n");
    fclose(f);
    f = fopen(inc_path, "w");
    fprintf(f, "memory_limit = 2m\nudp = yes\n");
    fclose(f);
    char err[256];
    char *argv[] = { "t", "--config", main_path, "-p", "77", NULL };
    CHECK_EQ_INT(load(5, argv, err), 0);
    CHECK_EQ_INT(port, 77); /* command line beats the file */
    CHECK_STR(name, "from file");
    CHECK_EQ_INT(mem, 2 << 20); /* from the include, '_' == '-' */
    CHECK(udp);

    /* reload changes only live settings */
    f = fopen(main_path, "w");
    fprintf(f, "port = 5\nname = reloaded\n");
    fclose(f);
    CHECK_EQ_INT(cfg_reload(tables, err, sizeof(err)), 0);
    CHECK_EQ_INT(port, 77);
    CHECK_STR(name, "reloaded");

    f = fopen(main_path, "w");
    fprintf(f, "bogus = 1\n");
    fclose(f);
    CHECK_EQ_INT(cfg_load_file(tables, main_path, false, err, sizeof(err)), -1);
    CHECK(strstr(err, "bogus") != NULL);
    unlink(main_path);
    unlink(inc_path);
    rmdir(dir);
}

static void test_live_set_and_show(void)
{
    char err[256];
    CHECK_EQ_INT(cfg_set(tables, "name", "live", true, err, sizeof(err)), 0);
    CHECK_STR(name, "live");
    CHECK_EQ_INT(cfg_set(tables, "port", "1", true, err, sizeof(err)), -1);
    CHECK(strstr(err, "cannot change") != NULL);
    struct evbuffer *b = evbuffer_new();
    cfg_show(tables, b);
    evbuffer_add(b, "", 1);
    const char *text = (const char *)evbuffer_pullup(b, -1);
    CHECK(strstr(text, "name = live  [live]\r\n") != NULL);
    CHECK(strstr(text, "memory-limit = ") != NULL);
    evbuffer_free(b);
}

/* A secret setting: the value is used as given, but `show settings`, --help
 * and a refused value never print it. */
static char *pass, *key_unset;
static int pin;
static const struct cfg_setting secret_table[] = {
    { "db-pass", 0, CFG_STRING, &pass, "hunter2-default", "database password", true, NULL, true },
    { "api-key", 0, CFG_STRING, &key_unset, NULL, "unset secret", false, NULL, true },
    { "pin", 0, CFG_INT, &pin, "0", "a secret number", true, NULL, true },
    { "plain", 0, CFG_STRING, &name, NULL, "not secret", true, NULL },
    CFG_END
};
static const struct cfg_setting *const secret_tables[] = { secret_table, NULL };

static void test_secret(void)
{
    char err[256];
    char *argv[] = { "t", "--db-pass=s3cr3t-value", NULL };
    CHECK_EQ_INT(cfg_load(secret_tables, 2, argv, "t", "1.0", err, sizeof err), 0);
    CHECK_STR(pass, "s3cr3t-value");
    CHECK_EQ_INT(cfg_set(secret_tables, "pin", "12x34", true, err, sizeof err), -1);
    CHECK(strstr(err, "12x34") == NULL);
    CHECK(strstr(err, "<redacted>") != NULL);
    CHECK_EQ_INT(cfg_set(secret_tables, "pin", "1234", true, err, sizeof err), 0);
    CHECK_EQ_INT(cfg_set(secret_tables, "plain", "visible", true, err, sizeof err), 0);
    struct evbuffer *b = evbuffer_new();
    cfg_show(secret_tables, b);
    evbuffer_add(b, "", 1);
    const char *text = (const char *)evbuffer_pullup(b, -1);
    CHECK(strstr(text, "db-pass = <redacted>  [live]\r\n") != NULL);
    CHECK(strstr(text, "pin = <redacted>  [live]\r\n") != NULL);
    CHECK(strstr(text, "api-key = \r\n") != NULL); /* unset: shown empty, so one can tell */
    CHECK(strstr(text, "plain = visible  [live]\r\n") != NULL);
    CHECK(strstr(text, "s3cr3t") == NULL && strstr(text, "1234") == NULL);
    evbuffer_free(b);
    char *help = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&help, &hl);
    cfg_usage(secret_tables, "t", f);
    fclose(f);
    CHECK(strstr(help, "--db-pass") != NULL);
    CHECK(strstr(help, "hunter2") == NULL);
    free(help);
    free(pass);
    pass = NULL;
}

static void test_sizes(void)
{
    uint64_t v;
    CHECK_EQ_INT(cfg_parse_size("0", &v), 0);
    CHECK_EQ_INT(cfg_parse_size("10K", &v), 0);
    CHECK_EQ_INT(v, 10240);
    CHECK_EQ_INT(cfg_parse_size("3mb", &v), 0);
    CHECK_EQ_INT(v, 3 << 20);
    CHECK_EQ_INT(cfg_parse_size("-1", &v), -1);
    CHECK_EQ_INT(cfg_parse_size("99999999999999999999", &v), -1);
    CHECK_EQ_INT(cfg_parse_size("20000000000t", &v), -1);
}

/* A daemon's own short letter wins over the core's: schwartzd's -d is
 * --database, so -d is not --daemon there (the long name still works). */
static char *database;
static const struct cfg_setting dtable[] = { { "database", 'd', CFG_STRING, &database, NULL, "a DSN", false, NULL },
                                             CFG_END };
static const struct cfg_setting *const dtables[] = { dtable, core_settings, NULL };

static void test_short_letter_collision(void)
{
    char err[256];
    char *argv[] = { "t", "-d", "dbi:SQLite:x", NULL };
    CHECK_EQ_INT(cfg_load(dtables, 3, argv, "t", "1.0", err, sizeof err), 0);
    CHECK_STR(database, "dbi:SQLite:x");
    CHECK(!core_opts.daemonize);
    char *argv2[] = { "t", "--daemon", NULL };
    CHECK_EQ_INT(cfg_load(dtables, 2, argv2, "t", "1.0", err, sizeof err), 0);
    CHECK(core_opts.daemonize);
    char *help = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&help, &hl);
    cfg_usage(dtables, "t", f);
    fclose(f);
    CHECK(strstr(help, "-d, --database") != NULL);
    CHECK(strstr(help, "-d, --daemon") == NULL);
    CHECK(strstr(help, "    --daemon") != NULL);
    free(help);
    /* without a collision, -d is --daemon */
    char *argv3[] = { "t", "-d", NULL };
    CHECK_EQ_INT(load(2, argv3, err), 0);
    CHECK(core_opts.daemonize);
    char *argv4[] = { "t", NULL };
    CHECK_EQ_INT(load(1, argv4, err), 0);
    CHECK(!core_opts.daemonize);
}

/* Live values are checked before they are taken; a custom setting shows
 * its running value once it has a formatter. */
static int megabytes;
static int set_mb(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    megabytes = atoi(value);
    return 0;
}
static void format_mb(const struct cfg_setting *s, char *buf, size_t len)
{
    (void)s;
    snprintf(buf, len, "%d", megabytes);
}
static const struct cfg_setting ctable[] = {
    { "memory-limit", 'm', CFG_CUSTOM, NULL, "64", "megabytes", false, set_mb }, CFG_END
};
static const struct cfg_setting *const ctables[] = { ctable, core_settings, NULL };

static void test_checked_and_running_values(void)
{
    char err[256], buf[64];
    char *argv[] = { "t", "-m", "128", NULL };
    CHECK_EQ_INT(cfg_load(ctables, 3, argv, "t", "1.0", err, sizeof err), 0);
    CHECK_STR(cfg_format(&ctable[0], buf, sizeof buf), "64"); /* no formatter: the default text */
    cfg_set_formatter(&ctable[0], format_mb);
    CHECK_STR(cfg_format(&ctable[0], buf, sizeof buf), "128");
    CHECK_EQ_INT(cfg_set(ctables, "log-level", "loud", true, err, sizeof err), -1);
    CHECK(strstr(err, "loud") != NULL);
    CHECK_STR(core_opts.log_level, "info"); /* unchanged */
    CHECK_EQ_INT(cfg_set(ctables, "log-level", "debug", true, err, sizeof err), 0);
    CHECK_STR(core_opts.log_level, "debug");
    char *bad[] = { "t", "--log-level", "loud", NULL };
    CHECK_EQ_INT(cfg_load(ctables, 3, bad, "t", "1.0", err, sizeof err), -1);
}

int main(void)
{
    RUN(test_defaults);
    RUN(test_command_line);
    RUN(test_errors);
    RUN(test_file_and_precedence);
    RUN(test_live_set_and_show);
    RUN(test_sizes);
    RUN(test_secret);
    RUN(test_short_letter_collision);
    RUN(test_checked_and_running_values);
    return unit_done();
}
