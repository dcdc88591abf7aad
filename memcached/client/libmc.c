/* libmc: the memcached client library (see libmc.h for the contract).
 *
 * Each server is a common/client kit server: one lazily opened non-blocking
 * socket and a read buffer; every wait is a poll() bounded by the call's
 * deadline. A request is written whole while replies are drained into the
 * read buffer, so a big pipelined multi-get cannot deadlock against a
 * server that stops reading while its own output is full. Server selection is common/hash.c's ketama
 * continuum, rebuilt whenever a server dies or comes back. */
#include "memcached/client/libmc.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/client.h"
#include "common/hash.h"

#define KEY_MAX 250
#define GET_BATCH 100   /* keys per get line in a multi-get */

struct mc_client {
    struct client_server *servers;   /* common/client: connection, buffer, dead marking */
    size_t n;
    struct mc_client_options o;
    struct hash_ketama ring;
    bool ring_ok;
};

/* ------------------------------------------------------------------ */
/* time, errors */

static uint64_t now_ms(void) { return client_now_ms(); }

/* The kit's statuses in this library's terms. */
static int from_kit(int rc)
{
    switch (rc) {
    case CLIENT_OK: return MC_CLIENT_OK;
    case CLIENT_TIMEOUT: return MC_CLIENT_TIMEOUT;
    case CLIENT_NO_MEMORY: return MC_CLIENT_NO_MEMORY;
    case CLIENT_TOO_LONG: return MC_CLIENT_PROTOCOL;
    case CLIENT_DEAD: return MC_CLIENT_NO_SERVER;
    default: return MC_CLIENT_CONNECTION;
    }
}

const char *mc_client_strerror(int rc)
{
    switch (rc) {
    case MC_CLIENT_OK: return "success";
    case MC_CLIENT_NOT_FOUND: return "not found";
    case MC_CLIENT_NOT_STORED: return "not stored";
    case MC_CLIENT_EXISTS: return "exists (cas mismatch)";
    case MC_CLIENT_SERVER_ERROR: return "server error";
    case MC_CLIENT_TIMEOUT: return "timeout";
    case MC_CLIENT_CONNECTION: return "connection failure";
    case MC_CLIENT_NO_SERVER: return "no server alive";
    case MC_CLIENT_BAD_ARGUMENT: return "bad argument";
    case MC_CLIENT_NO_MEMORY: return "out of memory";
    case MC_CLIENT_PROTOCOL: return "unexpected reply";
    default: return "unknown error";
    }
}

/* ------------------------------------------------------------------ */
/* server list and continuum */

static int rebuild_ring(struct mc_client *c)
{
    struct hash_ketama_server *ks = calloc(c->n ? c->n : 1, sizeof *ks);
    if (!ks)
        return -1;
    for (size_t i = 0; i < c->n; i++) {
        ks[i].host = c->servers[i].host;
        ks[i].port = c->servers[i].port;
        ks[i].weight = c->servers[i].weight;
        ks[i].dead = c->servers[i].dead;
    }
    int rc = hash_ketama_build(&c->ring, ks, c->n);
    free(ks);
    c->ring_ok = rc == 0;
    return rc;
}

static int parse_servers(struct mc_client *c, const char *spec, char *err, size_t errlen)
{
    int n = client_parse_servers(spec, 11211, true, &c->servers, err, errlen);
    if (n < 0)
        return -1;
    c->n = (size_t)n;
    return 0;
}

struct mc_client *mc_client_new(const char *servers, const struct mc_client_options *opts, char *err, size_t errlen)
{
    char dummy[8];
    if (!err) {
        err = dummy;
        errlen = sizeof dummy;
    }
    struct mc_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (opts)
        c->o = *opts;
    if (c->o.connect_timeout_ms <= 0)
        c->o.connect_timeout_ms = 1000;
    if (c->o.io_timeout_ms <= 0)
        c->o.io_timeout_ms = 1000;
    if (c->o.failure_limit <= 0)
        c->o.failure_limit = 2;
    if (c->o.retry_interval_ms <= 0)
        c->o.retry_interval_ms = 2000;
    if (parse_servers(c, servers, err, errlen) < 0 || rebuild_ring(c) < 0) {
        if (err[0] == 0)
            snprintf(err, errlen, "cannot build the server continuum");
        mc_client_free(c);
        return NULL;
    }
    return c;
}

