/* daemon: the shared start-up and shut-down sequence, and the small
 * process-level duties around it (pidfile, privileges, fd limit,
 * systemd readiness). */
#include "common/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/listen.h"
#include "common/log.h"
#include "common/stats.h"

static const struct cfg_setting *loaded_tables[3];
static const struct daemon_desc *the_desc;
static char *written_pidfile;

const struct cfg_setting *const *daemon_settings(void) { return loaded_tables; }

static int errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return -1;
}

int daemon_write_pidfile(const char *path, char *err, size_t errlen)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return errf(err, errlen, "cannot write pidfile %s: %s", tmp, strerror(errno));
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
    if (write(fd, buf, (size_t)n) != n || close(fd) < 0 || rename(tmp, path) < 0) {
        unlink(tmp);
        return errf(err, errlen, "cannot write pidfile %s: %s", path, strerror(errno));
    }
    return 0;
}

int daemon_drop_privileges(const char *user, char *err, size_t errlen)
{
    if (geteuid() != 0)
        return 0; /* nothing to drop */
    struct passwd *pw = getpwnam(user);
    if (!pw)
        return errf(err, errlen, "unknown user '%s'", user);
    if (setgroups(0, NULL) < 0 || setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
        return errf(err, errlen, "cannot become '%s': %s", user, strerror(errno));
    return 0;
}

long daemon_fd_hard_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_max != RLIM_INFINITY)
        return (long)rl.rlim_max;
    long nr_open = 1048576; /* the kernel's ceiling for RLIMIT_NOFILE */
    FILE *f = fopen("/proc/sys/fs/nr_open", "r");
    if (f) {
        if (fscanf(f, "%ld", &nr_open) != 1)
            nr_open = 1048576;
        fclose(f);
    }
    return nr_open;
}

long daemon_raise_fd_limit(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if ((rlim_t)want > rl.rlim_cur) {
        struct rlimit nrl = rl;
        nrl.rlim_cur = (rlim_t)want;
        if (nrl.rlim_max < nrl.rlim_cur)
            nrl.rlim_max = nrl.rlim_cur; /* only root may raise the hard limit */
        if (setrlimit(RLIMIT_NOFILE, &nrl) < 0) {
            nrl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
            nrl.rlim_max = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &nrl);
        }
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return (long)rl.rlim_cur;
}

int daemon_detach(int *ready_fd, char *err, size_t errlen)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return errf(err, errlen, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        return errf(err, errlen, "fork: %s", strerror(errno));
    if (pid > 0) {
        /* the parent: wait for "ready" (or EOF: the daemon died) */
        close(p[1]);
        char c;
        ssize_t n;
        do
            n = read(p[0], &c, 1);
        while (n < 0 && errno == EINTR);
        _exit(n == 1 ? 0 : 1);
    }
    close(p[0]);
    setsid();
    pid = fork();
    if (pid < 0) {
        fprintf(stderr, "fork: %s\n", strerror(errno));
        _exit(1);
    }
    if (pid > 0)
        _exit(0); /* the session leader goes: the daemon can never get a terminal again */
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDIN_FILENO);
        dup2(null, STDOUT_FILENO); /* stderr stays until ready: start-up errors reach the terminal */
        if (null > STDERR_FILENO)
            close(null);
    }
    *ready_fd = p[1];
    return 0;
}

void daemon_detached_ready(int ready_fd, const char *ident)
{
    if (!core_opts.syslog && !(core_opts.log_file && *core_opts.log_file)) {
        /* stderr is about to go: its log lines go to syslog instead */
        int lvl = log_level_parse(core_opts.log_level);
        log_init(ident, lvl >= 0 ? (enum log_level)lvl : LOG_LEVEL_INFO, true, NULL);
    }
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
        dup2(null, STDERR_FILENO);
        close(null);
    }
    ssize_t w = write(ready_fd, "1", 1);
    (void)w;
    close(ready_fd);
}

void daemon_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len = strlen(path);
    if (len >= sizeof(sun.sun_path))
        return;
    memcpy(sun.sun_path, path, len);
    if (sun.sun_path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    ssize_t r = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
    (void)r;
    close(fd);
}

static void apply_log_level(void)
{
    int lvl = log_level_parse(core_opts.log_level);
    if (lvl >= 0)
        log_set_level((enum log_level)lvl);
}

