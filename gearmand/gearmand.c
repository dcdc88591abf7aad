/* gearmand: the Gearman job server's main() — the settings table, start-up
 * wiring (state, durable store, listener, console) and the stats source.
 * Connections are session.c's, packets cmd_bin.c's, admin text lines
 * cmd_text.c's, the job state jobs.c's, the durable store store.c's.
 *
 * Options follow gearmand 1.1 where they exist (-p -L -t -j -q
 * --libsqlite3-db --mysql-* -u -P -l --verbose); the rest come from the
 * core (config file, console, metrics). */
#include "gearmand/gearmand.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/db.h"
#include "common/daemon.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"
#include "common/tls.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

/* ---- settings -------------------------------------------------------------- */

/* -l FILE | stderr | none, as gearmand. */
static int set_log_file(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    free(core_opts.log_file);
    if (!strcmp(value, "stderr") || !*value)
        core_opts.log_file = NULL;
    else if (!strcmp(value, "none"))
        core_opts.log_file = strdup("/dev/null");
    else
        core_opts.log_file = strdup(value);
    return 0;
}

/* --verbose FATAL|ALERT|CRITICAL|ERROR|WARNING|NOTICE|INFO|DEBUG. */
static int set_verbose(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    static const struct {
        const char *g;
        const char *core;
    } map[] = {
        { "FATAL", "error" },  { "ALERT", "error" }, { "CRITICAL", "error" }, { "ERROR", "error" },
        { "WARNING", "warn" }, { "NOTICE", "info" }, { "INFO", "info" },      { "DEBUG", "debug" },
    };
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcasecmp(value, map[i].g)) {
            free(core_opts.log_level);
            core_opts.log_level = strdup(map[i].core);
            if (loop_count() > 0)
                log_set_level((enum log_level)log_level_parse(map[i].core));
            return 0;
        }
    snprintf(err, errlen, "unknown verbose level '%s' (FATAL..DEBUG)", value);
    return -1;
}

/* -t is bounded before the loops are made (not after 9999 of them ran the
 * process out of descriptors). */
static int check_threads(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    long n = value ? strtol(value, NULL, 10) : 0;
    if (n > GM_MAX_LOOPS) {
        snprintf(err, errlen, "-t %ld: at most %d threads", n, GM_MAX_LOOPS);
        return -1;
    }
    return 0;
}

