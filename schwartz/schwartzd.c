/* schwartzd: TheSchwartz as a daemon — the settings table, start-up wiring
 * (stores, listener, queue-count timer) and the stats source. The protocol
 * is in proto_sw.c / session.c / cmd_sw.c, the databases in store.c, the
 * console commands in admin.c. */
#include "schwartz/schwartzd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/db.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

struct sw_state sw;

static char **dsns;
static int ndsns;

/* database = DSN, repeatable: each one is a job database. */
static int add_database(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    if (ndsns == SW_MAX_DBS) {
        snprintf(err, errlen, "at most %d databases", SW_MAX_DBS);
        return -1;
    }
    struct db_config d = { 0 };
    if (sw_dsn_config(value, &d, err, errlen) < 0)
        return -1;
    db_config_clear(&d);
    char **n = realloc(dsns, (size_t)(ndsns + 1) * sizeof *n);
    if (!n || !(n[ndsns] = strdup(value))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    dsns = n;
    ndsns++;
    return 0;
}

/* db-pass is kept out of the settings' text forms: a custom setting shows
 * only its (empty) default in --help, `show settings` and the console. */
static int set_db_pass(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    free(sw.cfg.db_pass);
    sw.cfg.db_pass = strdup(value);
    return sw.cfg.db_pass ? 0 : -1;
}

static int add_policy(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    return sw_policy_parse(value, err, errlen);
}

static const struct cfg_setting sw_settings_table[] = {
    LOG_VERBOSE_SETTING,
    { "config", 'c', CFG_STRING, &core_opts.config_file, NULL, "read settings from this file (key = value)", false,
      NULL },
    { "listen", 'l', CFG_STRING, &sw.cfg.listen, "127.0.0.1:7003", "address for the job protocol (IP:PORT)", false,
      NULL },
    { "console", 0, CFG_STRING, &core_opts.admin_listen, NULL, "telnet console address (IP:PORT); empty = off", false,
      NULL },
    { "database", 'd', CFG_CUSTOM, NULL, NULL,
      "job database DSN, repeatable: dbi:SQLite:dbname=FILE or dbi:mysql:database=D;host=H;port=P[;mysql_socket=S] "
      "(default dbi:SQLite:dbname=schwartzd.sqlite)",
      false, add_database },
    { "db-user", 0, CFG_STRING, &sw.cfg.db_user, "", "database user (MySQL)", false, NULL },
    { "db-pass", 0, CFG_CUSTOM, NULL, NULL, "database password (MySQL); never shown", false, set_db_pass, true },
    { "policy", 0, CFG_CUSTOM, NULL, NULL,
      "retry policy of a function, repeatable: FUNC max_retries=N retry_delay=S keep_exit_status_for=S", false,
      add_policy },
    { "batch-size", 0, CFG_INT, &sw.cfg.batch_size, "50",
      "most candidates a grab selects per function (TheSchwartz's batch_size)", true, NULL },
    { "max-arg-size", 0, CFG_SIZE, &sw.cfg.max_arg, "16m", "largest job argument (MEDIUMBLOB holds 16 MiB)", true,
      NULL },
    { "retry-seconds", 0, CFG_INT, &sw.cfg.retry_seconds, "30", "a failed database is skipped this long before a retry",
      true, NULL },
    { "group-max", 0, CFG_INT, &sw.cfg.group_max, "512",
      "most requests sharing one transaction (group commit); read at start", false, NULL },
    { "db-connections", 0, CFG_INT, &sw.cfg.db_connections, "4",
      "connections (each its own thread) per MySQL database; SQLite always uses one", false, NULL },
    { "max-conns", 0, CFG_INT, &sw.cfg.max_conns, "4096", "most client connections (0 = unlimited)", false, NULL },
    { "idle-timeout", 0, CFG_INT, &sw.cfg.idle_timeout, "0", "close connections idle this many seconds (0 = never)",
      true, NULL },
    { "queue-refresh", 0, CFG_INT, &sw.cfg.queue_refresh, "5",
      "seconds between queue counts for the console and metrics (0 = off)", false, NULL },
    { "test-fault", 0, CFG_STRING, &sw.cfg.test_fault, NULL, "tests only: make 'replace_with' fail before its commit",
      true, NULL },
    CFG_END
};

/* ---- stats ---------------------------------------------------------------------- */

static bool metric_name_ok(const char *s)
{
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return false;
    return true;
}

static void sw_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "sessions", sw.sessions);
    stats_u64(sink, "jobs_inserted", stats_counter_get(&sw.n.inserts));
    stats_u64(sink, "grabs", stats_counter_get(&sw.n.grabs));
    stats_u64(sink, "jobs_grabbed", stats_counter_get(&sw.n.grabbed));
    stats_u64(sink, "jobs_completed", stats_counter_get(&sw.n.completed));
    stats_u64(sink, "jobs_failed", stats_counter_get(&sw.n.failed));
    stats_u64(sink, "jobs_retried", stats_counter_get(&sw.n.retried));
    stats_u64(sink, "jobs_declined", stats_counter_get(&sw.n.declined));
    stats_u64(sink, "jobs_replaced", stats_counter_get(&sw.n.replaced));
    stats_u64(sink, "duplicates", stats_counter_get(&sw.n.duplicates));
    stats_u64(sink, "db_failovers", stats_counter_get(&sw.n.db_failovers));
    stats_u64(sink, "errors_sent", stats_counter_get(&sw.n.errors_sent));
    stats_hist_emit(sink, "insert_latency", &sw.insert_latency);
    stats_u64(sink, "databases", (uint64_t)sw_store_count());
    for (int i = 0; i < sw_store_count(); i++) {
        struct sw_store *st = sw_store_get(i);
        struct sw_store_counters c;
        sw_store_get_counters(st, &c);
        stats_u64f(sink, sw_store_alive(st), "db%d_alive", i);
        stats_u64f(sink, c.ops, "db%d_ops", i);
        stats_u64f(sink, c.commits, "db%d_commits", i);
        stats_u64f(sink, c.rollbacks, "db%d_rollbacks", i);
        stats_u64f(sink, c.errors, "db%d_errors", i);
        stats_u64f(sink, c.reconnects, "db%d_connects", i);
        stats_u64f(sink, c.retries, "db%d_txn_reruns", i);
        stats_u64f(sink, sw_store_queued(st), "db%d_queued", i);
    }
    for (int i = 0; i < sw.nqueues; i++) {
        if (!metric_name_ok(sw.queues[i].func))
            continue;
        stats_u64f(sink, sw.queues[i].ready, "queue_%s_ready", sw.queues[i].func);
        stats_u64f(sink, sw.queues[i].running, "queue_%s_running", sw.queues[i].func);
        stats_u64f(sink, sw.queues[i].failed, "queue_%s_failed", sw.queues[i].func);
    }
}

