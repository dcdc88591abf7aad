/* userdbd: the user-cluster database router — settings, start-up wiring,
 * stats and reload. Sessions are in session.c, backend connections and
 * pools in backend.c, the server topology in topology.c, the user
 * directory and counters in directory.c, console commands in admin.c. */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

struct ud_settings ud_cfg;
struct ud_counters ud_n;
char *ud_client_password;
char *ud_backend_password;
char ud_server_version[96] = UD_SERVER_VERSION;

uint64_t ud_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* topology.c / directory.c */
int ud_stage_global(const char *v, char *err, size_t errlen);
int ud_stage_master(int c, const char *v, char *err, size_t errlen);
int ud_stage_replica(int c, const char *v, char *err, size_t errlen);
int ud_stage_readonly(int c, bool v);
int ud_stage_defaults(const char *v, char *err, size_t errlen);
int ud_stage_user_table(const char *v, char *err, size_t errlen);
void ud_stage_reset(void);
int ud_counter_source_add(const char *v, char *err, size_t errlen);
void ud_counter_sources_reset(void);
int ud_lag_monitor_start(void);
void ud_lag_monitor_stop(void);

/* ---- settings --------------------------------------------------------------------- */

static int set_secret(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)err;
    (void)errlen;
    char **p = s->ptr;
    free(*p);
    *p = strdup(value ? value : "");
    return 0;
}

static int set_global(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    return ud_stage_global(v ? v : "", err, errlen);
}

static int set_global_replica(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    return ud_stage_replica(0, v ? v : "", err, errlen);
}

static int set_defaults(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    return ud_stage_defaults(v ? v : "", err, errlen);
}

static int set_user_table(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    return ud_stage_user_table(v ? v : "", err, errlen);
}

static bool sources_fresh = true;
static int set_counter_source(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    (void)s;
    if (sources_fresh) {
        ud_counter_sources_reset();
        sources_fresh = false;
    }
    return ud_counter_source_add(v ? v : "", err, errlen);
}

static int set_cluster_key(const struct cfg_setting *s, const char *v, char *err, size_t errlen)
{
    int c = 0;
    char kind[16] = "";
    if (sscanf(s->name, "cluster.%d.%15s", &c, kind) != 2)
        return -1;
    if (!strcmp(kind, "master"))
        return ud_stage_master(c, v ? v : "", err, errlen);
    if (!strcmp(kind, "replica"))
        return ud_stage_replica(c, v ? v : "", err, errlen);
    bool b = true;
    if (v && cfg_parse_bool(v, &b) < 0) {
        snprintf(err, errlen, "%s: '%s' is not yes/no", s->name, v);
        return -1;
    }
    return ud_stage_readonly(c, b);
}

