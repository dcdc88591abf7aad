/* admin: the console's command table, its built-in commands and its
 * telnet listener. Commands run on the loop that owns the console
 * connection; a command that needs another thread's data must take it
 * through that module's own thread-safe accessors. */
#include "common/admin.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/config.h"
#include "common/conn.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

#define ADMIN_MAX_TABLES 32
#define ADMIN_MAX_ARGS 64
#define ADMIN_MAX_LINE 8192

static const struct admin_cmd *tables[ADMIN_MAX_TABLES];
static int ntables;
static admin_fallback_fn fallback;
static const char *prog_name = "core";
static const char *prog_version = "";
static const struct cfg_setting *const *settings;

void admin_register(const struct admin_cmd *cmds)
{
    if (ntables < ADMIN_MAX_TABLES)
        tables[ntables++] = cmds;
    else
        log_error("admin: too many command tables");
}

void admin_set_fallback(admin_fallback_fn fn) { fallback = fn; }

void admin_set_info(const char *progname, const char *version, const struct cfg_setting *const *t)
{
    prog_name = progname;
    prog_version = version;
    settings = t;
}

void admin_printf(struct admin_ctx *ctx, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(ctx->out, fmt, ap);
    va_end(ap);
}

/* Later tables win, so a daemon can replace a built-in. */
static const struct admin_cmd *find(const char *name)
{
    for (int t = ntables - 1; t >= 0; t--)
        for (const struct admin_cmd *c = tables[t]; c->name; c++)
            if (strcasecmp(c->name, name) == 0)
                return c;
    return NULL;
}

