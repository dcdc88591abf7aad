/* mogilefsd: the MogileFS tracker — settings (MogileFS's own config keys),
 * start-up wiring (database + schema, query threads, job threads, the
 * listener) and the stats source.
 *
 * `mogilefsd --config=FILE` / `-c FILE` reads MogileFS's mogilefsd.conf:
 * `key = value` lines; keys this tracker does not know get a one-line
 * warning instead of stopping the start, as the original ignores them. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/daemon.h"
#include "common/db.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/httpc.h"
#include "common/loop.h"
#include "common/stats.h"

struct mog_tracker mog;
extern const struct admin_cmd mog_tracker_admin_cmds[];

static char *config_dummy; /* never set: the file is read by read_mog_config */
static const struct cfg_setting mog_settings_table[];
static const struct cfg_setting *const mog_tables[] = { mog_settings_table, core_settings, NULL };

/* Read a MogileFS config file: known keys are applied, unknown ones warned
 * about. Pass 1 and pass 2 of cfg_load both call this; the file is read
 * once. */
static int read_conf_file(const char *value, bool live_only, char *err, size_t errlen);

static int read_mog_config(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    static char *done;
    if (done && !strcmp(done, value))
        return 0;
    free(done);
    done = strdup(value);
    free(core_opts.config_file);
    core_opts.config_file = strdup(value);
    return read_conf_file(value, false, err, errlen);
}

static int read_conf_file(const char *value, bool live_only, char *err, size_t errlen)
{
    return mog_conf_read("mogilefsd", mog_tables, value, live_only, err, errlen);
}

/* MogileFS's "daemonize" and similar keys that make no sense under systemd. */
/* plugins = "A, B": MogileFS loads MogileFS::Plugin::<name> for each and
 * refuses to start when one cannot be loaded; ZoneLocal is built in here,
 * others are refused the same way. */
static int plugins_setting(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    char buf[512];
    snprintf(buf, sizeof buf, "%s", value ? value : "");
    mog_zone_local = false;
    char *save = NULL;
    for (char *p = strtok_r(buf, ", \t", &save); p; p = strtok_r(NULL, ", \t", &save)) {
        if (strcmp(p, "ZoneLocal")) {
            snprintf(err, errlen, "unable to load plugin %s: not built (only ZoneLocal is; see README)", p);
            return -1;
        }
        mog_zone_local = true;
    }
    return 0;
}

static int local_network_setting(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    snprintf(mog_local_network, sizeof mog_local_network, "%s", value ? value : "");
    return 0;
}

static int ignore_setting(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)value;
    (void)err;
    (void)errlen;
    fprintf(stderr, "mogilefsd: setting '%s' is accepted and ignored (see README)\n", s->name);
    return 0;
}

/* The password goes where the database code reads it; the settings table
 * (show settings, --help) never shows it. */
static int set_db_pass(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s, (void)err, (void)errlen;
    free(mog.cfg.db_pass);
    mog.cfg.db_pass = strdup(value ? value : "");
    return mog.cfg.db_pass ? 0 : -1;
}

