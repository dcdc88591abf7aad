/* libschwartz: blocking client for schwartzd — request framing and reply
 * parsing (PROTOCOL.md) over the core's blocking client kit
 * (common/client: server list, connect with timeout, dead-server retry,
 * buffered line and block reads). */
#include "schwartz/client/libschwartz.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/client.h"

#define SWC_MAX_LINE 8192
#define SWC_MAX_ARG (64u << 20)
#define SWC_FAILURE_LIMIT 2
#define SWC_RETRY_MS 5000

struct sw_client {
    struct client_server *servers;
    int nservers;
    int cur; /* the server requests go to */
    struct client_server *s;
    int timeout_ms;
    uint64_t deadline; /* of the request in progress */
    char err[400];
};

static int fail(struct sw_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct sw_client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return -1;
}

/* A transport failure: the stream position is lost; count it against the
 * server (dead after SWC_FAILURE_LIMIT in a row, retried after a while). */
static int transport_fail(struct sw_client *c, int st)
{
    if (c->s) {
        fail(c, "%s: %s", c->s->name, c->s->error[0] ? c->s->error : client_strerror(st));
        client_failed(c->s, SWC_FAILURE_LIMIT, SWC_RETRY_MS);
    }
    c->s = NULL;
    return -1;
}

struct sw_client *sw_client_new(const char *server, int timeout_ms)
{
    struct sw_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 30000;
    char err[200];
    c->nservers =
        client_parse_servers(server && *server ? server : "127.0.0.1:7003", 7003, false, &c->servers, err, sizeof err);
    if (c->nservers < 0) {
        /* keep a usable handle: every call reports the bad list */
        c->nservers = 0;
        fail(c, "%s", err);
    }
    return c;
}

void sw_client_free(struct sw_client *c)
{
    if (!c)
        return;
    if (c->servers)
        client_servers_free(c->servers, c->nservers);
    free(c);
}

const char *sw_client_error(const struct sw_client *c) { return c->err; }

/* Pick a server (the current one, else the next live one) and connect. */
static int connect_now(struct sw_client *c)
{
    if (c->s && c->s->fd >= 0)
        return 0;
    if (c->nservers == 0)
        return -1;
    for (int i = 0; i < c->nservers; i++) {
        struct client_server *s = &c->servers[(c->cur + i) % c->nservers];
        client_revive(s, SWC_FAILURE_LIMIT);
        int st = client_connect(s, c->timeout_ms);
        if (st == CLIENT_OK) {
            c->cur = (c->cur + i) % c->nservers;
            c->s = s;
            return 0;
        }
        fail(c, "%s: %s", s->name, s->error[0] ? s->error : client_strerror(st));
        if (st != CLIENT_DEAD)
            client_failed(s, SWC_FAILURE_LIMIT, SWC_RETRY_MS);
    }
    return -1;
}

/* Next reply line (NUL-ended, without CRLF), valid until the next read. */
static char *read_line(struct sw_client *c)
{
    char *line;
    size_t len;
    int st = client_read_line(c->s, c->deadline, SWC_MAX_LINE, &line, &len);
    if (st != CLIENT_OK) {
        transport_fail(c, st);
        return NULL;
    }
    return line;
}

/* n bytes and the CRLF after them, into dst (NUL-ended). */
static int read_block(struct sw_client *c, unsigned char *dst, size_t n)
{
    char *data;
    int st = client_read_block(c->s, n + 2, c->deadline, &data);
    if (st != CLIENT_OK)
        return transport_fail(c, st);
    memcpy(dst, data, n);
    dst[n] = '\0';
    return 0;
}

/* Send a request (and optional block); the connection is (re)opened here. */
static int request(struct sw_client *c, const char *line, const void *block, size_t blen, bool with_block)
{
    if (connect_now(c) < 0)
        return -1;
    c->deadline = client_deadline(c->timeout_ms);
    int st = client_send_all(c->s, line, strlen(line), c->deadline);
    if (st == CLIENT_OK && with_block) {
        st = client_send_all(c->s, block, blen, c->deadline);
        if (st == CLIENT_OK)
            st = client_send_all(c->s, "\r\n", 2, c->deadline);
    }
    if (st != CLIENT_OK)
        return transport_fail(c, st);
    return 0;
}

static int check_ok(struct sw_client *c, char **rest)
{
    char *l = read_line(c);
    if (!l)
        return -1;
    client_ok(c->s);
    if (!strncmp(l, "OK", 2) && (l[2] == '\0' || l[2] == ' ')) {
        if (rest)
            *rest = l[2] ? l + 3 : l + 2;
        return 0;
    }
    return fail(c, "%s", l);
}