static void server_close(struct client_server *s) { client_close(s); }

void mc_client_free(struct mc_client *c)
{
    if (!c)
        return;
    client_servers_free(c->servers, (int)c->n);
    hash_ketama_free(&c->ring);
    free(c);
}

size_t mc_client_server_count(const struct mc_client *c) { return c->n; }
const char *mc_client_server_name(const struct mc_client *c, size_t i) { return i < c->n ? c->servers[i].name : NULL; }
bool mc_client_server_alive(const struct mc_client *c, size_t i) { return i < c->n && !c->servers[i].dead; }

/* Put back dead servers whose retry time has come. */
static void revive(struct mc_client *c)
{
    bool changed = false;
    for (size_t i = 0; i < c->n; i++)
        if (c->servers[i].dead && client_revive(&c->servers[i], c->o.failure_limit))
            changed = true;
    if (changed)
        rebuild_ring(c);
}

/* A call to s failed at the transport level. */
static void server_failed(struct mc_client *c, struct client_server *s)
{
    if (client_failed(s, c->o.failure_limit, c->o.retry_interval_ms))
        rebuild_ring(c);
}

static void server_ok(struct client_server *s) { client_ok(s); }

static bool key_ok(const char *key, size_t nkey)
{
    if (!key || nkey == 0 || nkey > KEY_MAX)
        return false;
    for (size_t i = 0; i < nkey; i++) {
        unsigned char ch = (unsigned char)key[i];
        if (ch <= ' ' || ch == 0x7f)
            return false;
    }
    return true;
}

static struct client_server *pick(struct mc_client *c, const char *key, size_t nkey)
{
    revive(c);
    if (!c->ring_ok)
        return NULL;
    int i = hash_ketama_server_for(&c->ring, key, nkey);
    return i < 0 ? NULL : &c->servers[i];
}

int mc_client_server_for_key(struct mc_client *c, const char *key, size_t nkey)
{
    struct client_server *s = pick(c, key, nkey);
    return s ? (int)(s - c->servers) : -1;
}

/* ------------------------------------------------------------------ */
/* transport */

static int server_connect(struct mc_client *c, struct client_server *s)
{
    return from_kit(client_connect(s, c->o.connect_timeout_ms));
}

/* Write all of buf, draining replies meanwhile. */
static int send_all(struct client_server *s, const char *buf, size_t len, uint64_t deadline)
{
    return from_kit(client_send_all(s, buf, len, deadline));
}

/* The next line (without CRLF, NUL-terminated in place). */
static int read_line(struct client_server *s, uint64_t deadline, char **line, size_t *len)
{
    return from_kit(client_read_line(s, deadline, 1u << 20, line, len));   /* no line is longer */
}

/* n bytes of value plus its CRLF; *data points into the buffer, NUL-ended
 * over the CR (valid until the next read on s). */
static int read_data(struct client_server *s, size_t n, uint64_t deadline, char **data)
{
    char *d;
    int rc = from_kit(client_read_block(s, n + 2, deadline, &d));
    if (rc != MC_CLIENT_OK)
        return rc;
    if (d[n] != '\r' || d[n + 1] != '\n')
        return MC_CLIENT_PROTOCOL;
    d[n] = 0;
    *data = d;
    return MC_CLIENT_OK;
}

static bool is_transport_error(int rc)
{
    return rc == MC_CLIENT_TIMEOUT || rc == MC_CLIENT_CONNECTION || rc == MC_CLIENT_PROTOCOL;
}

/* After a call on s: a transport error drops the connection (its stream
 * position is unknown) and counts towards marking the server dead. */
static int finish(struct mc_client *c, struct client_server *s, int rc)
{
    if (is_transport_error(rc))
        server_failed(c, s);
    else
        server_ok(s);
    return rc;
}

static int status_of(const char *line)
{
    if (!strncmp(line, "SERVER_ERROR", 12) || !strncmp(line, "CLIENT_ERROR", 12) || !strcmp(line, "ERROR"))
        return MC_CLIENT_SERVER_ERROR;
    return MC_CLIENT_PROTOCOL;
}