static const struct cfg_setting mog_settings_table[] = {
    LOG_VERBOSE_SETTING,
    { "config", 'c', CFG_CUSTOM, &config_dummy, NULL, "read MogileFS settings from this file (key = value)", false,
      read_mog_config },
    { "db_dsn", 0, CFG_STRING, &mog.cfg.db_dsn, "DBI:SQLite:mogilefs.sqlite",
      "database: DBI:SQLite:FILE, DBI:SQLite:dbname=FILE or DBI:mysql:database=D;host=H;port=P", false, NULL },
    { "db_user", 0, CFG_STRING, &mog.cfg.db_user, "mogile", "database user (MySQL)", false, NULL },
    { "db_pass", 0, CFG_CUSTOM, NULL, NULL, "database password (MySQL); never shown", false, set_db_pass, true },
    { "listen", 0, CFG_STRING, &mog.cfg.listen, NULL, "IP:PORT to listen on (default 0.0.0.0:conf_port)", false, NULL },
    { "conf_port", 0, CFG_INT, &mog.cfg.conf_port, "7001", "port when listen has none", false, NULL },
    { "query_jobs", 0, CFG_INT, &mog.cfg.query_jobs, "20", "query threads (commands running at once)", false, NULL },
    { "replicate_jobs", 0, CFG_INT, &mog.cfg.replicate_jobs, "1", "replication threads", false, NULL },
    { "delete_jobs", 0, CFG_INT, &mog.cfg.delete_jobs, "1", "delete threads", false, NULL },
    { "fsck_jobs", 0, CFG_INT, &mog.cfg.fsck_jobs, "1",
      "fsck threads (0 = none; fsck runs on the tracker that started it)", false, NULL },
    { "reaper_jobs", 0, CFG_INT, &mog.cfg.reaper_jobs, "1", "accepted; the replicator reaps dead devices", false,
      NULL },
    { "monitor_jobs", 0, CFG_INT, &mog.cfg.monitor_jobs, "1", "0 disables the monitor (devices stay unknown)", false,
      NULL },
    { "job_master", 0, CFG_INT, &mog.cfg.job_master, "1", "accepted; queues are read by each worker", false, NULL },
    { "min_free_space", 0, CFG_INT, &mog.cfg.min_free_space, "100",
      "MB a device keeps free before it gets no new files", true, NULL },
    { "default_mindevcount", 0, CFG_INT, &mog.cfg.default_mindevcount, "2", "copies of files in the default class",
      true, NULL },
    { "node_timeout", 0, CFG_DOUBLE, &mog.cfg.node_timeout, "2", "seconds to wait for a storage node", true, NULL },
    { "conn_timeout", 0, CFG_DOUBLE, &mog.cfg.conn_timeout, "2", "seconds to connect to a storage node", true, NULL },
    { "max_disk_age", 0, CFG_INT, &mog.cfg.max_disk_age, "5", "accepted for compatibility", false, NULL },
    { "mogstored_stream_port", 0, CFG_STRING, &mog.cfg.mogstored_stream_port, "7501",
      "storage nodes' side-channel port", false, NULL },
    { "db_workers", 0, CFG_INT, &mog.cfg.db_workers, "1", "database connections (MySQL); SQLite always uses one", false,
      NULL },
    { "monitor_interval_ms", 0, CFG_INT, &mog.cfg.monitor_interval_ms, "1000", "milliseconds between monitor rounds",
      true, NULL },
    { "max_conns", 0, CFG_INT, &mog.cfg.max_conns, "10000", "most client connections (0 = unlimited)", false, NULL },
    { "idle_timeout", 0, CFG_INT, &mog.cfg.idle_timeout, "0", "close clients idle this many seconds (0 = never)", true,
      NULL },
    { "max_queue", 0, CFG_INT, &mog.cfg.max_queue, "10000", "commands waiting for a query thread before ERR busy", true,
      NULL },
    { "no_schema_check", 0, CFG_BOOL, &mog.cfg.no_schema_check, "no", "do not create or check the schema", false,
      NULL },
    { "daemonize", 0, CFG_CUSTOM, NULL, NULL, "accepted and ignored: runs in the foreground (systemd)", false,
      ignore_setting },
    { "plugins", 0, CFG_CUSTOM, NULL, NULL, "plugins to load: ZoneLocal (the only one built)", false, plugins_setting },
    { "local_network", 0, CFG_CUSTOM, NULL, NULL, "this tracker's network (ZoneLocal: replication prefers its zone)",
      false, local_network_setting },
    { "max_handles", 0, CFG_INT, &core_opts.max_fds, NULL, "raise the open-file limit to this", false, NULL },
    CFG_END
};

static void mog_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "queries", stats_counter_get(&mog.n.queries));
    stats_u64(sink, "errors", stats_counter_get(&mog.n.errors));
    stats_u64(sink, "uploads", stats_counter_get(&mog.n.uploads));
    stats_u64(sink, "get_paths", stats_counter_get(&mog.n.get_paths));
    stats_u64(sink, "deletes", stats_counter_get(&mog.n.deletes));
    stats_u64(sink, "replicated", stats_counter_get(&mog.n.replicated));
    stats_u64(sink, "replicate_failed", stats_counter_get(&mog.n.repl_failed));
    stats_u64(sink, "deleted_files", stats_counter_get(&mog.n.deleted_files));
    stats_u64(sink, "monitor_rounds", stats_counter_get(&mog.n.monitor_rounds));
    stats_u64(sink, "iostat_updates", stats_counter_get(&mog.n.iostat_updates));
    stats_u64(sink, "slave_reads", stats_counter_get(&mog.n.slave_reads));
    stats_u64(sink, "queue_full", stats_counter_get(&mog.n.queue_full));
    stats_u64(sink, "times_out_of_qworkers", stats_counter_get(&mog.n.times_out_of_qworkers));
    stats_i64(sink, "pending_queries", mog.pending);
    stats_i64(sink, "processing_queries", mog.processing);
    struct db *db = mog_store_db();
    if (db) {
        struct db_counters dc;
        db_get_counters(db, &dc);
        stats_u64(sink, "db_requests", dc.requests);
        stats_u64(sink, "db_commits", dc.commits);
        stats_u64(sink, "db_errors", dc.errors);
        stats_u64(sink, "db_waiting", dc.queued);
    }
}