static const struct cfg_setting gm_settings_table[] = {
    { "port", 'p', CFG_INT, &gm.cfg.port, "4730", "port to listen on", false, NULL },
    { "listen", 'L', CFG_STRING, &gm.cfg.listen, NULL, "address to listen on (default: all)", false, NULL },
    { "threads", 't', CFG_INT, &gm.cfg.threads, "1",
      "event loops sharing the connections (the job state is one, under a lock; see README: with more than one, a "
      "worker held back for slow clients on another loop may not resume)",
      false, check_threads },
    { "job-retries", 'j', CFG_INT, &gm.cfg.job_retries, "0",
      "attempts before a job whose workers keep dying fails (0 = unlimited)", true, NULL },
    { "queue-type", 'q', CFG_STRING, &gm.cfg.queue_type, "builtin",
      "persistent queue for background jobs: builtin (memory only), libsqlite3, mysql", false, NULL },
    { "libsqlite3-db", 0, CFG_STRING, &gm.cfg.sqlite_db, NULL, "SQLite database file for -q libsqlite3", false, NULL },
    { "libsqlite3-table", 0, CFG_STRING, &gm.cfg.sqlite_table, "gm_queue", "SQLite table (our schema, see README)",
      false, NULL },
    { "mysql-host", 0, CFG_STRING, &gm.cfg.mysql_host, "localhost", "MySQL/MariaDB host", false, NULL },
    { "mysql-port", 0, CFG_INT, &gm.cfg.mysql_port, "3306", "MySQL/MariaDB port", false, NULL },
    { "mysql-socket", 0, CFG_STRING, &gm.cfg.mysql_socket, NULL, "MySQL/MariaDB unix socket", false, NULL },
    { "mysql-user", 0, CFG_STRING, &gm.cfg.mysql_user, "root", "MySQL/MariaDB user", false, NULL },
    { "mysql-password", 0, CFG_STRING, &gm.cfg.mysql_password, "", "MySQL/MariaDB password", false, NULL, true },
    { "mysql-db", 0, CFG_STRING, &gm.cfg.mysql_db, "Gearmand", "MySQL/MariaDB database", false, NULL },
    { "mysql-table", 0, CFG_STRING, &gm.cfg.mysql_table, "gm_queue", "MySQL/MariaDB table (our schema, see README)",
      false, NULL },
    { "gearmand-libsqlite3-table", 0, CFG_STRING, &gm.cfg.import_sqlite_table, "gearman_queue",
      "gearmand 1.1's SQLite queue table: its jobs are moved into ours at start ('' = don't)", false, NULL },
    { "gearmand-mysql-table", 0, CFG_STRING, &gm.cfg.import_mysql_table, "gearman_queue",
      "gearmand 1.1's MySQL queue table: its jobs are moved into ours at start ('' = don't)", false, NULL },
    { "job-handle-prefix", 0, CFG_STRING, &gm.cfg.handle_prefix, NULL, "job handle prefix (default H:<hostname>)",
      false, NULL },
    { "max-packet-size", 0, CFG_SIZE, &gm.cfg.max_packet, "16m",
      "largest packet accepted; bigger ones get ERROR and the connection closes", true, NULL },
    { "max-conns", 0, CFG_INT, &gm.cfg.max_conns, "0", "most client connections (0 = unlimited)", false, NULL },
    { "backlog", 'b', CFG_INT, &gm.cfg.backlog, "1024", "listen backlog", false, NULL },
    { "max-jobs", 0, CFG_SIZE, &gm.cfg.max_jobs, "1000000",
      "most jobs held at once, all functions (0 = unlimited); past it submits get ERROR QUEUE_ERROR", true, NULL },
    { "max-job-bytes", 0, CFG_SIZE, &gm.cfg.max_job_bytes, "1g",
      "most bytes of job data held at once (0 = unlimited); past it submits get ERROR QUEUE_ERROR", true, NULL },
    { "max-functions", 0, CFG_SIZE, &gm.cfg.max_functions, "100000",
      "most function names known at once (0 = unlimited); past it CAN_DO and submits of new names get ERROR", true,
      NULL },
    { "max-client-output", 0, CFG_SIZE, &gm.cfg.max_client_output, "16m",
      "unread replies one client may have before the workers feeding it are not read (0 = unlimited)", true, NULL },
    { "client-stall-timeout", 0, CFG_INT, &gm.cfg.client_stall_timeout, "60",
      "a client over --max-client-output whose replies don't move for this many seconds is closed (0 = never)", true,
      NULL },
    { "job-port-admin", 0, CFG_STRING, &gm.cfg.job_port_admin, "gearmand",
      "admin text commands on the job port: gearmand (gearmand 1.1's set), read-only (no maxqueue, cancel, "
      "create/drop function), off",
      false, NULL },
    { "max-pending-durable", 0, CFG_INT, &gm.cfg.max_held, "4096",
      "background submits per connection waiting for the persistent queue before the connection is paused", false,
      NULL },
    { "idle-timeout", 0, CFG_INT, &gm.cfg.idle_timeout, "0", "close connections idle this many seconds (0 = never)",
      true, NULL },
    /* gearmand 1.1 switches whose behaviour is built in here. */
    { "round-robin", 'R', CFG_BOOL, &gm.cfg.round_robin, "no",
      "accepted for gearmand compatibility: a worker's grabs always go round robin over its functions", false, NULL },
    { "worker-wakeup", 'w', CFG_INT, &gm.cfg.wakeup, "1",
      "sleeping workers woken (NOOP) per new job; 0 = all of them (gearmand 1.1's default)", true, NULL },
    { "exceptions", 0, CFG_BOOL, &gm.cfg.exceptions, "no",
      "forward WORK_EXCEPTION to every client, as if each had sent OPTION_REQ exceptions", false, NULL },
    { "ssl", 0, CFG_BOOL, &gm.cfg.ssl, "no", "the job port speaks TLS only (needs --ssl-certificate and --ssl-key)",
      false, NULL },
    { "ssl-certificate", 0, CFG_STRING, &gm.cfg.ssl_cert, NULL, "PEM certificate (chain) for --ssl", false, NULL },
    { "ssl-key", 0, CFG_STRING, &gm.cfg.ssl_key, NULL, "PEM private key for --ssl", false, NULL },
    { "ssl-ca-file", 0, CFG_STRING, &gm.cfg.ssl_ca_file, NULL,
      "with --ssl: PEM CA certificates; clients must then present a certificate they signed", false, NULL },
    { "check-args", 0, CFG_BOOL, &gm.cfg.check_args, "no",
      "check the command line and config file, then exit (0: valid), as gearmand 1.1 does", false, NULL },
    { "keepalive", 0, CFG_BOOL, &gm.cfg.keepalive, "no", "enable TCP keepalive on client and worker connections", false,
      NULL },
    { "keepalive-idle", 0, CFG_INT, &gm.cfg.keepalive_idle, "-1",
      "with --keepalive: TCP_KEEPIDLE seconds (-1 = the system's)", false, NULL },
    { "keepalive-interval", 0, CFG_INT, &gm.cfg.keepalive_interval, "-1",
      "with --keepalive: TCP_KEEPINTVL seconds (-1 = the system's)", false, NULL },
    { "keepalive-count", 0, CFG_INT, &gm.cfg.keepalive_count, "-1",
      "with --keepalive: TCP_KEEPCNT probes (-1 = the system's)", false, NULL },
    /* gearmand's spellings of core settings (same storage, this table wins). */
    { "file-descriptors", 'f', CFG_INT, &core_opts.max_fds, NULL, "raise the open-file limit to this", false, NULL },
    { "user", 'u', CFG_STRING, &core_opts.user, NULL, "drop privileges to this user after binding", false, NULL },
    { "pid-file", 'P', CFG_STRING, &core_opts.pidfile, NULL, "write the process id to this file", false, NULL },
    { "log-file", 'l', CFG_CUSTOM, NULL, NULL, "log to FILE, 'stderr' or 'none'", false, set_log_file },
    { "verbose", 0, CFG_CUSTOM, NULL, NULL, "log level: FATAL ALERT CRITICAL ERROR WARNING NOTICE INFO DEBUG", true,
      set_verbose },
    CFG_END
};