/* ------------------------------------------------------------------ */
/* a growable request buffer */

struct req {
    char *p;
    size_t len, cap;
    bool oom;
};

static void req_add(struct req *r, const void *d, size_t n)
{
    if (r->oom)
        return;
    if (r->len + n > r->cap) {
        size_t ncap = r->cap ? r->cap : 512;
        while (ncap < r->len + n)
            ncap *= 2;
        char *np = realloc(r->p, ncap);
        if (!np) {
            r->oom = true;
            return;
        }
        r->p = np;
        r->cap = ncap;
    }
    memcpy(r->p + r->len, d, n);
    r->len += n;
}

static void req_printf(struct req *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void req_printf(struct req *r, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) {
        r->oom = true;
        return;
    }
    req_add(r, buf, (size_t)n);
}

/* ------------------------------------------------------------------ */
/* single-key calls */

/* Connect (if needed) and send a request; on failure the server is charged. */
static int start_call(struct mc_client *c, struct client_server *s, const struct req *r, uint64_t deadline)
{
    if (r->oom)
        return MC_CLIENT_NO_MEMORY;
    int rc = server_connect(c, s);
    if (rc == MC_CLIENT_OK)
        rc = send_all(s, r->p, r->len, deadline);
    return rc;
}

static uint64_t deadline_of(struct mc_client *c) { return now_ms() + (uint64_t)c->o.io_timeout_ms; }

/* Parse "VALUE <key> <flags> <bytes> [<cas>]". */
static bool parse_value_line(char *line, char **key, size_t *nkey, uint32_t *flags, size_t *bytes, uint64_t *cas)
{
    char *save = NULL;
    char *t0 = strtok_r(line, " ", &save), *k = strtok_r(NULL, " ", &save), *f = strtok_r(NULL, " ", &save),
         *b = strtok_r(NULL, " ", &save), *cs = strtok_r(NULL, " ", &save);
    if (!t0 || strcmp(t0, "VALUE") || !k || !f || !b)
        return false;
    char *end;
    unsigned long long fv = strtoull(f, &end, 10);
    if (*end || fv > UINT32_MAX)
        return false;
    unsigned long long bv = strtoull(b, &end, 10);
    if (*end || bv > (1ull << 31))
        return false;
    unsigned long long cv = 0;
    if (cs) {
        cv = strtoull(cs, &end, 10);
        if (*end)
            return false;
    }
    *key = k;
    *nkey = strlen(k);
    *flags = (uint32_t)fv;
    *bytes = (size_t)bv;
    *cas = cv;
    return true;
}