static const struct cfg_setting ud_base_settings[] = {
    LOG_VERBOSE_SETTING,
    { "config", 'c', CFG_STRING, &core_opts.config_file, NULL, "read settings from this file (key = value)", false,
      NULL },
    { "listen", 'l', CFG_STRING, &ud_cfg.listen, "127.0.0.1:7010",
      "MySQL-protocol listen address (host:port, unix:/path)", false, NULL },
    { "console", 0, CFG_STRING, &core_opts.admin_listen, NULL, "telnet console listen address (loopback unless given)",
      false, NULL },
    { "client_user", 0, CFG_STRING, &ud_cfg.client_user, "userdb", "user name applications log in with", true, NULL },
    { "client_password", 0, CFG_CUSTOM, &ud_client_password, NULL,
      "password applications log in with (mysql_native_password; never shown)", true, set_secret, true },
    { "backend_user", 0, CFG_STRING, &ud_cfg.backend_user, "root", "user userdbd logs in to MariaDB with", false,
      NULL },
    { "backend_password", 0, CFG_CUSTOM, &ud_backend_password, NULL, "its password (never shown)", false, set_secret,
      true },
    { "global", 0, CFG_CUSTOM, NULL, NULL,
      "the global database DSN: DBI:mysql:database=D;host=H;port=P or ;mysql_socket=S", true, set_global },
    { "global_replica", 0, CFG_CUSTOM, NULL, NULL,
      "a replica of the global database for un-hinted reads, ;weight=W (repeatable)", true, set_global_replica },
    { "default_clusters", 0, CFG_CUSTOM, NULL, NULL, "clusters new users go to, weighted: 1,2 or 1:3,2:1", true,
      set_defaults },
    { "user_table", 0, CFG_CUSTOM, NULL, NULL, "TABLE:COLUMN of a per-user table the mover copies (repeatable)", true,
      set_user_table },
    { "counter_source", 0, CFG_CUSTOM, NULL, NULL,
      "AREA:TABLE:COLUMN: a missing counter starts after MAX(COLUMN) of the user's rows in TABLE (repeatable)", true,
      set_counter_source },
    { "max_lag", 0, CFG_INT, &ud_cfg.max_lag, "5", "seconds a replica may lag and still serve reads", true, NULL },
    { "pool_max", 0, CFG_INT, &ud_cfg.pool_max, "32", "most backend connections per server", true, NULL },
    { "max_waiters", 0, CFG_INT, &ud_cfg.max_waiters, "10000",
      "most statements waiting for a connection per server; beyond, an error", true, NULL },
    { "directory_ttl", 0, CFG_DOUBLE, &ud_cfg.directory_ttl, "2",
      "seconds a user's cluster and read-only flag are cached (the mover waits this long)", true, NULL },
    { "directory_cache", 0, CFG_INT, &ud_cfg.dir_cache_max, "1000000", "most users cached", false, NULL },
    { "dead_retry", 0, CFG_DOUBLE, &ud_cfg.dead_retry, "2", "seconds a server that refused a connection is skipped",
      true, NULL },
    { "connect_timeout", 0, CFG_INT, &ud_cfg.connect_timeout_ms, "2000", "milliseconds to connect to a backend", true,
      NULL },
    { "max_packet", 0, CFG_SIZE, &ud_cfg.max_packet, "16m",
      "largest command packet accepted from a client (16m - 1 at most)", true, NULL },
    { "max_conns", 0, CFG_INT, &ud_cfg.max_conns, "0", "most client connections (0 = unlimited)", false, NULL },
    { "login_timeout", 0, CFG_INT, &ud_cfg.login_timeout, "10",
      "close a client that has not logged in after this many seconds", true, NULL },
    { "idle_timeout", 0, CFG_INT, &ud_cfg.idle_timeout, "0",
      "close client connections idle this many seconds (0 = never)", true, NULL },
    CFG_END
};

static struct cfg_setting *ud_settings_table;

static int build_settings(void)
{
    size_t nbase = sizeof ud_base_settings / sizeof ud_base_settings[0] - 1;
    size_t n = nbase + 3 * UD_MAX_CLUSTERS + 1;
    ud_settings_table = calloc(n, sizeof *ud_settings_table);
    if (!ud_settings_table)
        return -1;
    memcpy(ud_settings_table, ud_base_settings, nbase * sizeof *ud_settings_table);
    static const char *const kinds[3] = { "master", "replica", "readonly" };
    static const char *const helps[3] = { "a master DSN of cluster N (twice for an a/b pair)",
                                          "a replica DSN of cluster N, ;weight=W (repeatable)",
                                          "cluster N refuses writes" };
    size_t k = nbase;
    for (int c = 1; c <= UD_MAX_CLUSTERS; c++)
        for (int i = 0; i < 3; i++) {
            char name[40];
            snprintf(name, sizeof name, "cluster.%d.%s", c, kinds[i]);
            ud_settings_table[k++] = (struct cfg_setting){ strdup(name),           0,    CFG_CUSTOM,     NULL, NULL,
                                                           c == 1 ? helps[i] : "", true, set_cluster_key };
        }
    return 0;
}

/* ---- stats ------------------------------------------------------------------------ */

static void ud_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "sessions", ud_n.sessions);
    stats_u64(sink, "sessions_total", ud_n.sessions_total);
    stats_u64(sink, "auth_failures", ud_n.auth_failures);
    stats_u64(sink, "queries", ud_n.queries);
    stats_u64(sink, "queries_hinted", ud_n.queries_hinted);
    stats_u64(sink, "queries_read", ud_n.queries_read);
    stats_u64(sink, "queries_write", ud_n.queries_write);
    stats_u64(sink, "queries_replica", ud_n.queries_replica);
    stats_u64(sink, "errors_sent", ud_n.errors_sent);
    stats_u64(sink, "readonly_refused", ud_n.readonly_refused);
    stats_u64(sink, "route_refreshes", ud_n.route_refreshes);
    stats_u64(sink, "protocol_errors", ud_n.protocol_errors);
    stats_u64(sink, "pinned_sessions", ud_n.pinned_sessions);
    stats_u64(sink, "users_created", ud_n.users_created);
    stats_u64(sink, "counters_issued", ud_n.counters_issued);
    stats_u64(sink, "directory_hits", ud_n.dir_hits);
    stats_u64(sink, "directory_misses", ud_n.dir_misses);
    stats_u64(sink, "directory_cached", ud_dir_size());
    stats_u64(sink, "backend_lost", ud_n.backend_lost);
    uint64_t conns = 0, idle = 0, waiting = 0;
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all) {
        conns += (uint64_t)s->pool.nmembers;
        idle += (uint64_t)s->pool.nidle;
        waiting += (uint64_t)s->pool.nwaiting;
    }
    stats_u64(sink, "backend_connections", conns);
    stats_u64(sink, "backend_idle", idle);
    stats_u64(sink, "backend_waiting", waiting);
}

