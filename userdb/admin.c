/* admin: userdbd's console commands — clusters (roles, weights, lag,
 * health), pools, per-user lookups, a/b flips, per-user read-only, reload.
 * Replies end with END, as the core's built-ins do. Commands that change
 * the global database send their statement and answer at once; the
 * result is logged. */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/log.h"

static void server_line(struct admin_ctx *ctx, const char *role, struct ud_server *s, bool active)
{
    bool dead = ud_server_dead(s);
    admin_printf(ctx, "  %-8s %-6s %s weight=%d conns=%d idle=%d waiting=%d%s%s", role, s->name, s->dsn_text, s->weight,
                 s->pool.nmembers, s->pool.nidle, s->pool.nwaiting, dead ? " DEAD" : "", active ? " ACTIVE" : "");
    if (s->role == UD_ROLE_REPLICA) {
        if (s->lag < 0)
            admin_printf(ctx, " lag=unknown");
        else
            admin_printf(ctx, " lag=%ds", s->lag);
    }
    admin_printf(ctx, "\r\n");
}

static enum admin_result cmd_clusters(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    if (!ud_topo)
        return ADMIN_OK;
    admin_printf(ctx, "global\r\n");
    server_line(ctx, "master", ud_topo->global, true);
    for (int i = 0; i < ud_topo->cluster[0].nreplicas; i++)
        server_line(ctx, "replica", ud_topo->cluster[0].replica[i], false);
    for (int c = 1; c <= UD_MAX_CLUSTERS; c++) {
        struct ud_cluster *cl = ud_cluster_get(c);
        if (!cl)
            continue;
        int w = 0;
        for (int i = 0; i < ud_topo->ndefaults; i++)
            if (ud_topo->def_cluster[i] == c)
                w = ud_topo->def_weight[i];
        admin_printf(ctx, "cluster %d%s new_user_weight=%d active=%c\r\n", c, cl->readonly ? " READONLY" : "", w,
                     'a' + cl->active);
        for (int i = 0; i < cl->nmasters; i++)
            server_line(ctx, i ? "master-b" : (cl->nmasters > 1 ? "master-a" : "master"), cl->master[i],
                        i == cl->active);
        for (int i = 0; i < cl->nreplicas; i++)
            server_line(ctx, "replica", cl->replica[i], false);
    }
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_pools(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all)
        admin_printf(ctx, "%s conns=%d idle=%d connecting=%d waiting=%d leases=%llu connects=%llu failures=%llu%s\r\n",
                     s->name, s->pool.nmembers, s->pool.nidle, s->pool.pending, s->pool.nwaiting,
                     (unsigned long long)s->n_leases, (unsigned long long)s->n_connects,
                     (unsigned long long)s->n_connect_fail, s->retired ? " RETIRED" : "");
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static int parse_uid(const char *s, uint32_t *out)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*s < '0' || *s > '9' || *end || v == 0 || v > 0xffffffffUL)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static void user_looked_up(void *arg, const struct ud_dir_entry *e, const char *err)
{
    uint32_t id = (uint32_t)(uintptr_t)arg;
    (void)e;
    if (err)
        log_warn("userdbd: console lookup of user %u: %s", id, err);
}

static enum admin_result cmd_user(struct admin_ctx *ctx, int argc, char **argv)
{
    uint32_t id;
    if (argc != 2 || parse_uid(argv[1], &id) < 0) {
        admin_printf(ctx, "ERROR usage: user USERID\r\n");
        return ADMIN_OK;
    }
    /* The console answers from the cache; a miss starts a lookup (the
     * console can't wait on the database), so asking again shows it. */
    ud_dir_invalidate(id);
    ud_dir_lookup(id, user_looked_up, (void *)(uintptr_t)id);
    admin_printf(ctx, "LOOKUP user %u sent; run `cached %u` to see it\r\nEND\r\n", id, id);
    return ADMIN_OK;
}

