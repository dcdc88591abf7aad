/* mogstored: the MogileFS storage node — settings (mogstored's own keys),
 * start-up, the per-device usage files the tracker's monitor reads, and
 * stats. The connections (HTTP on 7500, the side channel on 7501) are in
 * storage.c. */
#include "mogilefs/mogilefs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/http.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

#include "mogilefs/storage.h"

/* ---- usage files ---------------------------------------------------------------------------------- */

static void write_usage(const char *dev)
{
    char dir[4200], file[4300], tmp[4400];
    snprintf(dir, sizeof dir, "%s/%s", mog_st_cfg.docroot, dev);
    struct statvfs sv;
    if (statvfs(dir, &sv) < 0)
        return;
    unsigned long long total = (unsigned long long)sv.f_blocks * sv.f_frsize / 1024;
    unsigned long long avail = (unsigned long long)sv.f_bavail * sv.f_frsize / 1024;
    unsigned long long freek = (unsigned long long)sv.f_bfree * sv.f_frsize / 1024;
    unsigned long long used = total - freek;
    unsigned long long tot = used + avail;
    char body[1024];
    int n = snprintf(body, sizeof body,
                     "available: %llu\ndevice: %s\ndisk: %s\ntime: %lld\ntotal: %llu\nuse: %llu%%\n"
                     "used: %llu\n",
                     avail, dir, dir, (long long)time(NULL), tot, tot ? (used * 100 + tot - 1) / tot : 0, used);
    snprintf(file, sizeof file, "%s/usage", dir);
    snprintf(tmp, sizeof tmp, "%s/.usage.tmp", dir);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    ssize_t w = write(fd, body, (size_t)n);
    close(fd);
    if (w == n)
        rename(tmp, file);
    else
        unlink(tmp);
}

static void usage_round(void)
{
    DIR *d = opendir(mog_st_cfg.docroot);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (strncmp(n, "dev", 3) || !n[3])
            continue;
        bool digits = true;
        for (const char *p = n + 3; *p; p++)
            if (*p < '0' || *p > '9')
                digits = false;
        if (digits)
            write_usage(n);
    }
    closedir(d);
}

static void *usage_thread(void *arg)
{
    (void)arg;
    while (!mog_st.stop) {
        usage_round();
        for (int i = 0; i < mog_st_cfg.usage_interval * 10 && !mog_st.stop; i++)
            usleep(100000);
    }
    return NULL;
}

/* ---- settings and life cycle ------------------------------------------------------------------------ */

static char *st_conf_path;
static const struct cfg_setting st_settings_table[];
static const struct cfg_setting *const st_tables[] = { st_settings_table, core_settings, NULL };

/* mogstored.conf: `key = value`; unknown keys warned about, not fatal. */
static int read_conf_file(const char *value, bool live_only, char *err, size_t errlen);

static int read_st_config(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    static char *done;
    if (done && !strcmp(done, value))
        return 0;
    free(done);
    done = strdup(value);
    free(st_conf_path);
    st_conf_path = strdup(value);
    return read_conf_file(value, false, err, errlen);
}

static int read_conf_file(const char *value, bool live_only, char *err, size_t errlen)
{
    return mog_conf_read("mogstored", st_tables, value, live_only, err, errlen);
}

static int st_ignore(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)value, (void)err, (void)errlen;
    fprintf(stderr, "mogstored: setting '%s' is accepted and ignored (see README)\n", s->name);
    return 0;
}

static const struct cfg_setting st_settings_table[] = {
    LOG_VERBOSE_SETTING,
    { "config", 'c', CFG_CUSTOM, &mog_st_cfg.config_dummy, NULL, "read mogstored settings from this file", false,
      read_st_config },
    { "httplisten", 0, CFG_STRING, &mog_st_cfg.httplisten, "0.0.0.0:7500", "HTTP listen address", false, NULL },
    { "mgmtlisten", 0, CFG_STRING, &mog_st_cfg.mgmtlisten, "0.0.0.0:7501", "side-channel listen address", false, NULL },
    { "docroot", 0, CFG_STRING, &mog_st_cfg.docroot, "/var/mogdata", "folder holding the devN directories", false,
      NULL },
    { "threads", 't', CFG_INT, &mog_st_cfg.threads, "4",
      "event-loop threads (each PUT's fsync holds up its own loop only)", false, NULL },
    { "maxconns", 0, CFG_INT, &mog_st_cfg.maxconns, "10000", "most connections (0 = unlimited)", false, NULL },
    { "max_put_size", 0, CFG_SIZE, &mog_st_cfg.max_put, "0", "largest PUT body accepted (0 = no limit)", true, NULL },
    { "idle_timeout", 0, CFG_INT, &mog_st_cfg.idle_timeout, "60", "close connections idle this many seconds", true,
      NULL },
    { "usage_interval", 0, CFG_INT, &mog_st_cfg.usage_interval, "10", "seconds between usage file updates", false,
      NULL },
    { "max_hash_jobs", 0, CFG_INT, &mog_st_cfg.max_hash_jobs, "8", "side-channel MD5/SHA-1 digests running at once",
      true, NULL },
    { "disk_threads", 0, CFG_INT, &mog_st_cfg.disk_threads, "4",
      "threads doing GET/HEAD disk work (opens, stats, small reads; 0 = on the loop)", false, NULL },
    { "sync_threads", 0, CFG_INT, &mog_st_cfg.disk_threads, NULL, "the old name of disk_threads", false, NULL },
    { "server", 0, CFG_CUSTOM, NULL, NULL, "accepted and ignored: the built-in server is always used", false,
      st_ignore },
    { "serverbin", 0, CFG_CUSTOM, NULL, NULL, "accepted and ignored", false, st_ignore },
    { "iostat", 0, CFG_CUSTOM, NULL, NULL, "accepted and ignored", false, st_ignore },
    { "daemonize", 0, CFG_CUSTOM, NULL, NULL, "accepted and ignored: runs in the foreground (systemd)", false,
      st_ignore },
    CFG_END
};

