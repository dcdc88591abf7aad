/* log: levelled logging to stderr (for journald: native priorities when
 * stderr is the journal's stream) or syslog.
 *
 * Owns the process-wide log level and destination. Nothing above `info` may be
 * logged on a hot path; check log_enabled() before building expensive text. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_ERROR = 0, LOG_LEVEL_WARN, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG, LOG_LEVEL_TRACE };

/* ident: program name for prefixes/syslog. file: NULL for stderr, else a
 * path appended to (reopened by log_reopen, e.g. on SIGHUP). */
void log_init(const char *ident, enum log_level level, bool use_syslog, const char *file);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug", "trace" (or 0..4); -1 if unknown. */
int log_level_parse(const char *s);
void log_reopen(void);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

extern enum log_level log_current_level;
#define log_enabled(lvl) ((lvl) <= log_current_level)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)
#define log_warn(...)                                                                                                  \
    do {                                                                                                               \
        if (log_enabled(LOG_LEVEL_WARN))                                                                               \
            log_msg(LOG_LEVEL_WARN, __VA_ARGS__);                                                                      \
    } while (0)
#define log_info(...)                                                                                                  \
    do {                                                                                                               \
        if (log_enabled(LOG_LEVEL_INFO))                                                                               \
            log_msg(LOG_LEVEL_INFO, __VA_ARGS__);                                                                      \
    } while (0)
#define log_debug(...)                                                                                                 \
    do {                                                                                                               \
        if (log_enabled(LOG_LEVEL_DEBUG))                                                                              \
            log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                                                     \
    } while (0)

#endif