static enum admin_result cmd_help(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* Each name once, newest definition. */
    for (int t = 0; t < ntables; t++)
        for (const struct admin_cmd *c = tables[t]; c->name; c++)
            if (find(c->name) == c)
                admin_printf(ctx, "%-28s %s\r\n", c->usage ? c->usage : c->name, c->help ? c->help : "");
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_stats(struct admin_ctx *ctx, int argc, char **argv)
{
    const char *group = argc > 1 ? argv[1] : "";
    if (stats_render_text(ctx->out, group) < 0) {
        if (*group)
            admin_printf(ctx, "ERROR no stats group '%s'\r\n", group);
        else
            admin_printf(ctx, "END\r\n"); /* nothing registered yet: an empty list */
        return ADMIN_OK;
    }
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_version(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    admin_printf(ctx, "VERSION %s %s\r\n", prog_name, prog_version);
    return ADMIN_OK;
}

static enum admin_result cmd_quit(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)ctx;
    (void)argc;
    (void)argv;
    return ADMIN_CLOSE;
}

static enum admin_result cmd_shutdown(struct admin_ctx *ctx, int argc, char **argv)
{
    bool graceful = argc > 1 && strcasecmp(argv[1], "graceful") == 0;
    if (argc > 1 && !graceful) {
        admin_printf(ctx, "ERROR usage: shutdown [graceful]\r\n");
        return ADMIN_OK;
    }
    admin_printf(ctx, "OK\r\n");
    if (!graceful)
        loop_set_grace(0);
    loop_request_stop();
    return ADMIN_OK;
}

static enum admin_result cmd_show(struct admin_ctx *ctx, int argc, char **argv)
{
    if (argc == 2 && strcasecmp(argv[1], "settings") == 0 && settings) {
        cfg_show(settings, ctx->out);
        admin_printf(ctx, "END\r\n");
    } else {
        admin_printf(ctx, "ERROR usage: show settings\r\n");
    }
    return ADMIN_OK;
}

static enum admin_result cmd_set(struct admin_ctx *ctx, int argc, char **argv)
{
    char err[256];
    if (argc != 3 || !settings) {
        admin_printf(ctx, "ERROR usage: set <name> <value>\r\n");
        return ADMIN_OK;
    }
    if (cfg_set(settings, argv[1], argv[2], true, err, sizeof(err)) < 0) {
        admin_printf(ctx, "ERROR %s\r\n", err);
        return ADMIN_OK;
    }
    if (strcasecmp(argv[1], "log-level") == 0 || strcasecmp(argv[1], "log_level") == 0) {
        int lvl = log_level_parse(argv[2]);
        if (lvl >= 0)
            log_set_level((enum log_level)lvl);
    }
    admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_loglevel(struct admin_ctx *ctx, int argc, char **argv)
{
    static const char *const names[] = { "error", "warn", "info", "debug", "trace" };
    if (argc == 1) {
        admin_printf(ctx, "LOGLEVEL %s\r\n", names[log_get_level()]);
        return ADMIN_OK;
    }
    int lvl = log_level_parse(argv[1]);
    if (argc != 2 || lvl < 0) {
        admin_printf(ctx, "ERROR usage: loglevel [error|warn|info|debug|trace]\r\n");
        return ADMIN_OK;
    }
    log_set_level((enum log_level)lvl);
    admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

static const struct admin_cmd builtins[] = {
    { "help", "help", "list the commands", cmd_help },
    { "stats", "stats [group]", "show statistics", cmd_stats },
    { "version", "version", "show the version", cmd_version },
    { "show", "show settings", "show every setting and its value", cmd_show },
    { "set", "set <name> <value>", "change a live setting", cmd_set },
    { "loglevel", "loglevel [level]", "show or change the log level", cmd_loglevel },
    { "shutdown", "shutdown [graceful]", "stop the daemon (graceful: let requests finish)", cmd_shutdown },
    { "quit", "quit", "close this connection", cmd_quit },
    { NULL, NULL, NULL, NULL },
};

static bool builtins_registered;

static void ensure_builtins(void)
{
    if (builtins_registered)
        return;
    builtins_registered = true;
    /* Built-ins go first so that anything registered later replaces them. */
    memmove(&tables[1], &tables[0], (size_t)ntables * sizeof(tables[0]));
    tables[0] = builtins;
    ntables++;
}

enum admin_result admin_exec(struct admin_ctx *ctx, char *line, size_t len)
{
    ensure_builtins();
    char *argv[ADMIN_MAX_ARGS];
    char *copy = NULL;
    if (fallback) {
        /* The fallback wants the line untouched by the tokeniser. */
        copy = malloc(len + 1);
        if (!copy)
            return ADMIN_OK;
        memcpy(copy, line, len);
        copy[len] = '\0';
    }
    int argc = line_split(line, len, argv, ADMIN_MAX_ARGS);
    enum admin_result rc = ADMIN_OK;
    if (argc == 0) {
        rc = ADMIN_OK;
    } else {
        const struct admin_cmd *cmd = argc > 0 ? find(argv[0]) : NULL;
        if (cmd) {
            rc = cmd->fn(ctx, argc, argv);
        } else if (fallback) {
            rc = fallback(ctx, copy, len);
        } else {
            admin_printf(ctx, "ERROR unknown command '%.64s'\r\n", argc > 0 ? argv[0] : "");
            rc = ADMIN_UNKNOWN;
        }
    }
    free(copy);
    return rc;
}

/* The console connection. */

static int console_read(struct core_conn *c)
{
    struct admin_ctx *ctx = c->data;
    struct evbuffer *in = conn_in(c);
    for (;;) {
        size_t len, used;
        enum line_status st;
        char *line = line_peek(in, ADMIN_MAX_LINE, &len, &used, &st);
        if (st == LINE_NEED_MORE)
            return 0;
        if (st == LINE_TOO_LONG) {
            admin_printf(ctx, "ERROR line too long\r\n");
            conn_close_after_write(c);
            return 0;
        }
        /* Telnet option bytes (IAC ...) are not commands. */
        size_t start = 0;
        while (start < len && (unsigned char)line[start] >= 0xf0)
            start++;
        enum admin_result rc = admin_exec(ctx, line + start, len - start);
        evbuffer_drain(in, used);
        if (rc == ADMIN_CLOSE) {
            conn_close_after_write(c);
            return 0;
        }
    }
}

static void console_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    free(c->data);
}

static const struct conn_ops console_ops = { .name = "admin", .on_read = console_read, .on_close = console_close };

static void console_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct admin_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &console_ops, ctx);
    if (!c) {
        free(ctx);
        return;
    }
    ctx->conn = c;
    ctx->out = conn_out(c);
    conn_set_output_limit(c, 4 << 20);
}

int admin_listen(const char *spec, int default_port, char *err, size_t errlen)
{
    ensure_builtins();
    struct listen_opts o = { .single_loop = true, .is_admin = true, .loopback_default = true };
    return listen_open(spec, default_port, &o, console_accept, NULL, NULL, err, errlen) ? 0 : -1;
}