static enum admin_result cmd_cached(struct admin_ctx *ctx, int argc, char **argv)
{
    uint32_t id;
    if (argc != 2 || parse_uid(argv[1], &id) < 0) {
        admin_printf(ctx, "ERROR usage: cached USERID\r\n");
        return ADMIN_OK;
    }
    struct ud_dir_entry e;
    bool found = false;
    void ud_dir_peek(uint32_t id, struct ud_dir_entry * out, bool *found);
    ud_dir_peek(id, &e, &found);
    if (!found)
        admin_printf(ctx, "user %u not cached\r\n", id);
    else
        admin_printf(ctx, "user %u cluster %d readonly %d expires_in_ms %lld\r\n", id, e.cluster, e.readonly ? 1 : 0,
                     (long long)e.expires_ms - (long long)ud_now_ms());
    admin_printf(ctx, "END\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_flip(struct admin_ctx *ctx, int argc, char **argv)
{
    int c = argc == 2 ? atoi(argv[1]) : 0;
    struct ud_cluster *cl = ud_cluster_get(c);
    if (!cl) {
        admin_printf(ctx, "ERROR usage: flip CLUSTER (a configured cluster)\r\n");
        return ADMIN_OK;
    }
    if (cl->nmasters < 2) {
        admin_printf(ctx, "ERROR cluster %d has one master; flip needs an a/b pair\r\n", c);
        return ADMIN_OK;
    }
    ud_flip(c);
    admin_printf(ctx, "OK cluster %d active=%c\r\n", c, 'a' + cl->active);
    return ADMIN_OK;
}

static void readonly_done(struct ud_iq *q)
{
    uint32_t id = (uint32_t)(uintptr_t)q->arg;
    if (q->error)
        log_error("userdbd: readonly for user %u: %s", id, q->err);
    else
        log_info("userdbd: user %u read-only flag changed (%llu row)", id, (unsigned long long)q->affected);
    ud_dir_invalidate(id);
}

static enum admin_result cmd_readonly(struct admin_ctx *ctx, int argc, char **argv)
{
    uint32_t id;
    bool on;
    if (argc != 3 || parse_uid(argv[1], &id) < 0 || cfg_parse_bool(argv[2], &on) < 0) {
        admin_printf(ctx, "ERROR usage: readonly USERID on|off\r\n");
        return ADMIN_OK;
    }
    char sql[128];
    snprintf(sql, sizeof sql, "UPDATE user SET readonly = %d WHERE userid = %u", on ? 1 : 0, id);
    ud_dir_invalidate(id);
    if (ud_iq_run(ud_topo->global, sql, readonly_done, (void *)(uintptr_t)id) < 0) {
        admin_printf(ctx, "ERROR out of memory\r\n");
        return ADMIN_OK;
    }
    admin_printf(ctx, "OK user %u readonly %s (sent to the global database)\r\n", id, on ? "on" : "off");
    return ADMIN_OK;
}

static enum admin_result cmd_reload(struct admin_ctx *ctx, int argc, char **argv)
{
    (void)argc;
    (void)argv;
    char err[300];
    if (ud_reload(err, sizeof err) < 0)
        admin_printf(ctx, "ERROR %s\r\n", err);
    else
        admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

static enum admin_result cmd_invalidate(struct admin_ctx *ctx, int argc, char **argv)
{
    uint32_t id;
    if (argc == 2 && !strcmp(argv[1], "all")) {
        ud_dir_clear();
        admin_printf(ctx, "OK\r\n");
        return ADMIN_OK;
    }
    if (argc != 2 || parse_uid(argv[1], &id) < 0) {
        admin_printf(ctx, "ERROR usage: invalidate USERID|all\r\n");
        return ADMIN_OK;
    }
    ud_dir_invalidate(id);
    admin_printf(ctx, "OK\r\n");
    return ADMIN_OK;
}

const struct admin_cmd ud_admin_cmds[] = {
    { "clusters", "clusters", "clusters, roles, weights, replication lag, health", cmd_clusters },
    { "pools", "pools", "backend connection pools per server", cmd_pools },
    { "user", "user USERID", "look a user up in the global database (refreshes the cache)", cmd_user },
    { "cached", "cached USERID", "what the directory cache holds for a user", cmd_cached },
    { "invalidate", "invalidate USERID|all", "drop cached directory entries", cmd_invalidate },
    { "flip", "flip CLUSTER", "switch a cluster's a/b masters", cmd_flip },
    { "readonly", "readonly USERID on|off", "set or clear a user's read-only flag", cmd_readonly },
    { "reload", "reload", "re-read the config file (topology, live settings)", cmd_reload },
    { NULL, NULL, NULL, NULL },
};

void ud_admin_install(void) { /* daemon_main registers ud_admin_cmds from the descriptor. */ }