/* Per server: `stats pools`. */
static void ud_pool_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all) {
        if (s->retired)
            continue;
        stats_u64f(sink, (uint64_t)s->pool.nmembers, "%s:connections", s->name);
        stats_u64f(sink, (uint64_t)s->pool.nidle, "%s:idle", s->name);
        stats_u64f(sink, (uint64_t)s->pool.nwaiting, "%s:waiting", s->name);
        stats_u64f(sink, s->n_routed, "%s:statements", s->name);
        stats_u64f(sink, s->n_leases, "%s:leases", s->name);
        stats_u64f(sink, s->n_connects, "%s:connects", s->name);
        stats_u64f(sink, s->n_connect_fail, "%s:connect_failures", s->name);
        stats_u64f(sink, s->n_wait_full, "%s:waiters_refused", s->name);
    }
}

/* ---- life cycle ------------------------------------------------------------------- */

int ud_reload(char *err, size_t errlen)
{
    sources_fresh = true;
    ud_stage_reset();
    if (cfg_reload(daemon_settings(), err, errlen) < 0)
        return -1;
    return ud_topology_apply(err, errlen);
}

static void ud_on_reload(void)
{
    /* The core re-read the file's live settings into the stage already. */
    char err[300];
    if (ud_topology_apply(err, sizeof err) < 0)
        log_error("userdbd: reload: %s (keeping the running topology)", err);
    else
        log_info("userdbd: reloaded the topology");
    sources_fresh = true;
}

static int ud_init(void)
{
    char err[300];
    sources_fresh = true;
    if (ud_cfg.max_packet >= UD_MAX_PAYLOAD)
        ud_cfg.max_packet = UD_MAX_PAYLOAD - 1;
    if (ud_cfg.pool_max < 1)
        ud_cfg.pool_max = 1;
    if (ud_topology_apply(err, sizeof err) < 0) {
        log_error("userdbd: %s", err);
        return -1;
    }
    /* Start-up may block: the directory tables are created before the
     * port opens, so a client never meets a half-made global database. */
    if (ud_dir_create_schema(err, sizeof err) < 0) {
        log_error("userdbd: %s", err);
        return -1;
    }
    stats_add_source("", ud_stats, NULL);
    stats_add_source("pools", ud_pool_stats, NULL);
    ud_admin_install();
    struct listen_opts lo = { .single_loop = true };
    if (!listen_open(ud_cfg.listen, UD_DEFAULT_PORT, &lo, ud_accept, ud_reject, NULL, err, sizeof err)) {
        log_error("userdbd: cannot listen on %s: %s", ud_cfg.listen, err);
        return -1;
    }
    if (ud_cfg.max_conns > 0)
        listen_set_max_conns((uint64_t)ud_cfg.max_conns);
    if (ud_lag_monitor_start() < 0)
        return -1;
    log_info("userdbd: listening on %s", ud_cfg.listen);
    return 0;
}

static void ud_stop(void)
{
    ud_lag_monitor_stop();
    listen_close_all();
    /* Idle backend connections would keep the loop from ending. */
    for (struct ud_server *s = ud_all_servers; s; s = s->next_all)
        ud_pool_close_idle(s);
}

static void ud_fini(void) { ud_topology_free(); }

extern const struct admin_cmd ud_admin_cmds[];

int main(int argc, char **argv)
{
    if (build_settings() < 0)
        return 1;
    struct daemon_desc desc = {
        .name = "userdbd",
        .version = UD_VERSION,
        .settings = ud_settings_table,
        .threads = NULL, /* one loop: README "Threading" */
        .default_admin_port = 7011,
        .init = ud_init,
        .fini = ud_fini,
        .admin_cmds = ud_admin_cmds,
        .hooks = { .on_stop = ud_stop, .on_reload = ud_on_reload },
    };
    return daemon_main(&desc, argc, argv);
}
