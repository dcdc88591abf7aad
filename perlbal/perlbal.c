/* perlbal: HTTP web server, reverse proxy and load balancer, compatible
 * with Perl Perlbal 1.80's configuration language and management console.
 *
 * This file is the wiring: the daemon's settings, start-up (run the
 * Perlbal config file: it creates pools and services and enables their
 * listeners), the per-loop housekeeping timer, and stop. The roles live in
 * session.c / proxy.c / backend.c / web.c; the language in proto_manage.c (parse) and
 * cmd_manage.c (execute); the registry in service.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/daemon.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/uring.h"
#include "common/httpc.h"
#include "common/work.h"
#include "perlbal/accesslog.h"
#include "perlbal/perlbal.h"

static char *opt_config;
static char *no_core_config; /* stays NULL: the core never reads --config as key = value */
static int opt_threads;
static bool opt_daemon;
static int opt_verbose;

#define PB_DEFAULT_CONFIG "/etc/perlbal/perlbal.conf"

/* --config=FILE is Perlbal's own flag (what its init scripts type): the file
 * is in Perlbal's language, so it is taken here, not by the core. */
static int set_config(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    (void)err;
    (void)errlen;
    free(opt_config);
    opt_config = strdup(value);
    return opt_config ? 0 : -1;
}

static const struct cfg_setting pb_settings[] = {
    { "config", 'c', CFG_CUSTOM, &no_core_config, NULL,
      "Perlbal config file (CREATE POOL/SERVICE, SET, ENABLE ...); default " PB_DEFAULT_CONFIG " if it exists", false,
      set_config },
    { "perlbal-config", 0, CFG_CUSTOM, &no_core_config, NULL, "the same as --config", false, set_config },
    { "daemon", 'd', CFG_BOOL, &opt_daemon, "0", "detach and run in the background (as Perlbal's --daemon)", false,
      NULL },
    { "threads", 't', CFG_INT, &opt_threads, "1", "event-loop threads (SO_REUSEPORT listeners)", false, NULL },
    { "verbose", 'v', CFG_COUNT, &opt_verbose, "0", "-v: info; -vv: a debug line per request and console command",
      false, NULL },
    CFG_END
};

/* As Perlbal's daemonize: fork (the parent exits), new session, cwd /,
 * stdio to /dev/null. Before any loop thread exists. The pidfile written by
 * the core names the parent: it is written again for the child. */
static int daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        log_error("perlbal: fork: %s", strerror(errno));
        return -1;
    }
    if (pid > 0)
        _exit(0);
    if (setsid() < 0) {
        log_error("perlbal: setsid: %s", strerror(errno));
        return -1;
    }
    if (chdir("/") < 0)
        return -1;
    umask(0);
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, 0);
        dup2(fd, 1);
        if (!core_opts.log_file || !*core_opts.log_file)
            dup2(fd, 2);
        if (fd > 2)
            close(fd);
    }
    if (core_opts.pidfile && *core_opts.pidfile) {
        char err[256];
        if (daemon_write_pidfile(core_opts.pidfile, err, sizeof err) < 0)
            log_warn("perlbal: %s", err);
    }
    return 0;
}

static struct event *tick_ev[PB_MAX_LOOPS];

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct core_loop *loop = arg;
    if (loop->index == 0) {
        for (struct pb_pool *p = pb_pools; p; p = p->next)
            pb_pool_check_nodefile(p);
        pb_backend_reap();
    }
    for (struct pb_service *s = pb_services; s; s = s->next)
        if (s->role == PB_ROLE_REVERSE_PROXY)
            pb_proxy_loop_tick(s, loop->index);
}

static void on_thread_start(struct core_loop *loop)
{
    if (loop->index >= PB_MAX_LOOPS)
        return;
    struct timeval tv = { 1, 0 };
    tick_ev[loop->index] = event_new(loop->base, -1, EV_PERSIST, tick_cb, loop);
    event_add(tick_ev[loop->index], &tv);
}

static void on_thread_exit(struct core_loop *loop)
{
    httpd_thread_exit();
    httpc_thread_exit();
    if (loop->index < PB_MAX_LOOPS && tick_ev[loop->index]) {
        event_free(tick_ev[loop->index]);
        tick_ev[loop->index] = NULL;
    }
}

static void stop_tick(void *arg)
{
    struct event *ev = arg;
    event_del(ev);
}

static void on_stop(void)
{
    pb_close_all_listeners();
    for (int i = 0; i < loop_count() && i < PB_MAX_LOOPS; i++)
        if (tick_ev[i])
            loop_call(loop_get(i), stop_tick, tick_ev[i]);
}

static void apply_verbose(void)
{
    if (opt_verbose >= 2)
        log_set_level(LOG_LEVEL_DEBUG);
    else if (opt_verbose == 1 && log_get_level() < LOG_LEVEL_INFO)
        log_set_level(LOG_LEVEL_INFO);
    pb_debug_requests = opt_verbose >= 2;
}

/* SIGHUP: TLS pairs re-read, the access log reopened (logrotate) */
static void on_reload(void)
{
    apply_verbose(); /* the core has just re-applied --log-level */
    pb_tls_reload();
    pb_accesslog_reopen();
}

static int pb_init(void)
{
    pb_start_time = (double)time(NULL);
    apply_verbose();
    pb_metrics_init();
    if (loop_count() > PB_MAX_LOOPS) {
        log_error("perlbal: at most %d threads", PB_MAX_LOOPS);
        return -1;
    }
    pb_manage_admin_fallback_init();
    if (!opt_config && access(PB_DEFAULT_CONFIG, R_OK) == 0)
        opt_config = strdup(PB_DEFAULT_CONFIG);
    if (!opt_config) {
        log_error("perlbal: no config file given (--config=perlbal.conf)");
        return -1;
    }
    char err[512];
    if (pb_manage_run_file(opt_config, err, sizeof err) < 0) {
        log_error("perlbal: %s", err);
        return -1;
    }
    if (opt_daemon && daemonize() < 0)
        return -1;
    /* after the fork: threads do not survive it */
    if (pb_aio_on) {
        pb_disk_pool = work_pool_new("pb-disk", pb_aio_threads, 65536);
        if (!pb_disk_pool)
            log_warn("perlbal: no disk worker pool (%s): disk work runs on the loops", strerror(errno));
        pb_set_aio(-1, -1);
    }
    if (pb_accesslog_start(err, sizeof err) < 0) {
        log_error("perlbal: %s", err);
        return -1;
    }
    return 0;
}

static void pb_fini(void)
{
    pb_accesslog_stop();
    if (pb_disk_pool) {
        struct work_pool *p = pb_disk_pool;
        pb_disk_pool = NULL;
        work_pool_free(p);
    }
}

int main(int argc, char **argv)
{
    /* socket I/O batched through io_uring unless $STACK_IO_URING says
     * otherwise (0, no, off): a proxied request costs 4 system calls on
     * epoll and well under one in a batch, most of its CPU on a kernel
     * where each system call is dear (README, Benchmark); where io_uring
     * cannot be set up the core says so once and stays on epoll */
    uring_default(true);
    static const struct daemon_desc desc = {
        .name = "perlbal",
        .version = PB_VERSION,
        .settings = pb_settings,
        .threads = &opt_threads,
        .default_admin_port = 0,
        .init = pb_init,
        .fini = pb_fini,
        .hooks = { .on_stop = on_stop,
                   .on_reload = on_reload,
                   .on_thread_start = on_thread_start,
                   .on_thread_exit = on_thread_exit },
        .admin_cmds = NULL,
    };
    return daemon_main(&desc, argc, argv);
}
