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
    { "threads", 't', CFG_INT, &gm.cfg.threads, "4",
      "event loops sharing the connections, as gearmand's I/O threads (default 4, as gearmand 1.1; the job state is "
      "one, under a lock: see README \"Threading\")",
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
    { "metrics-max-functions", 0, CFG_SIZE, &gm.cfg.metrics_max_functions, "1000",
      "functions exported one by one to Prometheus (status_total/running/workers/queued; 0 = all); the rest are "
      "counted in status_functions_omitted",
      true, NULL },
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
    { "verbosity", 'v', CFG_COUNT, &gm.cfg.verbosity, "0",
      "-v: log at INFO; -vv: DEBUG, with a line per request read (names and handles, job data only as its size)", false,
      NULL },
    { "verbose", 0, CFG_CUSTOM, NULL, NULL, "log level: FATAL ALERT CRITICAL ERROR WARNING NOTICE INFO DEBUG", true,
      set_verbose },
    CFG_END
};

/* ---- stats --------------------------------------------------------------------- */

/* Console name, Prometheus family (after "gearmand_"), kind, help. */
#define C(name, help)                                                                                                  \
    {                                                                                                                  \
        name, NULL, STATS_COUNTER, help, 0                                                                             \
    }
#define G(name, help)                                                                                                  \
    {                                                                                                                  \
        name, NULL, STATS_GAUGE, help, 0                                                                               \
    }
enum {
    ST_CROSS,
    ST_SUBMITTED,
    ST_COMPLETED,
    ST_FAILED,
    ST_COALESCED,
    ST_RETRIED,
    ST_TIMEOUT,
    ST_CURRENT,
    ST_FUNCS,
    ST_SESSIONS,
    ST_PACKETS,
    ST_ERRORS,
    ST_NOOPS,
    ST_GRABS,
    ST_NOJOBS,
    ST_QFULL,
    ST_QPAUSED,
    ST_BYTES,
    ST_FREFUSED,
    ST_DROPPED,
    ST_AREFUSED,
    ST_THROTTLED,
    ST_DBREQ,
    ST_DBCOMMITS,
    ST_DBERRORS,
    ST_DBWAIT,
    ST_N
};
static const struct stats_desc gm_desc[ST_N] = {
    [ST_CROSS] = C("cross_loop_flushes", "replies handed to another event loop (one mailbox message each)"),
    [ST_SUBMITTED] = C("jobs_submitted", "jobs submitted (coalesced submits included)"),
    [ST_COMPLETED] = C("jobs_completed", "jobs ended by WORK_COMPLETE"),
    [ST_FAILED] = C("jobs_failed", "jobs ended by WORK_FAIL, an exception, a timeout or too many retries"),
    [ST_COALESCED] = C("jobs_coalesced", "submits joined to a job with the same function and unique key"),
    [ST_RETRIED] = C("jobs_retried", "jobs put back in their queue because their worker went away"),
    [ST_TIMEOUT] = C("jobs_timeout", "jobs failed by their worker's CAN_DO_TIMEOUT"),
    [ST_CURRENT] = G("jobs_current", "jobs held (queued, running, scheduled)"),
    [ST_FUNCS] = G("functions", "function names known"),
    [ST_SESSIONS] = G("sessions", "open job-port connections"),
    [ST_PACKETS] = C("packets_in", "requests read (binary packets and admin text lines)"),
    [ST_ERRORS] = C("errors_sent", "ERROR packets sent"),
    [ST_NOOPS] = C("noops_sent", "NOOP wake-ups sent to sleeping workers"),
    [ST_GRABS] = C("grabs", "jobs handed to workers"),
    [ST_NOJOBS] = C("no_jobs", "NO_JOB answers to grabs"),
    [ST_QFULL] = C("queue_full", "submits refused by a maxqueue, --max-jobs or --max-job-bytes"),
    [ST_QPAUSED] = C("queue_paused", "connections paused for --max-pending-durable"),
    [ST_BYTES] = G("job_bytes", "bytes of job data held"),
    [ST_FREFUSED] = C("functions_refused", "new function names refused by --max-functions"),
    [ST_DROPPED] = C("clients_output_dropped", "clients closed for not reading their replies"),
    [ST_AREFUSED] = C("admin_refused", "admin commands refused on the job port"),
    [ST_THROTTLED] = C("workers_throttled", "times a worker was held back for clients that do not read"),
    [ST_DBREQ] = C("queue_db_requests", "persistent queue requests"),
    [ST_DBCOMMITS] = C("queue_db_commits", "persistent queue commits (group commits)"),
    [ST_DBERRORS] = C("queue_db_errors", "persistent queue errors"),
    [ST_DBWAIT] = G("queue_db_waiting", "persistent queue requests waiting"),
};
/* Per function, Prometheus only (the console has `status`): the names of
 * the public gearman exporter (bakins/gearman-exporter), in our namespace. */
