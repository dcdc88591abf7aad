/* proto_sw: the pure parser of schwartzd's request lines (PROTOCOL.md).
 *
 * Owns nothing but the line it is given: tokens are split in place and the
 * request points into it. No sockets, no globals, no allocation, so it is
 * unit-tested and fuzzed on its own (tests/fuzz/fuzz_sw_proto.c). Also the
 * DSN check, on common/db's DSN parser (which allocates its strings). */
#include "schwartz/schwartzd.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"
#include "common/line.h"

#define MAX_TOKENS 96

const char *sw_err_code(enum sw_err e)
{
    switch (e) {
    case SW_OK: return "OK";
    case SW_E_UNKNOWN_COMMAND: return "UNKNOWN_COMMAND";
    case SW_E_BAD_ARGS: return "BAD_ARGS";
    case SW_E_LINE_TOO_LONG: return "LINE_TOO_LONG";
    case SW_E_ARG_TOO_BIG: return "ARG_TOO_BIG";
    case SW_E_BAD_DATA: return "BAD_DATA";
    case SW_E_NOT_FOUND: return "NOT_FOUND";
    case SW_E_DUPLICATE: return "DUPLICATE";
    case SW_E_NO_DATABASE: return "NO_DATABASE";
    case SW_E_DB_ERROR: return "DB_ERROR";
    case SW_E_FAULT: return "FAULT";
    }
    return "ERROR";
}

int sw_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
    if (!s || !*s)
        return -1;
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p)
        return -1;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return -1;
    if (strlen(p) > 19)
        return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static const struct {
    const char *name;
    enum sw_cmd cmd;
} commands[] = {
    { "insert", SW_CMD_INSERT },
    { "insert_many", SW_CMD_INSERT_MANY },
    { "grab", SW_CMD_GRAB },
    { "completed", SW_CMD_COMPLETED },
    { "failed", SW_CMD_FAILED },
    { "declined", SW_CMD_DECLINED },
    { "replace_with", SW_CMD_REPLACE_WITH },
    { "list", SW_CMD_LIST },
    { "inspect", SW_CMD_INSPECT },
    { "status", SW_CMD_STATUS },
    { "policy", SW_CMD_POLICY },
    { "funcmap", SW_CMD_FUNCMAP },
    { "queues", SW_CMD_QUEUES },
    { "stats", SW_CMD_STATS },
    { "version", SW_CMD_VERSION },
    { "quit", SW_CMD_QUIT },
    { "grab_job", SW_CMD_GRAB_JOB },
    { "touch", SW_CMD_TOUCH },
};

/* A name (funcname, uniqkey, coalesce) fits TheSchwartz's VARCHAR(255). */
static bool name_ok(const char *s) { return s && *s && strlen(s) <= SW_MAX_NAME; }