/* Meta reply "VA <n> <flags>*" or "HD <flags>*": pick f, c, k tokens. */
static bool parse_meta_flags(char *rest, uint32_t *flags, uint64_t *cas, char **key, size_t *nkey)
{
    char *save = NULL;
    for (char *t = strtok_r(rest, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char *end;
        switch (t[0]) {
        case 'f': {
            unsigned long long v = strtoull(t + 1, &end, 10);
            if (*end || v > UINT32_MAX)
                return false;
            *flags = (uint32_t)v;
            break;
        }
        case 'c':
            *cas = strtoull(t + 1, &end, 10);
            if (*end)
                return false;
            break;
        case 'k':
            if (key) {
                *key = t + 1;
                *nkey = strlen(t + 1);
            }
            break;
        default:
            break;
        }
    }
    return true;
}

void mc_client_value_free(struct mc_client_value *v)
{
    if (v) {
        free(v->data);
        v->data = NULL;
        v->len = 0;
    }
}

struct get_one {
    const char *key;
    size_t nkey;
    struct mc_client_value *out;
    bool found;
    bool oom;
};

static void get_one_cb(const char *key, size_t nkey, const char *data, size_t len, uint32_t flags, uint64_t cas,
                       void *arg)
{
    struct get_one *g = arg;
    if (nkey != g->nkey || memcmp(key, g->key, nkey) != 0 || g->found)
        return;
    g->out->data = malloc(len + 1);
    if (!g->out->data) {
        g->oom = true;
        return;
    }
    memcpy(g->out->data, data, len);
    g->out->data[len] = 0;
    g->out->len = len;
    g->out->flags = flags;
    g->out->cas = cas;
    g->found = true;
}

int mc_client_get(struct mc_client *c, const char *key, size_t nkey, struct mc_client_value *out)
{
    memset(out, 0, sizeof *out);
    struct get_one g = { key, nkey, out, false, false };
    const char *keys[1] = { key };
    size_t nkeys[1] = { nkey };
    int rc = mc_client_get_multi(c, keys, nkeys, 1, get_one_cb, &g);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (g.oom)
        return MC_CLIENT_NO_MEMORY;
    return g.found ? MC_CLIENT_OK : MC_CLIENT_NOT_FOUND;
}

/* Read one server's multi-get replies up to END (text) or MN (meta). */
static int read_multi(struct client_server *s, bool meta, uint64_t deadline, mc_client_value_fn fn, void *arg)
{
    for (;;) {
        char *line;
        size_t len;
        int rc = read_line(s, deadline, &line, &len);
        if (rc != MC_CLIENT_OK)
            return rc;
        if (!meta) {
            if (!strcmp(line, "END"))
                return MC_CLIENT_OK;
            char *k;
            size_t nk, bytes;
            uint32_t flags;
            uint64_t cas;
            if (!parse_value_line(line, &k, &nk, &flags, &bytes, &cas))
                return status_of(line) == MC_CLIENT_SERVER_ERROR ? MC_CLIENT_SERVER_ERROR : MC_CLIENT_PROTOCOL;
            char kb[KEY_MAX + 1];
            if (nk > KEY_MAX)
                return MC_CLIENT_PROTOCOL;
            memcpy(kb, k, nk);   /* rbuf may move while the value is read */
            char *data;
            rc = read_data(s, bytes, deadline, &data);
            if (rc != MC_CLIENT_OK)
                return rc;
            fn(kb, nk, data, bytes, flags, cas, arg);
            continue;
        }
        if (!strcmp(line, "MN"))
            return MC_CLIENT_OK;
        if (len >= 3 && !strncmp(line, "VA ", 3)) {
            char *end;
            unsigned long long bytes = strtoull(line + 3, &end, 10);
            if (end == line + 3 || (*end && *end != ' ') || bytes > (1ull << 31))
                return MC_CLIENT_PROTOCOL;
            uint32_t flags = 0;
            uint64_t cas = 0;
            char *k = NULL;
            size_t nk = 0;
            if (!parse_meta_flags(end, &flags, &cas, &k, &nk) || !k || nk > KEY_MAX)
                return MC_CLIENT_PROTOCOL;
            char kb[KEY_MAX + 1];
            memcpy(kb, k, nk);
            char *data;
            rc = read_data(s, (size_t)bytes, deadline, &data);
            if (rc != MC_CLIENT_OK)
                return rc;
            fn(kb, nk, data, (size_t)bytes, flags, cas, arg);
            continue;
        }
        if (!strcmp(line, "EN"))
            continue;
        return status_of(line) == MC_CLIENT_SERVER_ERROR ? MC_CLIENT_SERVER_ERROR : MC_CLIENT_PROTOCOL;
    }
}

int mc_client_get_multi(struct mc_client *c, const char *const *keys, const size_t *nkeys, size_t n,
                        mc_client_value_fn fn, void *arg)
{
    for (size_t i = 0; i < n; i++)
        if (!key_ok(keys[i], nkeys[i]))
            return MC_CLIENT_BAD_ARGUMENT;
    if (n == 0)
        return MC_CLIENT_OK;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req *reqs = calloc(c->n, sizeof *reqs);
    size_t *count = calloc(c->n, sizeof *count);
    int *state = calloc(c->n, sizeof *state);   /* 0 unused, 1 sent, rc+2 failed */
    int result = MC_CLIENT_OK;
    if (!reqs || !count || !state) {
        result = MC_CLIENT_NO_MEMORY;
        goto out;
    }
    /* Group the keys by server into pipelined requests. */
    bool any = false, unmapped = false;
    for (size_t i = 0; i < n; i++) {
        struct client_server *s = pick(c, keys[i], nkeys[i]);
        if (!s) {
            unmapped = true;
            continue;
        }
        size_t si = (size_t)(s - c->servers);
        struct req *r = &reqs[si];
        if (meta) {
            req_add(r, "mg ", 3);
            req_add(r, keys[i], nkeys[i]);
            req_add(r, " v f c k q\r\n", 12);
        } else {
            if (count[si] % GET_BATCH == 0)
                req_add(r, count[si] ? "\r\ngets" : "gets", count[si] ? 6 : 4);
            req_add(r, " ", 1);
            req_add(r, keys[i], nkeys[i]);
        }
        count[si]++;
        any = true;
    }
    if (unmapped)
        result = MC_CLIENT_NO_SERVER;
    if (!any)
        goto out;
    uint64_t deadline = deadline_of(c);
    /* Send everything first, so the servers work in parallel. */
    for (size_t si = 0; si < c->n; si++) {
        if (!count[si])
            continue;
        struct req *r = &reqs[si];
        if (meta)
            req_add(r, "mn\r\n", 4);
        else
            req_add(r, "\r\n", 2);
        int rc = start_call(c, &c->servers[si], r, deadline);
        state[si] = rc == MC_CLIENT_OK ? 1 : rc + 2;
    }
    /* Then read each server's replies. The loop may mark servers dead
     * (rebuilding the ring), which is fine: the grouping is done. */
    for (size_t si = 0; si < c->n; si++) {
        if (!state[si])
            continue;
        struct client_server *s = &c->servers[si];
        int rc = state[si] == 1 ? MC_CLIENT_OK : state[si] - 2;
        if (rc == MC_CLIENT_OK) {
            size_t batches = meta ? 1 : (count[si] + GET_BATCH - 1) / GET_BATCH;
            for (size_t b = 0; b < batches && rc == MC_CLIENT_OK; b++)
                rc = read_multi(s, meta, deadline, fn, arg);
        }
        finish(c, s, rc);
        if (rc == MC_CLIENT_SERVER_ERROR)
            server_close(s);   /* replies of later batches may still be coming */
        if (rc != MC_CLIENT_OK && result == MC_CLIENT_OK)
            result = rc;
    }
out:
    if (reqs)
        for (size_t si = 0; si < c->n; si++)
            free(reqs[si].p);
    free(reqs);
    free(count);
    free(state);
    return result;
}

enum store_op { ST_SET, ST_ADD, ST_REPLACE, ST_APPEND, ST_PREPEND, ST_CAS };

static int store(struct mc_client *c, enum store_op op, const char *key, size_t nkey, const void *data, size_t len,
                 uint32_t flags, int32_t exptime, uint64_t cas)
{
    static const char *const text_cmd[] = { "set", "add", "replace", "append", "prepend", "cas" };
    static const char meta_mode[] = { 'S', 'E', 'R', 'A', 'P', 'S' };
    if (!key_ok(key, nkey) || (len && !data))
        return MC_CLIENT_BAD_ARGUMENT;
    struct client_server *s = pick(c, key, nkey);
    if (!s)
        return MC_CLIENT_NO_SERVER;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    if (meta) {
        req_add(&r, "ms ", 3);
        req_add(&r, key, nkey);
        req_printf(&r, " %zu F%" PRIu32 " T%" PRId32 " M%c", len, flags, exptime, meta_mode[op]);
        if (op == ST_CAS)
            req_printf(&r, " C%" PRIu64, cas);
        req_add(&r, "\r\n", 2);
    } else {
        req_printf(&r, "%s ", text_cmd[op]);
        req_add(&r, key, nkey);
        req_printf(&r, " %" PRIu32 " %" PRId32 " %zu", flags, exptime, len);
        if (op == ST_CAS)
            req_printf(&r, " %" PRIu64, cas);
        req_add(&r, "\r\n", 2);
    }
    req_add(&r, data, len);
    req_add(&r, "\r\n", 2);
    uint64_t deadline = deadline_of(c);
    int rc = start_call(c, s, &r, deadline);
    free(r.p);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK) {
            if (!strcmp(line, "STORED") || !strncmp(line, "HD", 2))
                rc = MC_CLIENT_OK;
            else if (!strcmp(line, "NOT_STORED") || !strncmp(line, "NS", 2))
                rc = MC_CLIENT_NOT_STORED;
            else if (!strcmp(line, "EXISTS") || !strncmp(line, "EX", 2))
                rc = MC_CLIENT_EXISTS;
            else if (!strcmp(line, "NOT_FOUND") || !strncmp(line, "NF", 2))
                rc = MC_CLIENT_NOT_FOUND;
            else
                rc = status_of(line);
        }
    }
    return finish(c, s, rc);
}