static void on_reload(void)
{
    char err[512];
    daemon_notify("RELOADING=1");
    if (cfg_reload(loaded_tables, err, sizeof(err)) < 0)
        log_error("reload: %s (keeping the old settings where it failed)", err);
    apply_log_level();
    loop_set_grace(core_opts.grace);
    log_reopen();
    if (the_desc->hooks.on_reload)
        the_desc->hooks.on_reload();
    daemon_notify("READY=1");
}

int daemon_main(const struct daemon_desc *desc, int argc, char **argv)
{
    double started = stats_wall_time();
    char err[512];
    the_desc = desc;
    loaded_tables[0] = desc->settings;
    loaded_tables[1] = core_settings;
    loaded_tables[2] = NULL;

    int rc = cfg_load(loaded_tables, argc, argv, desc->name, desc->version, err, sizeof(err));
    if (rc == 1)
        return 0;
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", desc->name, err);
        return 64; /* EX_USAGE */
    }
    int lvl = log_level_parse(core_opts.log_level);
    if (lvl < 0) {
        fprintf(stderr, "%s: unknown log level '%s'\n", desc->name, core_opts.log_level);
        return 64;
    }
    log_init(desc->name, (enum log_level)lvl, core_opts.syslog, core_opts.log_file);
    /* Before any loop or thread exists: fork does not take threads along. */
    int ready_fd = -1;
    if (core_opts.daemonize && daemon_detach(&ready_fd, err, sizeof(err)) < 0) {
        log_error("%s", err);
        return 1;
    }
    stats_set_process_info(desc->version, started);
    stats_add_source("", stats_process_source, NULL);
    admin_set_info(desc->name, desc->version, loaded_tables);
    if (desc->admin_cmds)
        admin_register(desc->admin_cmds);

    int threads = desc->threads && *desc->threads > 0 ? *desc->threads : 1;
    if (loop_init(threads) < 0) {
        log_error("cannot create %d event loops", threads);
        return 1;
    }
    loop_set_grace(core_opts.grace);
    struct loop_hooks hooks = desc->hooks;
    hooks.on_reload = on_reload;
    loop_set_hooks(&hooks);

    /* Console, metrics and pidfile come before the daemon's own listeners:
     * once its service port accepts, all of them are there too (nothing is
     * served before the loops run). */
    if (core_opts.admin_listen && *core_opts.admin_listen &&
        admin_listen(core_opts.admin_listen, desc->default_admin_port, err, sizeof(err)) < 0) {
        log_error("console: %s", err);
        return 1;
    }
    if (core_opts.metrics_listen && *core_opts.metrics_listen &&
        stats_metrics_listen(core_opts.metrics_listen, desc->name, err, sizeof(err)) < 0) {
        log_error("metrics: %s", err);
        return 1;
    }
    if (core_opts.pidfile && *core_opts.pidfile) {
        if (daemon_write_pidfile(core_opts.pidfile, err, sizeof(err)) < 0) {
            log_error("%s", err);
            return 1;
        }
        written_pidfile = core_opts.pidfile;
    }
    /* Every descriptor the hard limit allows (memcached and nginx do the
     * same), before anything opens its files: --max-fds asks for a number
     * (root may raise the hard limit to reach it). */
    long want = core_opts.max_fds > 0 ? core_opts.max_fds : daemon_fd_hard_limit();
    long got = daemon_raise_fd_limit(want);
    if (got < want)
        log_warn("open-file limit is %ld, wanted %ld", got, want);
    if (desc->init && desc->init() < 0)
        goto fail;
    if (listen_max_conns() && (uint64_t)got < listen_max_conns() + 64)
        log_warn("open-file limit %ld leaves little room above %llu connections", got,
                 (unsigned long long)listen_max_conns());
    if (core_opts.user && *core_opts.user && daemon_drop_privileges(core_opts.user, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto fail;
    }
    daemon_notify("READY=1");
    if (ready_fd >= 0)
        daemon_detached_ready(ready_fd, desc->name);
    log_info("%s %s ready (%d thread%s)", desc->name, desc->version, threads, threads == 1 ? "" : "s");
    rc = loop_run();
    if (desc->fini)
        desc->fini();
    if (written_pidfile)
        unlink(written_pidfile);
    loop_free();
    log_info("stopped");
    return rc == 0 ? 0 : 1;
fail:
    if (written_pidfile)
        unlink(written_pidfile);
    return 1;
}

/* systemd hears of a graceful stop as it begins (see loop_layer). */
static void notify_stopping(void) { daemon_notify("STOPPING=1"); }

static const struct loop_layer daemon_layer = { .name = "daemon", .stop_requested = notify_stopping };

__attribute__((constructor)) static void daemon_register_layer(void) { loop_add_layer(&daemon_layer); }
