/* admin: gearmand's console commands — gearmand 1.1's admin text commands
 * (run by cmd_text.c) registered on the core console, and the console's
 * `show settings` with secrets redacted. */
#include "gearmand/gearmand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/log.h"
#include "common/loop.h"

/* ---- the same commands on the core console -------------------------------- */

/* `show settings`: the core's, secrets (mysql-password) flagged in the
 * settings table and redacted there. */
static void show_settings(struct evbuffer *out) { cfg_show(daemon_settings(), out); }

static enum admin_result console_cmd(struct admin_ctx *ctx, int argc, char **argv)
{
    if (argc >= 2 && !strcasecmp(argv[0], "show") && !strcasecmp(argv[1], "settings")) {
        show_settings(ctx->out);
        return ADMIN_OK;
    }
    struct gm_text t;
    gm_text_classify(argc, argv, &t);
    gm_lock();
    bool ran = gm_text_run(ctx->out, &t, argc, argv);
    gm_unlock();
    if (ran)
        return ADMIN_OK;
    gm_text_unknown(ctx->out, argc > 0 ? argv[0] : "");
    return ADMIN_UNKNOWN;
}

static enum admin_result fallback(struct admin_ctx *ctx, char *line, size_t len)
{
    char *tok[2];
    int n = gm_text_split(line, len, tok, 2);
    gm_text_unknown(ctx->out, n > 0 ? tok[0] : "");
    return ADMIN_UNKNOWN;
}

const struct admin_cmd gm_admin_cmds[] = {
    { "workers", "workers", "connections: fd ip client-id : functions", console_cmd },
    { "status", "status", "function\\ttotal\\trunning\\tavailable_workers", console_cmd },
    { "prioritystatus", "prioritystatus", "function\\thigh\\tnormal\\tlow\\tworkers", console_cmd },
    { "maxqueue", "maxqueue FUNC [N | HIGH NORMAL LOW]", "limit queued jobs of a function (<= 0 = unlimited)",
      console_cmd },
    { "version", "version", "server version", console_cmd },
    { "getpid", "getpid", "server process id", console_cmd },
    { "verbose", "verbose", "current log level", console_cmd },
    { "show", "show jobs | show unique jobs | show settings", "list jobs, unique keys or settings", console_cmd },
    { "cancel", "cancel job HANDLE", "remove a job that is not running", console_cmd },
    { "create", "create function NAME", "register a function name", console_cmd },
    { "drop", "drop function NAME", "remove a function with no jobs and no workers", console_cmd },
    { "shutdown", "shutdown [graceful]", "stop the server (graceful: let running jobs finish)", console_cmd },
    { NULL, NULL, NULL, NULL },
};

void gm_admin_install(void) { admin_set_fallback(fallback); }