/* ---- stats --------------------------------------------------------------------- */

static void gm_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    gm_lock();
    stats_u64(sink, "threads", (uint64_t)gm.nloops);
    stats_u64(sink, "cross_loop_flushes", gm.n.cross_loop_flushes);
    stats_u64(sink, "jobs_submitted", gm.n.jobs_submitted);
    stats_u64(sink, "jobs_completed", gm.n.jobs_completed);
    stats_u64(sink, "jobs_failed", gm.n.jobs_failed);
    stats_u64(sink, "jobs_coalesced", gm.n.jobs_coalesced);
    stats_u64(sink, "jobs_retried", gm.n.jobs_retried);
    stats_u64(sink, "jobs_timeout", gm.n.jobs_timeout);
    stats_u64(sink, "jobs_current", gm.njobs);
    stats_u64(sink, "functions", gm.nfuncs);
    stats_u64(sink, "sessions", gm.nsessions);
    stats_u64(sink, "packets_in", gm.n.packets_in);
    stats_u64(sink, "errors_sent", gm.n.errors_sent);
    stats_u64(sink, "noops_sent", gm.n.noops_sent);
    stats_u64(sink, "grabs", gm.n.grabs);
    stats_u64(sink, "no_jobs", gm.n.no_jobs);
    stats_u64(sink, "queue_full", gm.n.queue_full);
    stats_u64(sink, "queue_paused", gm.n.queue_paused);
    stats_u64(sink, "job_bytes", gm.job_bytes);
    stats_u64(sink, "functions_refused", gm.n.functions_refused);
    stats_u64(sink, "clients_output_dropped", gm.n.clients_output_dropped);
    stats_u64(sink, "admin_refused", gm.n.admin_refused);
    stats_u64(sink, "workers_throttled", gm.n.workers_throttled);
    if (gm.db) {
        struct db_counters dc;
        db_get_counters(gm.db, &dc);
        stats_u64(sink, "queue_db_requests", dc.requests);
        stats_u64(sink, "queue_db_commits", dc.commits);
        stats_u64(sink, "queue_db_errors", dc.errors);
        stats_u64(sink, "queue_db_waiting", dc.queued);
    }
    gm_unlock();
}

