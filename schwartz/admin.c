/* admin: schwartzd's console commands (the core adds help, stats, version,
 * show settings, set, shutdown). Runs on the console's loop thread and only
 * reads what is safe there: queue counts come from the periodic refresh. */
#include "schwartz/schwartzd.h"

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/stats.h"

static enum admin_result cmd_queues(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < sw.nqueues; i++)
        admin_printf(ctx, "%s ready %llu running %llu failed %llu\r\n", sw.queues[i].func,
                     (unsigned long long)sw.queues[i].ready, (unsigned long long)sw.queues[i].running,
                     (unsigned long long)sw.queues[i].failed);
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_workers(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    sw_sessions_admin_workers(ctx->out);
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_databases(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (int i = 0; i < sw_store_count(); i++) {
        struct sw_store *s = sw_store_get(i);
        struct sw_store_counters c;
        sw_store_get_counters(s, &c);
        /* the DSN carries no password (db-pass is separate), so it may be shown */
        admin_printf(ctx, "%d %s %s %s ops %llu commits %llu queued %llu\r\n", i, sw_store_hash(s),
                     sw_store_alive(s) ? "alive" : "dead", sw_store_dsn(s), (unsigned long long)c.ops,
                     (unsigned long long)c.commits, (unsigned long long)sw_store_queued(s));
    }
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

const struct admin_cmd sw_admin_cmds[] = {
    { "queues", "queues", "jobs per function: ready, running (leased), failed (error rows)", cmd_queues },
    { "workers", "workers", "connections that grabbed jobs", cmd_workers },
    { "databases", "databases", "job databases, their handle prefix and state", cmd_databases },
    { NULL, NULL, NULL, NULL },
};
