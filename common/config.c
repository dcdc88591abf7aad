/* config: settings tables -> command line, config file, --help, console.
 *
 * All CFG_STRING values are heap strings owned here (defaults are copied), so
 * a `set` from the console can free the old value. */
#include "common/config.h"
#include "common/log.h"
#include "common/num.h"

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/daemon.h"

struct core_opts core_opts;

static int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int check_log_level(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    (void)s;
    if (log_level_parse(value) < 0)
        return set_err(err, errlen, "log-level: '%s' is not one of error, warn, info, debug, trace", value);
    return 0;
}

const struct cfg_setting core_settings[] = {
    { "config", 0, CFG_STRING, &core_opts.config_file, NULL, "read settings from this file (key = value)", false,
      NULL },
    { "admin", 0, CFG_STRING, &core_opts.admin_listen, NULL,
      "telnet console listen address (host:port, unix:/path); empty = off", false, NULL },
    { "metrics", 0, CFG_STRING, &core_opts.metrics_listen, NULL, "Prometheus /metrics listen address; empty = off",
      false, NULL },
    { "log-level", 0, CFG_STRING, &core_opts.log_level, "info", "error, warn, info, debug or trace", true,
      check_log_level },
    { "syslog", 0, CFG_BOOL, &core_opts.syslog, "no", "log to syslog instead of stderr", false, NULL },
    { "log-file", 0, CFG_STRING, &core_opts.log_file, NULL, "append log lines to this file (reopened on SIGHUP)", false,
      NULL },
    { "pidfile", 0, CFG_STRING, &core_opts.pidfile, NULL, "write the process id to this file", false, NULL },
    { "user", 0, CFG_STRING, &core_opts.user, NULL, "drop privileges to this user after binding", false, NULL },
    { "max-fds", 0, CFG_INT, &core_opts.max_fds, "0", "raise the open-file limit to this (0 = the hard limit)", false,
      NULL },
    { "daemon", 'd', CFG_BOOL, &core_opts.daemonize, "no",
      "run in the background; the parent exits once the daemon is ready (0) or failed (1)", false, NULL },
    { "grace", 0, CFG_DOUBLE, &core_opts.grace, "10", "seconds a graceful stop waits for connections to finish", true,
      NULL },
    CFG_END
};

static char *loaded_config_path;

static int set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static bool name_eq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y)
            return false;
    }
    return *a == *b;
}

const struct cfg_setting *cfg_find(const struct cfg_setting *const *tables, const char *name)
{
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *s = tables[t]; s->name; s++)
            if (name_eq(s->name, name))
                return s;
    return NULL;
}

/* A setting's short letter, unless a setting met earlier (the daemon's own
 * table comes before the core's) already took it: then it has none. */
static char short_of(const struct cfg_setting *const *tables, const struct cfg_setting *s)
{
    if (!s->short_opt)
        return 0;
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *o = tables[t]; o->name; o++) {
            if (o == s)
                return s->short_opt;
            if (o->short_opt == s->short_opt && cfg_find(tables, o->name) == o)
                return 0;
        }
    return s->short_opt;
}

int cfg_parse_size(const char *s, uint64_t *out)
{
    if (!s || !*s)
        return -1;
    const char *end = s;
    while (*end >= '0' && *end <= '9')
        end++;
    uint64_t v;
    if (parse_u64(s, (size_t)(end - s), 0, UINT64_MAX, &v) != NUM_OK)
        return -1;
    uint64_t mul = 1;
    switch (*end) {
    case 'k':
    case 'K':
        mul = 1ULL << 10;
        end++;
        break;
    case 'm':
    case 'M':
        mul = 1ULL << 20;
        end++;
        break;
    case 'g':
    case 'G':
        mul = 1ULL << 30;
        end++;
        break;
    case 't':
    case 'T':
        mul = 1ULL << 40;
        end++;
        break;
    default: break;
    }
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return -1;
    if (mul > 1 && v > UINT64_MAX / mul)
        return -1;
    *out = (uint64_t)v * mul;
    return 0;
}

