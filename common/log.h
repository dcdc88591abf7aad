/* log: levelled logging to stderr (for journald: native priorities when
 * stderr is the journal's stream) or syslog.
 *
 * Owns the process-wide log level and destination. Nothing above `info` may be
 * logged on a hot path; check log_enabled() before building expensive text. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stdbool.h>
#include <stddef.h>

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

/* -v/-vv/-vvv (the "verbose" setting, a count): 2 and up adds one debug line
 * per command a client sent (log_command), 3 and up all debug messages, at
 * any --log-level. A daemon puts LOG_VERBOSE_SETTING in its settings table
 * (it needs common/config.h) and calls log_command in its dispatcher. */
extern int log_verbosity;
#define LOG_VERBOSE_SETTING                                                                                            \
    {                                                                                                                  \
        "verbose", 'v', CFG_COUNT, &log_verbosity, "0",                                                                \
            "-vv: a debug line per client command and its result; -vvv: all debug messages", true, NULL                \
    }

extern enum log_level log_current_level;
#define log_enabled(lvl) ((lvl) <= log_current_level || ((lvl) <= LOG_LEVEL_DEBUG && log_verbosity >= 3))

/* Is a per-command line wanted (-vv, or --log-level=debug)? Check before
 * building the text of one. */
#define log_command_enabled() (log_verbosity >= 2 || log_current_level >= LOG_LEVEL_DEBUG)

/* One debug line for one client command: "cmd <who>: <command> -> <result>".
 * who: the client (address, or a user/JID), may be NULL. command: what the
 * client sent; secret: it carries a password, SASL data or the like, so only
 * its first word is printed, then "<redacted>". result: the answer (its first
 * line only). Both are cut at LOG_COMMAND_MAX bytes ("..." marks a cut) and
 * control bytes become spaces; a caller must still leave out of result
 * anything secret. Printed when log_command_enabled(), at debug priority. */
/* "ip:port" ("[v6]:port", "unix") of a struct sockaddr for log_command's who. */
const char *log_addr(const void *sockaddr, char *buf, size_t len);
#define LOG_COMMAND_MAX 200
void log_command(const char *who, const char *command, size_t command_len, bool secret, const char *result,
                 size_t result_len);
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
