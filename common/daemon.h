/* daemon: the start-up and shut-down sequence every daemon shares, plus
 * pidfile, privilege drop, file-descriptor rlimit and sd_notify readiness.
 *
 * daemon_main(): parse settings (daemon table + core_settings) -> logging ->
 * loops (signals caught from here) -> console and metrics listeners ->
 * pidfile -> raise fd limit -> desc->init() (open listeners, storage) ->
 * drop privileges -> READY=1 -> run loops until TERM -> desc->fini() ->
 * remove pidfile. Once the service port accepts, console, metrics and
 * pidfile exist too. Daemons stay in the foreground (systemd, journald)
 * unless -d/--daemon asks for the classic fork into the background (init
 * scripts and Debian configs use it): the parent then exits 0 once the
 * daemon is ready, or 1 if it failed to start (its errors still reach the
 * terminal); afterwards stdio is /dev/null and logs that went to stderr go
 * to syslog. The working directory is kept (relative paths stay valid). */
#ifndef CORE_DAEMON_H
#define CORE_DAEMON_H

#include <stdbool.h>
#include <stddef.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/loop.h"

/* Filled from core_settings. */
struct core_opts {
    char *config_file;
    char *admin_listen;   /* console listen spec; NULL/"" = off */
    char *metrics_listen; /* Prometheus listen spec; NULL/"" = off */
    char *log_level;
    bool syslog;
    char *log_file;
    char *pidfile;
    char *user;
    int max_fds;
    double grace;   /* seconds a graceful stop waits */
    bool daemonize; /* -d: run in the background */
};
extern struct core_opts core_opts;

struct daemon_desc {
    const char *name; /* "memcached"; also the metrics namespace */
    const char *version;
    const struct cfg_setting *settings; /* the daemon's own table (CFG_END-ended) */
    int *threads;                       /* setting holding the loop count; NULL = 1 */
    int default_admin_port;             /* used when --admin has no port; 0 = none */
    /* After settings are loaded and loops exist, before privileges are
     * dropped: open listeners and storage. Return 0, or -1 after logging why. */
    int (*init)(void);
    /* After the loops have stopped; release storage. May be NULL. */
    void (*fini)(void);
    struct loop_hooks hooks;
    const struct admin_cmd *admin_cmds; /* may be NULL */
};

/* Returns the process exit code. */
int daemon_main(const struct daemon_desc *desc, int argc, char **argv);

/* The tables daemon_main loaded (the daemon's, then core_settings). */
const struct cfg_setting *const *daemon_settings(void);

int daemon_write_pidfile(const char *path, char *err, size_t errlen);
int daemon_drop_privileges(const char *user, char *err, size_t errlen);
/* Raise RLIMIT_NOFILE towards want (capped by the hard limit, raised if
 * root). Returns the soft limit now in force. daemon_main raises it to the
 * hard limit (or --max-fds) before the daemon's init. */
long daemon_raise_fd_limit(long want);
/* The hard limit (the kernel's nr_open when unlimited). */
long daemon_fd_hard_limit(void);
/* Fork into the background (setsid, second fork). Returns in the daemon
 * with *ready_fd to pass to daemon_detached_ready(); the parent waits
 * there and exits with the start-up result. -1 + err if fork fails. */
int daemon_detach(int *ready_fd, char *err, size_t errlen);
/* The detached daemon is ready: release the waiting parent (exit 0), and
 * let go of the terminal. */
void daemon_detached_ready(int ready_fd, const char *ident);

/* sd_notify(3) protocol on $NOTIFY_SOCKET ("READY=1", "STOPPING=1",
 * "RELOADING=1"); a no-op when not under systemd with Type=notify. */
void daemon_notify(const char *state);

#endif