/* ---- life cycle ---------------------------------------------------------------- */

/* --ssl: a server context from the core's tls module; with --ssl-ca-file
 * clients must present a certificate signed by one of those CAs. */
static int gm_tls_open(void)
{
    char err[256];
    if (!gm.cfg.ssl_cert || !*gm.cfg.ssl_cert || !gm.cfg.ssl_key || !*gm.cfg.ssl_key) {
        log_error("gearmand: --ssl needs --ssl-certificate and --ssl-key");
        return -1;
    }
    gm.tls_ctx = tls_server_ctx_new(gm.cfg.ssl_cert, gm.cfg.ssl_key, NULL, err, sizeof err);
    if (!gm.tls_ctx) {
        log_error("gearmand: --ssl: %s", err);
        return -1;
    }
    if (gm.cfg.ssl_ca_file && *gm.cfg.ssl_ca_file &&
        tls_server_ctx_require_client_cert(gm.tls_ctx, gm.cfg.ssl_ca_file, err, sizeof err) < 0) {
        log_error("gearmand: --ssl-ca-file: %s", err);
        return -1;
    }
    return 0;
}

static int gm_init(void)
{
    if (gm.cfg.max_held < 1)
        gm.cfg.max_held = 1;
    const char *jpa = gm.cfg.job_port_admin ? gm.cfg.job_port_admin : "gearmand";
    if (strcmp(jpa, "gearmand") && strcmp(jpa, "read-only") && strcmp(jpa, "off")) {
        log_error("gearmand: --job-port-admin must be gearmand, read-only or off, not '%s'", jpa);
        return -1;
    }
    if (loop_count() > GM_MAX_LOOPS) {
        log_error("gearmand: -t %d: at most %d threads", loop_count(), GM_MAX_LOOPS);
        return -1;
    }
    if (gm.cfg.ssl && gm_tls_open() < 0)
        return -1;
    if (gm.cfg.check_args) { /* settings and TLS files are valid: nothing opened, nothing to undo */
        if (core_opts.pidfile)
            unlink(core_opts.pidfile);
        exit(0);
    }
    gm_state_init();
    gm_sessions_init();
    gm_admin_install();
    stats_add_source("", gm_stats, NULL);
    if (gm_store_open() < 0)
        return -1;
    char spec[300], err[256];
    if (gm.cfg.listen && *gm.cfg.listen) {
        if (strchr(gm.cfg.listen, ':') && gm.cfg.listen[0] != '[')
            snprintf(spec, sizeof spec, "[%s]:%d", gm.cfg.listen, gm.cfg.port);
        else
            snprintf(spec, sizeof spec, "%s:%d", gm.cfg.listen, gm.cfg.port);
    } else
        snprintf(spec, sizeof spec, "*:%d", gm.cfg.port);
    /* Connections spread over every loop (-t); see gearmand.h for who
     * touches what. */
    struct listen_opts lo = { .backlog = gm.cfg.backlog };
    if (!listen_open(spec, GM_DEFAULT_PORT, &lo, gm_accept, gm_reject, NULL, err, sizeof err)) {
        log_error("gearmand: cannot listen on %s: %s", spec, err);
        return -1;
    }
    if (gm.cfg.max_conns > 0)
        listen_set_max_conns((uint64_t)gm.cfg.max_conns);
    log_info("gearmand: listening on %s%s (queue: %s)", spec, gm.tls_ctx ? " (TLS)" : "",
             gm.db ? gm.cfg.queue_type : "builtin");
    return 0;
}

static void gm_fini(void)
{
    gm_store_close();
    gm_sessions_free();
    gm_state_free();
    if (gm.tls_ctx) {
        tls_ctx_free(gm.tls_ctx);
        gm.tls_ctx = NULL;
    }
}

int main(int argc, char **argv)
{
    static const struct daemon_desc desc = {
        .name = "gearmand",
        .version = GM_VERSION,
        .settings = gm_settings_table,
        .threads = &gm.cfg.threads, /* -t: event loops; see README "Threading" */
        .default_admin_port = 0,
        .init = gm_init,
        .fini = gm_fini,
        .admin_cmds = gm_admin_cmds,
        .hooks = { .on_stop = gm_stopping },
    };
    return daemon_main(&desc, argc, argv);
}