/* A handle is 32 hex digits, '-', a decimal jobid. */
static bool handle_ok(const char *h)
{
    size_t n = strlen(h);
    if (n < 34 || n > 32 + 1 + 20 || h[32] != '-')
        return false;
    for (int i = 0; i < 32; i++)
        if (!((h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f')))
            return false;
    int64_t id;
    return sw_parse_i64(h + 33, 1, INT64_MAX, &id) == 0;
}

static enum sw_err opt_int(const char *v, int64_t min, int64_t max, struct sw_opt_int *o, const char **why,
                           const char *what)
{
    if (sw_parse_i64(v, min, max, &o->v) < 0) {
        *why = what;
        return SW_E_BAD_ARGS;
    }
    o->set = true;
    return SW_OK;
}

/* key=value options after the fixed arguments. */
static enum sw_err parse_opts(char **tok, int n, struct sw_req *r, const char **why)
{
    for (int i = 0; i < n; i++) {
        char *t = tok[i];
        char *eq = strchr(t, '=');
        if (!eq) {
            *why = "expected key=value";
            return SW_E_BAD_ARGS;
        }
        *eq = '\0';
        const char *k = t, *v = eq + 1;
        enum sw_err e = SW_OK;
        if (!strcmp(k, "uniqkey")) {
            if (!name_ok(v)) {
                *why = "bad uniqkey";
                return SW_E_BAD_ARGS;
            }
            r->uniqkey = v;
        } else if (!strcmp(k, "coalesce")) {
            if (!name_ok(v)) {
                *why = "bad coalesce";
                return SW_E_BAD_ARGS;
            }
            r->coalesce = v;
        } else if (!strcmp(k, "coalesce_prefix")) {
            if (!name_ok(v)) {
                *why = "bad coalesce_prefix";
                return SW_E_BAD_ARGS;
            }
            r->coalesce_prefix = v;
        } else if (!strcmp(k, "priority"))
            e = opt_int(v, 0, 65535, &r->priority, why, "priority is 0..65535");
        else if (!strcmp(k, "run_after"))
            e = opt_int(v, 0, UINT32_MAX, &r->run_after, why, "run_after is an epoch (u32)");
        else if (!strcmp(k, "floor"))
            e = opt_int(v, 0, 65535, &r->floor, why, "floor is 0..65535");
        else if (!strcmp(k, "exit"))
            e = opt_int(v, 0, 65535, &r->exit_status, why, "exit is 0..65535");
        else if (!strcmp(k, "max_retries"))
            e = opt_int(v, 0, 1000000, &r->max_retries, why, "max_retries is 0..1000000");
        else if (!strcmp(k, "retry_delay"))
            e = opt_int(v, 0, 100000000, &r->retry_delay, why, "retry_delay is seconds");
        else if (!strcmp(k, "keep_exit_status_for"))
            e = opt_int(v, 0, 100000000, &r->keep, why, "keep_exit_status_for is seconds");
        else if (!strcmp(k, "limit"))
            e = opt_int(v, 1, 100000, &r->limit, why, "limit is 1..100000");
        else if (!strcmp(k, "prioritize") || !strcmp(k, "permanent")) {
            int64_t b;
            if (sw_parse_i64(v, 0, 1, &b) < 0) {
                *why = "flag is 0 or 1";
                return SW_E_BAD_ARGS;
            }
            if (k[1] == 'r')
                r->prioritize = b;
            else
                r->permanent = b;
        } else {
            *why = "unknown option";
            return SW_E_BAD_ARGS;
        }
        if (e != SW_OK)
            return e;
    }
    return SW_OK;
}

/* The options each command accepts, checked after parsing. */
static bool opts_allowed(const struct sw_req *r)
{
    bool job = r->uniqkey || r->priority.set || r->run_after.set;
    bool grab = r->prioritize || r->floor.set;
    bool fail = r->exit_status.set || r->permanent || r->max_retries.set || r->retry_delay.set;
    bool coal = r->coalesce || r->coalesce_prefix;
    switch (r->cmd) {
    case SW_CMD_INSERT: return !grab && !fail && !r->coalesce_prefix && !r->keep.set && !r->limit.set;
    case SW_CMD_GRAB: return !job && !fail && !r->keep.set && !r->limit.set && !(r->coalesce && r->coalesce_prefix);
    case SW_CMD_LIST: return !job && !grab && !fail && !r->keep.set && !(r->coalesce && r->coalesce_prefix);
    case SW_CMD_FAILED: return !job && !grab && !coal && !r->limit.set;
    case SW_CMD_COMPLETED: return !job && !grab && !fail && !coal && !r->limit.set;
    case SW_CMD_DECLINED:
        return !r->uniqkey && !r->priority.set && !grab && !fail && !coal && !r->keep.set && !r->limit.set;
    case SW_CMD_POLICY: return !job && !grab && !coal && !r->limit.set && !r->exit_status.set && !r->permanent;
    default: return !job && !grab && !fail && !coal && !r->keep.set && !r->limit.set;
    }
}

enum sw_err sw_parse_line(char *line, size_t len, bool job_line, uint64_t max_arg, struct sw_req *out, const char **why)
{
    memset(out, 0, sizeof *out);
    *why = "";
    /* A ':' token starts the free-text message (failed); it runs to the end. */
    char *colon = NULL;
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\0') {
            *why = "NUL in line";
            return SW_E_BAD_ARGS;
        }
        if (line[i] == ':' && (i == 0 || line[i - 1] == ' ' || line[i - 1] == '\t') && !colon)
            colon = line + i;
    }
    size_t toklen = len;
    if (colon) {
        toklen = (size_t)(colon - line);
        line[len] = '\0';
        out->message = colon + 1;
        if (strlen(out->message) > SW_MAX_NAME) {
            *why = "message longer than 255 bytes";
            return SW_E_BAD_ARGS;
        }
    }
    char *tok[MAX_TOKENS];
    int n = line_split(line, toklen, tok, MAX_TOKENS);
    if (n < 0) {
        *why = "too many tokens";
        return SW_E_BAD_ARGS;
    }
    if (n == 0) {
        *why = "empty line";
        return SW_E_UNKNOWN_COMMAND;
    }
    int i = 0;
    if (job_line) {
        out->cmd = SW_CMD_INSERT;
    } else {
        out->cmd = 0;
        for (size_t k = 0; k < sizeof commands / sizeof commands[0]; k++)
            if (!strcmp(tok[0], commands[k].name)) {
                out->cmd = commands[k].cmd;
                break;
            }
        if (!out->cmd) {
            *why = "unknown command";
            return SW_E_UNKNOWN_COMMAND;
        }
        i = 1;
    }
    if (out->message && out->cmd != SW_CMD_FAILED) {
        *why = "only failed takes a :message";
        return SW_E_BAD_ARGS;
    }
    int64_t v;
    int rest = n - i;
    switch (out->cmd) {
    case SW_CMD_INSERT:
        if (rest < 2 || !name_ok(tok[i])) {
            *why = "usage: insert FUNC BYTES [opts]";
            return SW_E_BAD_ARGS;
        }
        out->func = tok[i];
        if (sw_parse_i64(tok[i + 1], 0, INT64_MAX, &v) < 0) {
            *why = "bad byte count";
            return SW_E_BAD_ARGS;
        }
        if ((uint64_t)v > max_arg) {
            *why = "argument larger than max-arg-size";
            return SW_E_ARG_TOO_BIG;
        }
        out->bytes = (uint64_t)v;
        out->has_block = true;
        i += 2;
        break;
    case SW_CMD_INSERT_MANY:
    case SW_CMD_REPLACE_WITH:
        if (out->cmd == SW_CMD_REPLACE_WITH) {
            if (rest < 2 || !handle_ok(tok[i])) {
                *why = "usage: replace_with HANDLE N";
                return SW_E_BAD_ARGS;
            }
            out->handle = tok[i++];
        } else if (rest < 1) {
            *why = "usage: insert_many N";
            return SW_E_BAD_ARGS;
        }
        if (sw_parse_i64(tok[i], out->cmd == SW_CMD_REPLACE_WITH ? 0 : 1, SW_MAX_MANY, &v) < 0) {
            *why = "job count out of range";
            return SW_E_BAD_ARGS;
        }
        out->count = (uint64_t)v;
        i++;
        break;
    case SW_CMD_GRAB:
        if (rest < 3) {
            *why = "usage: grab MAX GRAB_FOR FUNC [FUNC...] [opts]";
            return SW_E_BAD_ARGS;
        }
        if (sw_parse_i64(tok[i], 1, SW_MAX_GRAB, &v) < 0) {
            *why = "MAX is 1..1000";
            return SW_E_BAD_ARGS;
        }
        out->count = (uint64_t)v;
        if (sw_parse_i64(tok[i + 1], 0, 100000000, &v) < 0) {
            *why = "bad GRAB_FOR";
            return SW_E_BAD_ARGS;
        }
        out->grab_for = v == 0 ? 1 : (uint64_t)v; /* TheSchwartz: 0 counts as 1 */
        i += 2;
        while (i < n && !strchr(tok[i], '=')) {
            if (out->nfuncs == SW_MAX_FUNCS) {
                *why = "too many functions";
                return SW_E_BAD_ARGS;
            }
            if (!name_ok(tok[i])) {
                *why = "bad function name";
                return SW_E_BAD_ARGS;
            }
            out->funcs[out->nfuncs++] = tok[i++];
        }
        if (!out->nfuncs) {
            *why = "no function";
            return SW_E_BAD_ARGS;
        }
        break;
    case SW_CMD_GRAB_JOB:
    case SW_CMD_TOUCH:
        if (rest < 2 || !handle_ok(tok[i])) {
            *why = "usage: grab_job|touch HANDLE SECONDS";
            return SW_E_BAD_ARGS;
        }
        out->handle = tok[i];
        if (sw_parse_i64(tok[i + 1], 0, 100000000, &v) < 0) {
            *why = "bad GRAB_FOR";
            return SW_E_BAD_ARGS;
        }
        out->grab_for = v == 0 ? 1 : (uint64_t)v;
        i += 2;
        break;
    case SW_CMD_COMPLETED:
    case SW_CMD_FAILED:
    case SW_CMD_DECLINED:
    case SW_CMD_INSPECT:
    case SW_CMD_STATUS:
        if (rest < 1 || !handle_ok(tok[i])) {
            *why = "expected a job handle";
            return SW_E_BAD_ARGS;
        }
        out->handle = tok[i++];
        break;
    case SW_CMD_LIST:
    case SW_CMD_POLICY:
        if (rest < 1 || !name_ok(tok[i]) || strchr(tok[i], '=')) {
            *why = "expected a function name";
            return SW_E_BAD_ARGS;
        }
        out->func = tok[i++];
        break;
    default: break;
    }
    enum sw_err e = parse_opts(tok + i, n - i, out, why);
    if (e != SW_OK)
        return e;
    if (!opts_allowed(out)) {
        *why = "option not valid for this command";
        return SW_E_BAD_ARGS;
    }
    return SW_OK;
}

/* ---- DSNs ---- */

int sw_dsn_config(const char *dsn, struct db_config *cfg, char *err, size_t errlen)
{
    if (db_config_dsn(cfg, dsn, err, errlen) < 0)
        return -1;
    if (cfg->driver == DB_MYSQL && (!cfg->database || !*cfg->database)) {
        snprintf(err, errlen, "bad DSN '%s': a mysql DSN needs database=NAME", dsn);
        db_config_clear(cfg);
        return -1;
    }
    return 0;
}