int cfg_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = { "1", "yes", "true", "on", "y" };
    static const char *const no[] = { "0", "no", "false", "off", "n" };
    for (size_t i = 0; i < 5; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int apply(const struct cfg_setting *s, const char *value, char *err, size_t errlen)
{
    const char *shown = s->secret && value ? "<redacted>" : value; /* what an error may echo */
    if (s->type != CFG_CUSTOM && s->custom && value && s->custom(s, value, err, errlen) < 0)
        return -1;
    switch (s->type) {
    case CFG_INT:
    case CFG_COUNT: {
        if (!value)
            return set_err(err, errlen, "%s needs a number", s->name);
        int v;
        if (parse_int_str(value, INT32_MIN, INT32_MAX, &v) != NUM_OK)
            return set_err(err, errlen, "%s: '%s' is not a whole number", s->name, shown);
        *(int *)s->ptr = v;
        return 0;
    }
    case CFG_SIZE: {
        uint64_t v;
        if (!value || cfg_parse_size(value, &v) < 0)
            return set_err(err, errlen, "%s: '%s' is not a size (e.g. 64, 64k, 64m, 1g)", s->name, shown ? shown : "");
        *(uint64_t *)s->ptr = v;
        return 0;
    }
    case CFG_DOUBLE: {
        if (!value)
            return set_err(err, errlen, "%s needs a number", s->name);
        errno = 0;
        char *end;
        double v = strtod(value, &end);
        if (errno || end == value || *end)
            return set_err(err, errlen, "%s: '%s' is not a number", s->name, shown);
        *(double *)s->ptr = v;
        return 0;
    }
    case CFG_BOOL: {
        bool v = true;
        if (value && cfg_parse_bool(value, &v) < 0)
            return set_err(err, errlen, "%s: '%s' is not yes/no", s->name, shown);
        *(bool *)s->ptr = v;
        return 0;
    }
    case CFG_STRING: {
        char **p = s->ptr;
        char *copy = value ? strdup(value) : NULL;
        if (value && !copy)
            return set_err(err, errlen, "out of memory");
        free(*p);
        *p = copy;
        return 0;
    }
    case CFG_CUSTOM:
        if (!s->custom)
            return set_err(err, errlen, "%s: no handler", s->name);
        return s->custom(s, value, err, errlen);
    }
    return set_err(err, errlen, "%s: bad type", s->name);
}

int cfg_set(const struct cfg_setting *const *tables, const char *name, const char *value, bool only_live, char *err,
            size_t errlen)
{
    const struct cfg_setting *s = cfg_find(tables, name);
    if (!s)
        return set_err(err, errlen, "unknown setting '%s'", name);
    if (only_live && !s->live)
        return set_err(err, errlen, "setting '%s' cannot change while running", name);
    return apply(s, value, err, errlen);
}

char *cfg_trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    char *e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

static int load_file(const struct cfg_setting *const *tables, const char *path, bool only_live, int depth, char *err,
                     size_t errlen)
{
    if (depth > 8)
        return set_err(err, errlen, "%s: includes nested too deeply", path);
    FILE *f = fopen(path, "r");
    if (!f)
        return set_err(err, errlen, "cannot read %s: %s", path, strerror(errno));
    char buf[4096];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(buf, sizeof(buf), f)) {
        lineno++;
        if (!strchr(buf, '\n') && !feof(f)) {
            rc = set_err(err, errlen, "%s:%d: line too long", path, lineno);
            break;
        }
        char *line = cfg_trim(buf);
        if (*line == '\0' || *line == '#')
            continue;
        if (strncmp(line, "include", 7) == 0 && (line[7] == ' ' || line[7] == '\t')) {
            char *inc = cfg_trim(line + 8), full[4096];
            if (inc[0] != '/') {
                const char *slash = strrchr(path, '/');
                snprintf(full, sizeof(full), "%.*s%s", slash ? (int)(slash - path + 1) : 0, path, inc);
            } else {
                snprintf(full, sizeof(full), "%s", inc);
            }
            rc = load_file(tables, full, only_live, depth + 1, err, errlen);
            continue;
        }
        char *eq = strchr(line, '=');
        char *key = line, *value = NULL;
        if (eq) {
            *eq = '\0';
            value = cfg_trim(eq + 1);
            key = cfg_trim(key);
        }
        const struct cfg_setting *s = cfg_find(tables, key);
        if (!s) {
            rc = set_err(err, errlen, "%s:%d: unknown setting '%s'", path, lineno, key);
            break;
        }
        if (only_live && !s->live)
            continue; /* reload: fixed settings keep their start-up value */
        char e2[256];
        if (apply(s, value, e2, sizeof(e2)) < 0)
            rc = set_err(err, errlen, "%s:%d: %s", path, lineno, e2);
    }
    fclose(f);
    return rc;
}

int cfg_load_file(const struct cfg_setting *const *tables, const char *path, bool only_live, char *err, size_t errlen)
{
    return load_file(tables, path, only_live, 0, err, errlen);
}