static void st_stats(struct stats_sink *sink, void *arg)
{
    (void)arg;
    stats_u64(sink, "gets", stats_counter_get(&mog_st.gets));
    stats_u64(sink, "heads", stats_counter_get(&mog_st.heads));
    stats_u64(sink, "puts", stats_counter_get(&mog_st.puts));
    stats_u64(sink, "put_bytes", stats_counter_get(&mog_st.put_bytes));
    stats_u64(sink, "deletes", stats_counter_get(&mog_st.deletes));
    stats_u64(sink, "moves", stats_counter_get(&mog_st.moves));
    stats_u64(sink, "errors", stats_counter_get(&mog_st.errors));
    stats_u64(sink, "side_commands", stats_counter_get(&mog_st.side_cmds));
}

static int st_init(void)
{
    struct stat sb;
    if (stat(mog_st_cfg.docroot, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        log_error("mogstored: docroot %s is not a directory", mog_st_cfg.docroot);
        return -1;
    }
    /* No trailing slash: paths are appended as "/devN/...". */
    size_t dl = strlen(mog_st_cfg.docroot);
    while (dl > 1 && mog_st_cfg.docroot[dl - 1] == '/')
        mog_st_cfg.docroot[--dl] = '\0';
    stats_add_source("", st_stats, NULL);
    char err[256];
    struct listen_opts lo = { 0 };
    if (!listen_open(mog_st_cfg.httplisten, 7500, &lo, mog_st_http_accept, mog_st_http_reject, NULL, err, sizeof err)) {
        log_error("mogstored: cannot listen on %s: %s", mog_st_cfg.httplisten, err);
        return -1;
    }
    if (mog_st_cfg.mgmtlisten && *mog_st_cfg.mgmtlisten &&
        !listen_open(mog_st_cfg.mgmtlisten, 7501, &lo, mog_st_side_accept, NULL, NULL, err, sizeof err)) {
        log_error("mogstored: cannot listen on %s: %s", mog_st_cfg.mgmtlisten, err);
        return -1;
    }
    if (mog_st_cfg.maxconns > 0)
        listen_set_max_conns((uint64_t)mog_st_cfg.maxconns);
    mog_st_sync_start(mog_st_cfg.disk_threads);
    usage_round();
    if (pthread_create(&mog_st.usage_thread, NULL, usage_thread, NULL) == 0)
        mog_st.usage_started = true;
    log_info("mogstored: http %s, side channel %s, docroot %s", mog_st_cfg.httplisten, mog_st_cfg.mgmtlisten,
             mog_st_cfg.docroot);
    return 0;
}

/* SIGHUP: the config file again, live settings only. */
static void st_reload(void)
{
    char err[256];
    if (st_conf_path && read_conf_file(st_conf_path, true, err, sizeof err) < 0)
        log_warn("mogstored: reload: %s", err);
    mog_st_reload();
}

static void st_fini(void)
{
    mog_st_sync_stop();
    mog_st.stop = true;
    if (mog_st.usage_started)
        pthread_join(mog_st.usage_thread, NULL);
}

static void st_thread_start(struct core_loop *loop) { mog_st_watch_start(loop); }

static void st_thread_exit(struct core_loop *loop)
{
    mog_st_watch_stop(loop);
    mog_st_thread_exit();
}

int main(int argc, char **argv)
{
    static const struct daemon_desc desc = {
        .name = "mogstored",
        .version = MOG_VERSION,
        .settings = st_settings_table,
        .threads = &mog_st_cfg.threads,
        .init = st_init,
        .fini = st_fini,
        .hooks = { .on_reload = st_reload, .on_thread_start = st_thread_start, .on_thread_exit = st_thread_exit },
    };
    return daemon_main(&desc, argc, argv);
}