static int mog_init(void)
{
    mog.started = stats_wall_time();
    gethostname(mog.hostname, sizeof mog.hostname - 1);
    char err[512];
    if (mog_store_open(mog.cfg.db_dsn, mog.cfg.db_user, mog.cfg.db_pass, mog.cfg.db_workers, err, sizeof err) < 0) {
        log_error("mogilefsd: database: %s", err);
        return -1;
    }
    if (!mog.cfg.no_schema_check && mog_store_setup_schema(err, sizeof err) < 0) {
        log_error("mogilefsd: schema: %s", err);
        return -1;
    }
    if (mog_cache_reload() < 0) {
        log_error("mogilefsd: cannot read hosts/devices/domains from the database");
        return -1;
    }
    if (mog_zone_local) {
        /* As the ZoneLocal plugin's load: local_network is required. Its
         * zone may be defined later (mogadm settings), so a zone that does
         * not resolve yet is only a warning here (the plugin dies). */
        char z[64];
        if (!mog_local_network[0]) {
            log_error("mogilefsd: plugin ZoneLocal: must define 'local_network' (e.g. 10.5.0.0/16)");
            return -1;
        }
        if (mog_zone_for_ip(mog_local_network, z, sizeof z) < 0)
            log_warn("mogilefsd: plugin ZoneLocal: local_network %s is in no network zone yet", mog_local_network);
    }
    stats_add_source("", mog_stats, NULL);
    /* Loop 0: client connections; loop 1: HTTP to the storage nodes. */
    mog_nodehttp_start(loop_get(1));
    if (mog.cfg.monitor_jobs > 0 && mog_iostat_start(loop_get(1)) < 0) {
        log_error("mogilefsd: cannot start following the storage nodes");
        return -1;
    }
    if (mog_sessions_start(mog.cfg.query_jobs) < 0 || mog_jobs_start() < 0) {
        log_error("mogilefsd: cannot start threads");
        return -1;
    }
    char spec[300];
    if (mog.cfg.listen && *mog.cfg.listen)
        snprintf(spec, sizeof spec, "%s", mog.cfg.listen);
    else
        snprintf(spec, sizeof spec, "*:%d", mog.cfg.conf_port);
    struct listen_opts lo = { .single_loop = true };
    if (!listen_open(spec, mog.cfg.conf_port, &lo, mog_tracker_accept, mog_tracker_reject, NULL, err, sizeof err)) {
        log_error("mogilefsd: cannot listen on %s: %s", spec, err);
        return -1;
    }
    if (mog.cfg.max_conns > 0)
        listen_set_max_conns((uint64_t)mog.cfg.max_conns);
    log_info("mogilefsd: listening on %s (db %s)", spec, mog_db_is_mysql() ? "mysql" : "sqlite");
    return 0;
}

/* SIGHUP: the config file again, live settings only. */
static void mog_reload(void)
{
    char err[256];
    if (core_opts.config_file && read_conf_file(core_opts.config_file, true, err, sizeof err) < 0)
        log_warn("mogilefsd: reload: %s", err);
}

static void mog_fini(void)
{
    mog_nodehttp_stop(); /* the loops are gone: threads waiting on HTTP give up */
    mog_jobs_stop();
    mog_iostat_stop();
    mog_sessions_stop();
    mog_store_close();
}

static int tracker_loops = 2;

/* Each loop thread's scratch buffers (common/httpc's on the node loop). */
static void mog_thread_exit(struct core_loop *loop)
{
    (void)loop;
    httpc_thread_exit();
}

int main(int argc, char **argv)
{
    static const struct daemon_desc desc = {
        .name = "mogilefsd",
        .version = MOG_VERSION,
        .settings = mog_settings_table,
        .threads = &tracker_loops,
        .default_admin_port = 0,
        .init = mog_init,
        .fini = mog_fini,
        .admin_cmds = mog_tracker_admin_cmds,
        .hooks = { .on_reload = mog_reload, .on_thread_exit = mog_thread_exit },
    };
    return daemon_main(&desc, argc, argv);
}
