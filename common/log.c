/* log: levelled messages to stderr (journald adds the time) or syslog, or
 * appended to a file that SIGHUP reopens. Thread-safe: each message is one
 * write.
 *
 * Under systemd, when stderr is the journal's stream (JOURNAL_STREAM names
 * its device and inode), each line starts with the kernel-style priority
 * "<3>".."<7>" that journald turns into the entry's priority, and carries
 * no name or pid (the journal records both). Control characters in a
 * message (a client's bytes in an error) become spaces: one message, one
 * line, one journal entry. */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_level log_current_level = LOG_LEVEL_INFO;
int log_verbosity;

static const char *log_ident = "core";
static bool log_to_syslog;
static char *log_path;
static int log_fd = STDERR_FILENO;
static bool log_to_journal;

/* Is stderr the journal's stream? systemd sets JOURNAL_STREAM=dev:ino. */
static bool stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

static const char *const level_names[] = { "error", "warn", "info", "debug", "trace" };

void log_init(const char *ident, enum log_level level, bool use_syslog, const char *file)
{
    log_ident = ident ? ident : "core";
    log_current_level = level;
    log_to_syslog = use_syslog;
    free(log_path);
    log_path = file && *file ? strdup(file) : NULL;
    if (log_to_syslog)
        openlog(log_ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_to_journal = !log_to_syslog && !log_path && stderr_is_journal();
    if (!log_path && log_fd != STDERR_FILENO) { /* from a file back to stderr */
        close(log_fd);
        log_fd = STDERR_FILENO;
    }
    log_reopen();
}

void log_set_level(enum log_level level) { log_current_level = level; }
enum log_level log_get_level(void) { return log_current_level; }

int log_level_parse(const char *s)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return (int)i;
    if (strcasecmp(s, "warning") == 0)
        return LOG_LEVEL_WARN;
    if (s[0] >= '0' && s[0] <= '4' && s[1] == '\0')
        return s[0] - '0';
    return -1;
}

void log_reopen(void)
{
    if (!log_path)
        return;
    int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) {
        log_msg(LOG_LEVEL_ERROR, "cannot open log file %s: %s", log_path, strerror(errno));
        return;
    }
    int old = log_fd;
    log_fd = fd;
    if (old != STDERR_FILENO)
        close(old);
}

static void log_write(enum log_level level, char *msg);

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, msg);
}

/* Copy at most max bytes of s[0..len) up to its first line break into out
 * (room for max + 4), marking a cut with "...". */
static void clip(char *out, size_t max, const char *s, size_t len, bool first_line)
{
    size_t n = 0;
    if (!s)
        len = 0;
    while (n < len && n < max && !(first_line && (s[n] == '\r' || s[n] == '\n')))
        n++;
    memcpy(out, s ? s : "", n);
    if (n == max && n < len && !(first_line && (s[n] == '\r' || s[n] == '\n')))
        memcpy(out + n, "...", 3), n += 3;
    out[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
            out[i] = ' ';
}

void log_command(const char *who, const char *command, size_t command_len, bool secret, const char *result,
                 size_t result_len)
{
    if (!log_command_enabled())
        return;
    char cmd[LOG_COMMAND_MAX + 4], res[LOG_COMMAND_MAX + 4], msg[2 * LOG_COMMAND_MAX + 200];
    if (secret) {
        size_t w = 0;
        while (w < command_len && w < 64 && command[w] != ' ' && command[w] != '\r' && command[w] != '\n')
            w++;
        clip(cmd, 64, command, w, true);
        if (w < command_len)
            strcat(cmd, " <redacted>");
    } else {
        clip(cmd, LOG_COMMAND_MAX, command, command_len, false);
    }
    clip(res, LOG_COMMAND_MAX, result, result_len, true);
    snprintf(msg, sizeof msg, "cmd %.64s%s%s -> %s", who ? who : "", who ? ": " : "", cmd, res);
    log_write(LOG_LEVEL_DEBUG, msg);
}

const char *log_addr(const void *sockaddr, char *buf, size_t len)
{
    const struct sockaddr *sa = sockaddr;
    char host[NI_MAXHOST], serv[NI_MAXSERV];
    if (!sa || (sa->sa_family != AF_INET && sa->sa_family != AF_INET6)) {
        snprintf(buf, len, "%s", sa && sa->sa_family == AF_UNIX ? "unix" : "-");
        return buf;
    }
    socklen_t sl = sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (getnameinfo(sa, sl, host, sizeof host, serv, sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, sa->sa_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
    return buf;
}

static void log_write(enum log_level level, char *msg)
{
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            *p = ' ';

    if (log_to_syslog) {
        static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG, LOG_DEBUG };
        syslog(prio[level], "%s", msg);
        return;
    }
    char line[2200];
    int n;
    if (log_fd == STDERR_FILENO && log_to_journal) {
        static const int prio[] = { 3, 4, 6, 7, 7 }; /* err, warning, info, debug */
        n = snprintf(line, sizeof(line), "<%d>%s: %s\n", prio[level], level_names[level], msg);
    } else if (log_fd == STDERR_FILENO) {
        n = snprintf(line, sizeof(line), "%s[%d]: %s: %s\n", log_ident, (int)getpid(), level_names[level], msg);
    } else {
        /* A plain file gets its own timestamps. */
        char ts[32];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        n = snprintf(line, sizeof(line), "%s %s[%d]: %s: %s\n", ts, log_ident, (int)getpid(), level_names[level], msg);
    }
    if (n > (int)sizeof(line))
        n = sizeof(line);
    ssize_t w = write(log_fd, line, (size_t)n);
    (void)w;
}