int mc_client_set(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime)
{
    return store(c, ST_SET, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_add(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime)
{
    return store(c, ST_ADD, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_replace(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len,
                      uint32_t flags, int32_t exptime)
{
    return store(c, ST_REPLACE, key, nkey, data, len, flags, exptime, 0);
}
int mc_client_append(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len)
{
    return store(c, ST_APPEND, key, nkey, data, len, 0, 0, 0);
}
int mc_client_prepend(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len)
{
    return store(c, ST_PREPEND, key, nkey, data, len, 0, 0, 0);
}
int mc_client_cas(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                  int32_t exptime, uint64_t cas)
{
    return store(c, ST_CAS, key, nkey, data, len, flags, exptime, cas);
}

/* A one-line request with a one-line reply on the key's server. */
static int simple(struct mc_client *c, const char *key, size_t nkey, struct req *r, char *reply, size_t replylen)
{
    struct client_server *s = pick(c, key, nkey);
    if (!s) {
        free(r->p);
        return MC_CLIENT_NO_SERVER;
    }
    uint64_t deadline = deadline_of(c);
    int rc = start_call(c, s, r, deadline);
    free(r->p);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK)
            snprintf(reply, replylen, "%s", line);
        /* meta ma with v: the value follows on its own line */
        if (rc == MC_CLIENT_OK && !strncmp(reply, "VA ", 3)) {
            char *end;
            unsigned long long n = strtoull(reply + 3, &end, 10);
            char *data;
            if (n > 20)
                rc = MC_CLIENT_PROTOCOL;
            else if ((rc = read_data(s, (size_t)n, deadline, &data)) == MC_CLIENT_OK)
                snprintf(reply, replylen, "VA %s", data);
        }
    }
    return finish(c, s, rc);
}

int mc_client_delete(struct mc_client *c, const char *key, size_t nkey)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    struct req r = { 0 };
    req_add(&r, c->o.protocol == MC_CLIENT_META ? "md " : "delete ", c->o.protocol == MC_CLIENT_META ? 3 : 7);
    req_add(&r, key, nkey);
    req_add(&r, "\r\n", 2);
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "DELETED") || !strncmp(reply, "HD", 2))
        return MC_CLIENT_OK;
    if (!strcmp(reply, "NOT_FOUND") || !strncmp(reply, "NF", 2))
        return MC_CLIENT_NOT_FOUND;
    return status_of(reply);
}

