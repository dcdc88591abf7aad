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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

enum log_level log_current_level = LOG_LEVEL_INFO;

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

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (level > log_current_level)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
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