/* Tokens must not carry spaces or newlines. */
static bool token_ok(const char *s)
{
    if (!s || !*s)
        return false;
    for (; *s; s++)
        if (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n' || *s == '\0')
            return false;
    return true;
}

int sw_client_insert(struct sw_client *c, const char *func, const void *arg, size_t len, const struct sw_insert_opts *o,
                     char *handle, size_t hlen)
{
    if (!token_ok(func) || (o && o->uniqkey && !token_ok(o->uniqkey)) || (o && o->coalesce && !token_ok(o->coalesce)))
        return fail(c, "function, uniqkey and coalesce must be non-empty and without spaces");
    char line[1024];
    int n = snprintf(line, sizeof line, "insert %s %zu", func, len);
    if (o && o->uniqkey)
        n += snprintf(line + n, sizeof line - (size_t)n, " uniqkey=%s", o->uniqkey);
    if (o && o->priority >= 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " priority=%d", o->priority);
    if (o && o->run_after > 0)
        n += snprintf(line + n, sizeof line - (size_t)n, " run_after=%lld", o->run_after);
    if (o && o->coalesce)
        n += snprintf(line + n, sizeof line - (size_t)n, " coalesce=%s", o->coalesce);
    if ((size_t)n + 3 > sizeof line)
        return fail(c, "request too long");
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    char *rest;
    if (request(c, line, arg ? arg : "", len, true) < 0 || check_ok(c, &rest) < 0)
        return -1;
    if (handle && hlen)
        snprintf(handle, hlen, "%s", rest);
    return 0;
}

void sw_client_jobs_free(struct sw_client_job *jobs, int n)
{
    if (!jobs)
        return;
    for (int i = 0; i < n; i++)
        free(jobs[i].arg);
    free(jobs);
}

int sw_client_grab(struct sw_client *c, const char *const *funcs, int nfuncs, int max, int grab_for,
                   struct sw_client_job **jobs)
{
    *jobs = NULL;
    char line[SWC_MAX_LINE];
    int n = snprintf(line, sizeof line, "grab %d %d", max, grab_for);
    for (int i = 0; i < nfuncs; i++) {
        if (!token_ok(funcs[i]) || strchr(funcs[i], '='))
            return fail(c, "bad function name");
        n += snprintf(line + n, sizeof line - (size_t)n, " %s", funcs[i]);
        if ((size_t)n + 3 >= sizeof line)
            return fail(c, "request too long");
    }
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    struct sw_client_job *out = calloc((size_t)(max > 0 ? max : 1), sizeof *out);
    if (!out)
        return fail(c, "out of memory");
    int got = 0;
    for (;;) {
        char *l = read_line(c);
        if (!l)
            goto lost;
        if (!strcmp(l, "END"))
            break;
        char h[64], f[256];
        size_t len;
        long long fails;
        if (strncmp(l, "JOB ", 4) || got >= max || sscanf(l + 4, "%63s %255s %zu %lld", h, f, &len, &fails) != 4 ||
            len > SWC_MAX_ARG) {
            fail(c, "%s", l);
            if (!strncmp(l, "ERR ", 4)) {
                sw_client_jobs_free(out, got);
                return -1;
            }
            goto lost;
        }
        struct sw_client_job *j = &out[got];
        snprintf(j->handle, sizeof j->handle, "%s", h);
        snprintf(j->func, sizeof j->func, "%s", f);
        j->failures = fails;
        j->arglen = len;
        j->arg = malloc(len + 1);
        if (!j->arg || read_block(c, j->arg, len) < 0)
            goto lost;
        got++;
    }
    *jobs = out;
    return got;
lost:
    sw_client_jobs_free(out, got + 1);
    if (c->s)
        transport_fail(c, CLIENT_CLOSED);
    return -1;
}

static int simple(struct sw_client *c, const char *line, char **rest)
{
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    return check_ok(c, rest);
}

int sw_client_completed(struct sw_client *c, const char *handle)
{
    char line[128];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    snprintf(line, sizeof line, "completed %s\r\n", handle);
    return simple(c, line, NULL);
}

int sw_client_failed(struct sw_client *c, const char *handle, const char *message, int exit_status, int permanent)
{
    char line[512];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    int n = snprintf(line, sizeof line, "failed %s exit=%d%s", handle, exit_status < 0 ? 1 : exit_status,
                     permanent ? " permanent=1" : "");
    if (message && *message) {
        n += snprintf(line + n, sizeof line - (size_t)n, " :");
        for (const char *m = message; *m && n < 255 + 80; m++)
            line[n++] = (*m == '\r' || *m == '\n') ? ' ' : *m;
        line[n] = '\0';
    }
    snprintf(line + n, sizeof line - (size_t)n, "\r\n");
    char *rest;
    if (simple(c, line, &rest) < 0)
        return -1;
    return !strcmp(rest, "retry") ? 1 : 0;
}

int sw_client_declined(struct sw_client *c, const char *handle, long long run_after)
{
    char line[160];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    if (run_after > 0)
        snprintf(line, sizeof line, "declined %s run_after=%lld\r\n", handle, run_after);
    else
        snprintf(line, sizeof line, "declined %s\r\n", handle);
    return simple(c, line, NULL);
}

int sw_client_touch(struct sw_client *c, const char *handle, int seconds)
{
    char line[160];
    if (!token_ok(handle) || strlen(handle) > 60)
        return fail(c, "bad handle");
    snprintf(line, sizeof line, "touch %s %d\r\n", handle, seconds < 1 ? 1 : seconds);
    return simple(c, line, NULL);
}

int sw_client_lines(struct sw_client *c, const char *command, void (*fn)(const char *line, void *arg), void *arg)
{
    char line[SWC_MAX_LINE];
    if (strchr(command, '\n') || strlen(command) + 3 > sizeof line)
        return fail(c, "bad command");
    snprintf(line, sizeof line, "%s\r\n", command);
    if (request(c, line, NULL, 0, false) < 0)
        return -1;
    for (;;) {
        char *l = read_line(c);
        if (!l)
            return -1;
        if (!strcmp(l, "END"))
            return 0;
        if (!strncmp(l, "ERR ", 4))
            return fail(c, "%s", l);
        if (fn)
            fn(l, arg);
    }
}