static int arith(struct mc_client *c, bool incr, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    if (meta) {
        req_add(&r, "ma ", 3);
        req_add(&r, key, nkey);
        req_printf(&r, " D%" PRIu64 " M%c v\r\n", delta, incr ? 'I' : 'D');
    } else {
        req_add(&r, incr ? "incr " : "decr ", 5);
        req_add(&r, key, nkey);
        req_printf(&r, " %" PRIu64 "\r\n", delta);
    }
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "NOT_FOUND") || !strncmp(reply, "NF", 2))
        return MC_CLIENT_NOT_FOUND;
    const char *num = meta ? (strncmp(reply, "VA ", 3) ? NULL : reply + 3) : reply;
    if (!num || *num < '0' || *num > '9')
        return status_of(reply);
    char *end;
    unsigned long long v = strtoull(num, &end, 10);
    if (*end)
        return MC_CLIENT_PROTOCOL;
    if (value)
        *value = v;
    return MC_CLIENT_OK;
}

int mc_client_incr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    return arith(c, true, key, nkey, delta, value);
}
int mc_client_decr(struct mc_client *c, const char *key, size_t nkey, uint64_t delta, uint64_t *value)
{
    return arith(c, false, key, nkey, delta, value);
}

int mc_client_touch(struct mc_client *c, const char *key, size_t nkey, int32_t exptime)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    req_add(&r, meta ? "mg " : "touch ", meta ? 3 : 6);
    req_add(&r, key, nkey);
    req_printf(&r, meta ? " T%" PRId32 "\r\n" : " %" PRId32 "\r\n", exptime);
    char reply[256];
    int rc = simple(c, key, nkey, &r, reply, sizeof reply);
    if (rc != MC_CLIENT_OK)
        return rc;
    if (!strcmp(reply, "TOUCHED") || !strncmp(reply, "HD", 2))
        return MC_CLIENT_OK;
    if (!strcmp(reply, "NOT_FOUND") || !strcmp(reply, "EN"))
        return MC_CLIENT_NOT_FOUND;
    return status_of(reply);
}

