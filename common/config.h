/* config: one declarative table of settings per daemon.
 *
 * From the table come the command-line options (getopt_long), the config
 * file (`key = value`, `#` comments, `include path`), --help, the console's
 * `show settings` and live `set`. A daemon passes a NULL-terminated array of
 * tables: its own first, then core_settings (config, admin, metrics, log,
 * pidfile, user...). Earlier tables win on a name clash.
 *
 * Precedence: defaults < config file < command line. */
#ifndef CORE_CONFIG_H
#define CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct evbuffer;
struct cfg_setting;

enum cfg_type {
    CFG_INT,    /* int;  "123", "-1" */
    CFG_SIZE,   /* uint64_t; "64", "64k", "64m", "1g" (powers of 1024) */
    CFG_DOUBLE, /* double */
    CFG_BOOL,   /* bool; on the command line a flag without argument;
                   in a file yes/no/true/false/on/off/1/0 */
    CFG_COUNT,  /* int; each occurrence of the flag adds one (-v -vv) */
    CFG_STRING, /* char * (heap, owned here: the variable must start NULL,
                   never a literal); default may be NULL */
    CFG_CUSTOM, /* handled by .custom(); .ptr is passed through */
};

/* Returns 0, or -1 with a message in err. */
typedef int (*cfg_custom_fn)(const struct cfg_setting *s, const char *value, char *err, size_t errlen);
/* Writes the running value as text (console `show settings`). */
typedef void (*cfg_format_fn)(const struct cfg_setting *s, char *buf, size_t len);

struct cfg_setting {
    const char *name; /* long option and file key, e.g. "max-conns" ('_' and '-' are equal) */
    char short_opt;   /* 'c', or 0 */
    enum cfg_type type;
    void *ptr;       /* where the value goes */
    const char *def; /* default as text; NULL = leave *ptr as is */
    const char *help;
    bool live;            /* may be changed at run time (console `set`, SIGHUP reload) */
    cfg_custom_fn custom; /* CFG_CUSTOM: parses and stores the value. Any other
                           * type: a check run before the value is taken
                           * (-1 refuses it: `set log-level loud` is an error) */
    bool secret;          /* a password or key: `show settings` prints `<redacted>`
                           * for a value that is set, --help never prints its
                           * default, and a refused value is not echoed back */
};

/* How `show settings` (cfg_format) writes a CFG_CUSTOM setting's running
 * value; without one it shows the default text, which may be stale (-m 128
 * shown as 64). Register at start-up, before the loops run; at most 64. */
void cfg_set_formatter(const struct cfg_setting *s, cfg_format_fn fn);

#define CFG_END                                                                                                        \
    {                                                                                                                  \
        0                                                                                                              \
    }

/* The settings every daemon has (see core_opts in daemon.h). */
extern const struct cfg_setting core_settings[];

/* Apply defaults, then the config file (from --config/-C if present on the
 * command line), then the command line. Returns 0; 1 if --help/-h or
 * --version was handled (caller exits 0); -1 on error (message in err). */
int cfg_load(const struct cfg_setting *const *tables, int argc, char **argv, const char *progname, const char *version,
             char *err, size_t errlen);

/* Set one value by name, as from the file or the console. only_live: refuse
 * settings that are not live. Returns 0 or -1 with err. */
int cfg_set(const struct cfg_setting *const *tables, const char *name, const char *value, bool only_live, char *err,
            size_t errlen);

/* Re-read the config file given at start (SIGHUP); only live settings change. */
int cfg_reload(const struct cfg_setting *const *tables, char *err, size_t errlen);

/* Read a file of `key = value` lines; `include other` nests (relative to the
 * including file's folder, depth-limited). */
int cfg_load_file(const struct cfg_setting *const *tables, const char *path, bool only_live, char *err, size_t errlen);

void cfg_usage(const struct cfg_setting *const *tables, const char *progname, FILE *out);
/* Current value of a setting as text into buf, as it is (secret or not:
 * callers that print it check s->secret). Returns buf. */
const char *cfg_format(const struct cfg_setting *s, char *buf, size_t len);
/* `name = value` lines for every setting, CRLF-ended; a secret setting's
 * value (when set) is `<redacted>`. */
void cfg_show(const struct cfg_setting *const *tables, struct evbuffer *out);
const struct cfg_setting *cfg_find(const struct cfg_setting *const *tables, const char *name);

/* Parse helpers shared with protocol code. 0 ok, -1 bad. */
int cfg_parse_size(const char *s, uint64_t *out);
int cfg_parse_bool(const char *s, bool *out);

/* Strip spaces and tabs in front and blanks (with CR/LF) behind, in place:
 * how a config line's key and value are read. */
char *cfg_trim(char *s);

#endif
