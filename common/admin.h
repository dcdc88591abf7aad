/* admin: the telnet console.
 *
 * A line-based command table. Built in: help, stats [group], version,
 * show settings, set <name> <value> (live settings), loglevel <level>,
 * quit, shutdown [graceful]. Each daemon registers its own commands; a later
 * registration of the same name replaces the earlier one. Lines that match
 * no command go to the fallback if one is set (Perlbal's management
 * language), else get "ERROR unknown command". Replies end in CRLF.
 *
 * The console can be given its own listener (admin_listen) or embedded in a
 * daemon's protocol port through admin_exec (gearmand's text commands). */
#ifndef CORE_ADMIN_H
#define CORE_ADMIN_H

#include <stddef.h>

struct evbuffer;
struct core_conn;
struct cfg_setting;

enum admin_result { ADMIN_OK = 0, ADMIN_CLOSE = 1, ADMIN_UNKNOWN = 2 };

struct admin_ctx {
    struct evbuffer *out;   /* reply goes here */
    struct core_conn *conn; /* NULL when not on a console connection */
    void *session;          /* per-connection slot for the daemon's use */
};

/* argv[0] is the command word; argv strings are writable and NUL-ended. */
typedef enum admin_result (*admin_fn)(struct admin_ctx *ctx, int argc, char **argv);
/* Gets the whole line (writable, NUL-ended) when no command matched. */
typedef enum admin_result (*admin_fallback_fn)(struct admin_ctx *ctx, char *line, size_t len);

struct admin_cmd {
    const char *name;
    const char *usage; /* e.g. "stats [group]" */
    const char *help;  /* one line */
    admin_fn fn;
};

/* cmds ends with an entry whose name is NULL. The array must outlive use. */
void admin_register(const struct admin_cmd *cmds);
void admin_set_fallback(admin_fallback_fn fn);
/* Program name, version and settings tables for the built-ins. */
void admin_set_info(const char *progname, const char *version, const struct cfg_setting *const *tables);

/* Run one command line (without its terminator; writable). */
enum admin_result admin_exec(struct admin_ctx *ctx, char *line, size_t len);

/* Open a console listener (after loop_init, before loop_run). */
int admin_listen(const char *spec, int default_port, char *err, size_t errlen);

/* printf into ctx->out. */
void admin_printf(struct admin_ctx *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