int cfg_reload(const struct cfg_setting *const *tables, char *err, size_t errlen)
{
    if (!loaded_config_path)
        return 0;
    return load_file(tables, loaded_config_path, true, 0, err, errlen);
}

static bool takes_arg(const struct cfg_setting *s) { return s->type != CFG_BOOL && s->type != CFG_COUNT; }

/* Builds getopt tables. Option index i (>= 256) maps to settings[i-256]. */
struct optbuild {
    struct option *longopts;
    const struct cfg_setting **by_index;
    char shortopts[256];
    size_t n;
};

static int build_opts(const struct cfg_setting *const *tables, struct optbuild *ob)
{
    size_t count = 0;
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *s = tables[t]; s->name; s++)
            count++;
    ob->longopts = calloc(count + 3, sizeof(*ob->longopts));
    ob->by_index = calloc(count + 1, sizeof(*ob->by_index));
    if (!ob->longopts || !ob->by_index)
        return -1;
    size_t sp = 0, n = 0;
    ob->shortopts[sp++] = ':';
    bool used_h = false, used_V = false;
    for (size_t t = 0; tables[t]; t++) {
        for (const struct cfg_setting *s = tables[t]; s->name; s++) {
            if (cfg_find(tables, s->name) != s)
                continue; /* shadowed by an earlier table */
            ob->by_index[n] = s;
            ob->longopts[n].name = s->name;
            ob->longopts[n].has_arg = takes_arg(s)          ? required_argument
                                      : s->type == CFG_BOOL ? optional_argument
                                                            : no_argument;
            ob->longopts[n].flag = NULL;
            ob->longopts[n].val = 256 + (int)n;
            char so = short_of(tables, s);
            if (so && sp + 3 < sizeof(ob->shortopts)) {
                ob->shortopts[sp++] = so;
                if (takes_arg(s))
                    ob->shortopts[sp++] = ':';
                used_h |= so == 'h';
                used_V |= so == 'V';
            }
            n++;
        }
    }
    if (!used_h)
        ob->shortopts[sp++] = 'h';
    if (!used_V)
        ob->shortopts[sp++] = 'V';
    ob->shortopts[sp] = '\0';
    ob->longopts[n] = (struct option){ "help", no_argument, NULL, 'h' };
    ob->longopts[n + 1] = (struct option){ "version", no_argument, NULL, 'V' };
    ob->n = n;
    return 0;
}

static const struct cfg_setting *setting_for(const struct optbuild *ob, int c)
{
    if (c >= 256 && (size_t)(c - 256) < ob->n)
        return ob->by_index[c - 256];
    for (size_t i = 0; i < ob->n; i++)
        if (ob->by_index[i]->short_opt == c)
            return ob->by_index[i];
    return NULL;
}

int cfg_load(const struct cfg_setting *const *tables, int argc, char **argv, const char *progname, const char *version,
             char *err, size_t errlen)
{
    /* Defaults. */
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *s = tables[t]; s->name; s++) {
            if (s->type == CFG_STRING) {
                free(*(char **)s->ptr);
                *(char **)s->ptr = NULL;
                if (s->def)
                    *(char **)s->ptr = strdup(s->def);
            } else if (s->def && apply(s, s->def, err, errlen) < 0) {
                return -1;
            }
        }

    struct optbuild ob;
    memset(&ob, 0, sizeof(ob));
    if (build_opts(tables, &ob) < 0)
        return set_err(err, errlen, "out of memory");

    int rc = 0;
    /* Pass 1: only the config file (and help/version). */
    const struct cfg_setting *config = cfg_find(tables, "config");
    opterr = 0;
    optind = 0;
    int c;
    while ((c = getopt_long(argc, argv, ob.shortopts, ob.longopts, NULL)) != -1) {
        if (c == 'h' && !setting_for(&ob, 'h')) {
            cfg_usage(tables, progname, stdout);
            rc = 1;
            goto out;
        }
        if (c == 'V' && !setting_for(&ob, 'V')) {
            printf("%s %s\n", progname, version);
            rc = 1;
            goto out;
        }
        const struct cfg_setting *s = setting_for(&ob, c);
        if (s && s == config && apply(s, optarg, err, errlen) < 0) {
            rc = -1;
            goto out;
        }
    }
    if (config && *(char **)config->ptr) {
        free(loaded_config_path);
        loaded_config_path = strdup(*(char **)config->ptr);
        if (load_file(tables, loaded_config_path, false, 0, err, errlen) < 0) {
            rc = -1;
            goto out;
        }
    }
    /* Pass 2: everything; COUNT flags start from zero when given. */
    optind = 0;
    bool counted[512] = { false };
    while ((c = getopt_long(argc, argv, ob.shortopts, ob.longopts, NULL)) != -1) {
        if (c == '?') {
            rc = set_err(err, errlen, "unknown option '%s' (see --help)", argv[optind - 1]);
            goto out;
        }
        if (c == ':') {
            rc = set_err(err, errlen, "option '%s' needs a value", argv[optind - 1]);
            goto out;
        }
        const struct cfg_setting *s = setting_for(&ob, c);
        if (!s)
            continue;
        if (s->type == CFG_COUNT) {
            size_t idx = 0;
            while (idx < ob.n && ob.by_index[idx] != s)
                idx++;
            if (idx < sizeof(counted) && !counted[idx]) {
                *(int *)s->ptr = 0;
                counted[idx] = true;
            }
            (*(int *)s->ptr)++;
            continue;
        }
        if (apply(s, optarg, err, errlen) < 0) {
            rc = -1;
            goto out;
        }
    }
    if (optind < argc)
        rc = set_err(err, errlen, "unexpected argument '%s'", argv[optind]);
