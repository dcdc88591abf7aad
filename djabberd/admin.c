/* admin: djabberd's console commands (on top of the core's help, stats,
 * show settings, set, shutdown): who is connected, sessions per vhost,
 * kick, reload, and the plugin chains. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <stdio.h>
#include <string.h>

#include "common/admin.h"
#include "common/conn.h"

static enum admin_result cmd_users(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc, (void)argv;
    size_t shown = 0;
    for (size_t b = 0; b < dj.nbuckets; b++)
        for (struct dj_user *u = dj.users[b]; u; u = u->hnext) {
            for (struct dj_sess *s = u->sessions; s; s = s->next_res) {
                char full[3 * DJ_JID_MAX + 3], peer[64];
                admin_printf(ctx, "%s %s %s%s\r\n", dj_sess_jid(s, full, sizeof full),
                             s->c ? conn_peer_str(s->c, peer, sizeof peer) : "-",
                             (s->flags & DJ_F_AVAILABLE) ? "available" : "unavailable",
                             s->c && conn_is_tls(s->c)   ? " tls"
                             : s->state == DJ_S_DETACHED ? " detached"
                                                         : "");
                if (++shown >= 10000) {
                    admin_printf(ctx, "... (first 10000 shown)\r\nEND\r\n");
                    return ADMIN_OK;
                }
            }
            /* sessions on other cluster nodes */
            for (struct dj_rsess *r = u->remote; r; r = r->next) {
                admin_printf(ctx, "%s/%s node:%s %s\r\n", u->bare, r->resource, r->node,
                             r->avail ? "available" : "unavailable");
                if (++shown >= 10000) {
                    admin_printf(ctx, "... (first 10000 shown)\r\nEND\r\n");
                    return ADMIN_OK;
                }
            }
        }
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_sessions(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc, (void)argv;
    for (int i = 0; i < dj.nvhosts; i++)
        admin_printf(ctx, "%s %llu\r\n", dj.vhosts[i].name, (unsigned long long)dj.per_vhost[i]);
    admin_printf(ctx, "connections %llu\r\n", (unsigned long long)dj.nsessions);
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_kick(struct admin_ctx *ctx, int argc, char **argv)
{
    if (argc != 2) {
        admin_printf(ctx, "ERROR usage: kick <jid>  (bare: every resource; full: one)\r\n");
        return ADMIN_OK;
    }
    struct dj_jid j;
    char bare[2 * DJ_JID_MAX + 2];
    if (dj_jid_parse(argv[1], &j) < 0 || !j.node[0]) {
        admin_printf(ctx, "ERROR bad jid\r\n");
        return ADMIN_OK;
    }
    struct dj_user *u = dj_user_get(dj_jid_bare(&j, bare, sizeof bare), false);
    int n = 0;
    if (u)
        u->pending++; /* ending a detached session may drop u */
    for (struct dj_sess *s = u ? u->sessions : NULL, *next; s; s = next) {
        next = s->next_res;
        if (j.resource[0] && strcmp(j.resource, s->resource))
            continue;
        dj_sess_kick(s, "kicked by the administrator");
        n++;
    }
    if (u) {
        u->pending--;
        dj_user_maybe_free(u);
    }
    admin_printf(ctx, "KICKED %d\r\n", n);
    return ADMIN_OK;
}

static enum admin_result cmd_reload(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc, (void)argv;
    char err[512];
    if (dj_users_file_load(dj.cfg.users_file, err, sizeof err) < 0)
        admin_printf(ctx, "ERROR %s\r\n", err);
    else
        admin_printf(ctx, "OK %zu accounts in users_file\r\n", dj_users_file_count());
    return ADMIN_OK;
}

static enum admin_result cmd_hooks(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc, (void)argv;
    char buf[512];
    for (int h = 0; h < DJ_HOOK_COUNT; h++)
        admin_printf(ctx, "%s: %s\r\n", dj_hook_name((enum dj_hook)h), dj_hook_chain((enum dj_hook)h, buf, sizeof buf));
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

const struct admin_cmd dj_admin_cmds[] = {
    { "users", "users", "connected resources: jid peer availability [tls]; node:NAME for other cluster nodes",
      cmd_users },
    { "sessions", "sessions", "bound sessions per vhost", cmd_sessions },
    { "kick", "kick <jid>", "end a user's sessions (bare jid: all resources)", cmd_kick },
    { "reload", "reload", "re-read users_file", cmd_reload },
    { "hooks", "hooks", "the plugin chain of every hook", cmd_hooks },
    { NULL, NULL, NULL, NULL },
};