/* ---- life cycle ---------------------------------------------------------------------- */

static void sw_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "ERR DB_ERROR too many connections\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

static int sw_init(void)
{
    if (sw.cfg.batch_size < 1)
        sw.cfg.batch_size = 1;
    if (sw.cfg.group_max < 1)
        sw.cfg.group_max = 1;
    if (sw.cfg.retry_seconds < 1)
        sw.cfg.retry_seconds = 1;
    if (ndsns == 0 && add_database(NULL, "dbi:SQLite:dbname=schwartzd.sqlite", (char[64]){ 0 }, 64) < 0)
        return -1;
    stats_add_source("", sw_stats, NULL);
    if (sw_stores_open(dsns, ndsns, sw.cfg.db_user, sw.cfg.db_pass) < 0)
        return -1;
    char err[256];
    struct listen_opts lo = { .backlog = 1024, .single_loop = true };
    if (!listen_open(sw.cfg.listen, SW_DEFAULT_PORT, &lo, sw_accept, sw_reject, NULL, err, sizeof err)) {
        log_error("schwartzd: cannot listen on %s: %s", sw.cfg.listen, err);
        return -1;
    }
    if (sw.cfg.max_conns > 0)
        listen_set_max_conns((uint64_t)sw.cfg.max_conns);
    sw_queues_refresh_start();
    log_info("schwartzd: listening on %s, %d database(s)", sw.cfg.listen, ndsns);
    return 0;
}

static void sw_stopping(void) { sw_queues_refresh_stop(); }

static void sw_fini(void)
{
    sw_stores_close();
    for (int i = 0; i < ndsns; i++)
        free(dsns[i]);
    free(dsns);
    dsns = NULL;
    ndsns = 0;
    for (int i = 0; i < sw.nqueues; i++)
        free(sw.queues[i].func);
    free(sw.queues);
    sw.queues = NULL;
    sw.nqueues = 0;
    free(sw.cfg.db_pass);
    sw.cfg.db_pass = NULL;
}

int main(int argc, char **argv)
{
    static const struct daemon_desc desc = {
        .name = "schwartzd",
        .version = SW_VERSION,
        .settings = sw_settings_table,
        .threads = NULL, /* sessions on one loop; the databases have their own threads */
        .default_admin_port = 7004,
        .init = sw_init,
        .fini = sw_fini,
        .admin_cmds = sw_admin_cmds,
        .hooks = { .on_stop = sw_stopping },
    };
    return daemon_main(&desc, argc, argv);
}