out:
    free(ob.longopts);
    free(ob.by_index);
    return rc;
}

static struct {
    const struct cfg_setting *s;
    cfg_format_fn fn;
} formatters[64];
static int nformatters;

void cfg_set_formatter(const struct cfg_setting *s, cfg_format_fn fn)
{
    for (int i = 0; i < nformatters; i++)
        if (formatters[i].s == s) {
            formatters[i].fn = fn;
            return;
        }
    if (nformatters < 64)
        formatters[nformatters++] = (typeof(formatters[0])){ s, fn };
}

static cfg_format_fn formatter_of(const struct cfg_setting *s)
{
    for (int i = 0; i < nformatters; i++)
        if (formatters[i].s == s)
            return formatters[i].fn;
    return NULL;
}

const char *cfg_format(const struct cfg_setting *s, char *buf, size_t len)
{
    switch (s->type) {
    case CFG_INT:
    case CFG_COUNT: snprintf(buf, len, "%d", *(int *)s->ptr); break;
    case CFG_SIZE: snprintf(buf, len, "%llu", (unsigned long long)*(uint64_t *)s->ptr); break;
    case CFG_DOUBLE: snprintf(buf, len, "%g", *(double *)s->ptr); break;
    case CFG_BOOL: snprintf(buf, len, "%s", *(bool *)s->ptr ? "yes" : "no"); break;
    case CFG_STRING: snprintf(buf, len, "%s", *(char **)s->ptr ? *(char **)s->ptr : ""); break;
    case CFG_CUSTOM: {
        cfg_format_fn fn = formatter_of(s);
        if (fn)
            fn(s, buf, len);
        else
            snprintf(buf, len, "%s", s->def ? s->def : "");
        break;
    }
    }
    return buf;
}

void cfg_usage(const struct cfg_setting *const *tables, const char *progname, FILE *out)
{
    fprintf(out, "Usage: %s [options]\n\nOptions:\n", progname);
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *s = tables[t]; s->name; s++) {
            if (cfg_find(tables, s->name) != s)
                continue;
            char opt[64];
            const char *arg = s->type == CFG_BOOL || s->type == CFG_COUNT      ? ""
                              : s->type == CFG_STRING || s->type == CFG_CUSTOM ? "=STR"
                                                                               : "=NUM";
            if (short_of(tables, s))
                snprintf(opt, sizeof(opt), "-%c, --%s%s", short_of(tables, s), s->name, arg);
            else
                snprintf(opt, sizeof(opt), "    --%s%s", s->name, arg);
            fprintf(out, "  %-30s %s", opt, s->help ? s->help : "");
            if (s->def && *s->def && !s->secret)
                fprintf(out, " (default: %s)", s->def);
            fprintf(out, "%s\n", s->live ? " [live]" : "");
        }
    fprintf(out, "  %-30s %s\n  %-30s %s\n", "-h, --help", "show this help", "-V, --version", "show the version");
}

void cfg_show(const struct cfg_setting *const *tables, struct evbuffer *out)
{
    for (size_t t = 0; tables[t]; t++)
        for (const struct cfg_setting *s = tables[t]; s->name; s++) {
            if (cfg_find(tables, s->name) != s)
                continue;
            char v[512];
            const char *value = cfg_format(s, v, sizeof(v));
            if (s->secret && *value)
                value = "<redacted>";
            evbuffer_add_printf(out, "%s = %s%s\r\n", s->name, value, s->live ? "  [live]" : "");
        }
}