static const struct stats_desc gm_fdesc[4] = {
    { NULL, "status_total", STATS_GAUGE, "jobs of the function, queued and running (status column 2)", 0 },
    { NULL, "status_running", STATS_GAUGE, "jobs of the function running (status column 3)", 0 },
    { NULL, "status_workers", STATS_GAUGE, "workers that can do the function (status column 4)", 0 },
    { NULL, "status_queued", STATS_GAUGE, "jobs of the function waiting for a worker", 0 },
};
static const struct stats_desc gm_fomitted = { NULL, "status_functions_omitted", STATS_GAUGE,
                                               "functions not exported per function because of --metrics-max-functions",
                                               0 };
#undef C
#undef G

static void gm_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    gm_lock();
    const uint64_t v[ST_N] = {
        [ST_CROSS] = gm.n.cross_loop_flushes,
        [ST_SUBMITTED] = gm.n.jobs_submitted,
        [ST_COMPLETED] = gm.n.jobs_completed,
        [ST_FAILED] = gm.n.jobs_failed,
        [ST_COALESCED] = gm.n.jobs_coalesced,
        [ST_RETRIED] = gm.n.jobs_retried,
        [ST_TIMEOUT] = gm.n.jobs_timeout,
        [ST_CURRENT] = gm.njobs,
        [ST_FUNCS] = gm.nfuncs,
        [ST_SESSIONS] = gm.nsessions,
        [ST_PACKETS] = gm.n.packets_in,
        [ST_ERRORS] = gm.n.errors_sent,
        [ST_NOOPS] = gm.n.noops_sent,
        [ST_GRABS] = gm.n.grabs,
        [ST_NOJOBS] = gm.n.no_jobs,
        [ST_QFULL] = gm.n.queue_full,
        [ST_QPAUSED] = gm.n.queue_paused,
        [ST_BYTES] = gm.job_bytes,
        [ST_FREFUSED] = gm.n.functions_refused,
        [ST_DROPPED] = gm.n.clients_output_dropped,
        [ST_AREFUSED] = gm.n.admin_refused,
        [ST_THROTTLED] = gm.n.workers_throttled,
    };
    for (int i = 0; i < ST_DBREQ; i++)
        stats_emit(sink, &gm_desc[i], (double)v[i]);
    if (gm.db) {
        struct db_counters dc;
        db_get_counters(gm.db, &dc);
        stats_emit(sink, &gm_desc[ST_DBREQ], (double)dc.requests);
        stats_emit(sink, &gm_desc[ST_DBCOMMITS], (double)dc.commits);
        stats_emit(sink, &gm_desc[ST_DBERRORS], (double)dc.errors);
        stats_emit(sink, &gm_desc[ST_DBWAIT], (double)dc.queued);
    }
    /* One family after the other (each gets its HELP/TYPE once), over the
     * first --metrics-max-functions functions in creation order. */
    uint64_t max = gm.cfg.metrics_max_functions;
    for (int k = 0; k < 4; k++) {
        uint64_t n = 0;
        struct list_node *pos;
        list_for_each(pos, &gm.funcs)
        {
            if (max && n++ >= max)
                break;
            struct gm_func *f = container_of(pos, struct gm_func, all_link);
            uint32_t queued = f->queued[0] + f->queued[1] + f->queued[2];
            double val = k == 0   ? (double)f->total
                         : k == 1 ? (double)f->running
                         : k == 2 ? (double)f->workers
                                  : (double)queued;
            struct stats_label l = { "function", f->name };
            stats_emit_labels(sink, &gm_fdesc[k], &l, 1, val);
        }
    }
    stats_emit(sink, &gm_fomitted, (double)(max && gm.nfuncs > max ? gm.nfuncs - max : 0));
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
    if (gm.cfg.verbosity >= 2)
        log_set_level(LOG_LEVEL_DEBUG);
    else if (gm.cfg.verbosity == 1 && log_get_level() < LOG_LEVEL_INFO)
        log_set_level(LOG_LEVEL_INFO);
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
