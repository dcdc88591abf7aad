/* the console command table */
#include <string.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/stats.h"
#include "tests/unit/unit.h"

static int knob;
static const struct cfg_setting table[] = { { "knob", 0, CFG_INT, &knob, "3", "a live knob", true, NULL }, CFG_END };
static const struct cfg_setting *const tables[] = { table, NULL };

static enum admin_result cmd_hello(struct admin_ctx *ctx, int argc, char **argv)
{
    admin_printf(ctx, "HELLO %d %s\r\n", argc, argc > 1 ? argv[1] : "-");
    return ADMIN_OK;
}
static enum admin_result cmd_version2(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    admin_printf(ctx, "MINE\r\n");
    return ADMIN_OK;
}
static const struct admin_cmd cmds[] = {
    { "hello", "hello [x]", "say hello", cmd_hello },
    { NULL, NULL, NULL, NULL },
};
static const struct admin_cmd override[] = {
    { "version", "version", "replaced", cmd_version2 },
    { NULL, NULL, NULL, NULL },
};

static char *run(const char *line, enum admin_result *rc)
{
    static struct evbuffer *out;
    static char buf[4096];
    if (!out)
        out = evbuffer_new();
    evbuffer_drain(out, evbuffer_get_length(out));
    struct admin_ctx ctx = { .out = out };
    char copy[256];
    snprintf(copy, sizeof(copy), "%s", line);
    *rc = admin_exec(&ctx, copy, strlen(copy));
    size_t n = evbuffer_remove(out, buf, sizeof(buf) - 1);
    buf[n] = '\0';
    return buf;
}

static void src(struct stats_sink *s, void *arg)
{
    (void)arg;
    stats_u64(s, "things", 7);
}

static enum admin_result fallback_seen;
static enum admin_result fb(struct admin_ctx *ctx, char *line, size_t len)
{
    admin_printf(ctx, "FALLBACK [%.*s]\r\n", (int)len, line);
    return ADMIN_OK;
}

static void test_builtins_and_registered(void)
{
    enum admin_result rc;
    char err[64];
    char *argv[] = { "t", NULL };
    cfg_load(tables, 1, argv, "t", "9.9", err, sizeof(err));
    admin_set_info("testd", "9.9", tables);
    admin_register(cmds);
    enum admin_result rc0;
    /* no plain stats source yet: an empty list, not a crash on a NULL name */
    CHECK_STR(run("stats", &rc0), "END\r\n");
    CHECK_STR(run("stats nosuch", &rc0), "ERROR no stats group 'nosuch'\r\n");
    stats_add_source("", src, NULL);
    CHECK_STR(run("hello world", &rc), "HELLO 2 world\r\n");
    CHECK_STR(run("HELLO", &rc), "HELLO 1 -\r\n");
    CHECK_STR(run("version", &rc), "VERSION testd 9.9\r\n");
    CHECK_STR(run("stats", &rc), "STAT things 7\r\nEND\r\n");
    CHECK_STR(run("set knob 9", &rc), "OK\r\n");
    CHECK_EQ_INT(knob, 9);
    CHECK(strncmp(run("set knob x", &rc), "ERROR", 5) == 0);
    CHECK_STR(run("show settings", &rc), "knob = 9  [live]\r\nEND\r\n");
    CHECK_STR(run("", &rc), "");
    CHECK_STR(run("nosuch thing", &rc), "ERROR unknown command 'nosuch'\r\n");
    CHECK_EQ_INT(rc, ADMIN_UNKNOWN);
    run("quit", &rc);
    CHECK_EQ_INT(rc, ADMIN_CLOSE);
    CHECK(strstr(run("help", &rc), "hello [x]") != NULL);
    admin_register(override);
    CHECK_STR(run("version", &rc), "MINE\r\n");
    admin_set_fallback(fb);
    CHECK_STR(run("CREATE POOL  web", &rc), "FALLBACK [CREATE POOL  web]\r\n");
    (void)fallback_seen;
}

int main(void)
{
    RUN(test_builtins_and_registered);
    return unit_done();
}