/* ------------------------------------------------------------------ */
/* per-server calls */

static int server_call(struct mc_client *c, size_t i, const char *cmd, struct client_server **sp, uint64_t *deadline)
{
    if (i >= c->n)
        return MC_CLIENT_BAD_ARGUMENT;
    revive(c);
    struct client_server *s = &c->servers[i];
    if (s->dead)
        return MC_CLIENT_NO_SERVER;
    *deadline = deadline_of(c);
    struct req r = { 0 };
    req_add(&r, cmd, strlen(cmd));
    int rc = start_call(c, s, &r, *deadline);
    free(r.p);
    *sp = s;
    return rc;
}

int mc_client_flush_all(struct mc_client *c, int32_t delay)
{
    int result = MC_CLIENT_OK;
    char cmd[64];
    snprintf(cmd, sizeof cmd, "flush_all %" PRId32 "\r\n", delay);
    for (size_t i = 0; i < c->n; i++) {
        struct client_server *s = NULL;
        uint64_t deadline;
        int rc = server_call(c, i, cmd, &s, &deadline);
        if (rc == MC_CLIENT_NO_SERVER)
            continue;
        if (rc == MC_CLIENT_OK) {
            char *line;
            size_t ll;
            rc = read_line(s, deadline, &line, &ll);
            if (rc == MC_CLIENT_OK && strcmp(line, "OK"))
                rc = status_of(line);
        }
        if (s)
            finish(c, s, rc);
        if (rc != MC_CLIENT_OK && result == MC_CLIENT_OK)
            result = rc;
    }
    return result;
}

int mc_client_stats(struct mc_client *c, size_t i, const char *group, mc_client_stat_fn fn, void *arg)
{
    char cmd[128];
    if (group && *group) {
        if (strlen(group) > 64 || strpbrk(group, "\r\n"))
            return MC_CLIENT_BAD_ARGUMENT;
        snprintf(cmd, sizeof cmd, "stats %s\r\n", group);
    } else {
        snprintf(cmd, sizeof cmd, "stats\r\n");
    }
    struct client_server *s = NULL;
    uint64_t deadline;
    int rc = server_call(c, i, cmd, &s, &deadline);
    while (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc != MC_CLIENT_OK)
            break;
        if (!strcmp(line, "END"))
            break;
        if (strncmp(line, "STAT ", 5)) {
            rc = status_of(line);
            break;
        }
        char *name = line + 5, *sp = strchr(name, ' ');
        if (sp)
            *sp = 0;
        if (fn)
            fn(name, sp ? sp + 1 : "", arg);
    }
    if (s)
        finish(c, s, rc);
    return rc;
}

int mc_client_version(struct mc_client *c, size_t i, char *buf, size_t len)
{
    struct client_server *s = NULL;
    uint64_t deadline;
    int rc = server_call(c, i, "version\r\n", &s, &deadline);
    if (rc == MC_CLIENT_OK) {
        char *line;
        size_t ll;
        rc = read_line(s, deadline, &line, &ll);
        if (rc == MC_CLIENT_OK) {
            if (!strncmp(line, "VERSION ", 8))
                snprintf(buf, len, "%s", line + 8);
            else
                rc = status_of(line);
        }
    }
    if (s)
        finish(c, s, rc);
    return rc;
}
