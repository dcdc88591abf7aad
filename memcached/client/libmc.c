/* libmc: the memcached client library (see libmc.h for the contract).
 *
 * Each server is a common/client kit server: one lazily opened non-blocking
 * socket and a read buffer; every wait is a poll() bounded by the call's
 * deadline. A request is written whole while replies are drained into the
 * read buffer, so a big pipelined multi-get cannot deadlock against a
 * server that stops reading while its own output is full. Server selection is common/hash.c's ketama
 * continuum, rebuilt whenever a server dies or comes back. The binary
 * protocol's frames are built and read here too (bin_*), and compression
 * (gzip, Cache::Memcached's flag bit 2) wraps stores and deliveries. */
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

#include <zlib.h>

#include "common/client.h"
#include "common/hash.h"

#define KEY_MAX 250
#define GET_BATCH 100               /* keys per get line in a multi-get */
#define MC_VALUE_MAX (256ull << 20) /* a longer value is taken for a broken reply (libmc.h) */

struct mc_client {
    struct client_server *servers; /* common/client: connection, buffer, dead marking */
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
    return from_kit(client_read_line(s, deadline, 1u << 20, line, len)); /* no line is longer */
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
    if (r->oom || n == 0)
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
/* compression (Cache::Memcached: memGzip / memGunzip, flag bit 2) */

/* gzip src; 0 with a malloc'd *out, or -1. */
static int gzip_value(const void *src, size_t len, char **out, size_t *olen)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    size_t cap = deflateBound(&z, (uLong)len);
    char *buf = malloc(cap);
    if (!buf) {
        deflateEnd(&z);
        return -1;
    }
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    *olen = z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    return 0;
}

/* Inflate a gzip (or zlib) value, at most MC_CLIENT_INFLATE_MAX bytes out;
 * 0 with a malloc'd, NUL-terminated *out, or -1. */
static int gunzip_value(const char *src, size_t len, char **out, size_t *olen)
{
    if (len > UINT32_MAX)
        return -1;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 32) != Z_OK)
        return -1;
    size_t cap = len * 4 + 64, n = 0;
    if (cap > MC_CLIENT_INFLATE_MAX)
        cap = MC_CLIENT_INFLATE_MAX;
    char *buf = NULL;
    z.next_in = (Bytef *)(uintptr_t)src;
    z.avail_in = (uInt)len;
    int rc = Z_OK;
    for (;;) {
        char *nb = realloc(buf, cap + 1);
        if (!nb)
            break;
        buf = nb;
        z.next_out = (Bytef *)buf + n;
        z.avail_out = (uInt)(cap - n);
        rc = inflate(&z, Z_NO_FLUSH);
        n = z.total_out;
        if (rc == Z_STREAM_END || (rc != Z_OK && rc != Z_BUF_ERROR))
            break;
        if (z.avail_out != 0 || cap >= MC_CLIENT_INFLATE_MAX) {
            rc = Z_DATA_ERROR; /* truncated input, or over the bound */
            break;
        }
        cap = cap * 2 > MC_CLIENT_INFLATE_MAX ? MC_CLIENT_INFLATE_MAX : cap * 2;
    }
    inflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *olen = n;
    return 0;
}

/* Hand one hit to the caller, inflated when it carries the bit. */
static void deliver(const struct mc_client *c, mc_client_value_fn fn, void *arg, const char *key, size_t nkey,
                    const char *data, size_t len, uint32_t flags, uint64_t cas)
{
    if (c->o.compress_threshold <= 0 || !(flags & MC_CLIENT_F_COMPRESS)) {
        fn(key, nkey, data, len, flags, cas, arg);
        return;
    }
    char *plain;
    size_t plen;
    if (gunzip_value(data, len, &plain, &plen) != 0)
        return; /* undecodable: a miss */
    fn(key, nkey, plain, plen, flags & ~MC_CLIENT_F_COMPRESS, cas, arg);
    free(plain);
}

/* ------------------------------------------------------------------ */
/* binary protocol frames */

enum {
    BIN_GET = 0x00,
    BIN_SET = 0x01,
    BIN_ADD = 0x02,
    BIN_REPLACE = 0x03,
    BIN_DELETE = 0x04,
    BIN_INCR = 0x05,
    BIN_DECR = 0x06,
    BIN_FLUSH = 0x08,
    BIN_NOOP = 0x0a,
    BIN_VERSION = 0x0b,
    BIN_GETKQ = 0x0d,
    BIN_APPEND = 0x0e,
    BIN_PREPEND = 0x0f,
    BIN_STAT = 0x10,
    BIN_TOUCH = 0x1c,
};
enum {
    BIN_OK = 0x00,
    BIN_ENOENT = 0x01,
    BIN_EEXISTS = 0x02,
    BIN_NOT_STORED = 0x05,
};
#define BIN_HDR 24

static void put_be(unsigned char *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        p[i] = (unsigned char)v;
}

static uint64_t get_be(const unsigned char *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static void bin_req(struct req *r, uint8_t op, const char *key, size_t nkey, const void *ext, size_t next,
                    const void *val, size_t nval, uint64_t cas)
{
    unsigned char h[BIN_HDR] = { 0x80, op };
    if (nkey > 0xffff || next > 0xff || nval > UINT32_MAX - nkey - next) {
        r->oom = true;
        return;
    }
    put_be(h + 2, nkey, 2);
    h[4] = (unsigned char)next;
    put_be(h + 8, next + nkey + nval, 4);
    put_be(h + 16, cas, 8);
    req_add(r, h, sizeof h);
    req_add(r, ext, next);
    req_add(r, key, nkey);
    req_add(r, val, nval);
}

struct bin_res {
    uint8_t op, next;
    uint16_t status, nkey;
    uint32_t body;
    uint64_t cas;
    const char *ext, *key, *val; /* into the server's buffer: valid until its next read */
    size_t nval;
};

/* One response frame, header and body. */
static int bin_read(struct client_server *s, uint64_t deadline, struct bin_res *res)
{
    char *hp;
    int rc = from_kit(client_read_block(s, BIN_HDR, deadline, &hp));
    if (rc != MC_CLIENT_OK)
        return rc;
    const unsigned char *h = (const unsigned char *)hp;
    if (h[0] != 0x81)
        return MC_CLIENT_PROTOCOL;
    res->op = h[1];
    res->nkey = (uint16_t)get_be(h + 2, 2);
    res->next = h[4];
    res->status = (uint16_t)get_be(h + 6, 2);
    res->body = (uint32_t)get_be(h + 8, 4);
    res->cas = get_be(h + 16, 8);
    if ((uint64_t)res->next + res->nkey > res->body || res->body > MC_VALUE_MAX)
        return MC_CLIENT_PROTOCOL;
    char *b;
    rc = from_kit(client_read_block(s, res->body, deadline, &b));
    if (rc != MC_CLIENT_OK)
        return rc;
    res->ext = b;
    res->key = b + res->next;
    res->val = b + res->next + res->nkey;
    res->nval = res->body - res->next - res->nkey;
    return MC_CLIENT_OK;
}

static int bin_status(uint16_t st)
{
    switch (st) {
    case BIN_OK: return MC_CLIENT_OK;
    case BIN_ENOENT: return MC_CLIENT_NOT_FOUND;
    case BIN_EEXISTS: return MC_CLIENT_EXISTS;
    case BIN_NOT_STORED: return MC_CLIENT_NOT_STORED;
    default: return MC_CLIENT_SERVER_ERROR;
    }
}

/* Read frames until the one answering op (skipping none: a reply to
 * another opcode is a broken stream). */
static int bin_expect(struct client_server *s, uint8_t op, uint64_t deadline, struct bin_res *res)
{
    int rc = bin_read(s, deadline, res);
    if (rc == MC_CLIENT_OK && res->op != op)
        rc = MC_CLIENT_PROTOCOL;
    return rc;
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
    if (*end || bv > MC_VALUE_MAX)
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
        default: break;
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
    if (rc != MC_CLIENT_OK) {
        mc_client_value_free(out); /* a hit before the stream broke */
        return rc;
    }
    if (g.oom)
        return MC_CLIENT_NO_MEMORY;
    return g.found ? MC_CLIENT_OK : MC_CLIENT_NOT_FOUND;
}

/* Binary: GETKQ hits up to the NOOP; an error frame is remembered and the
 * reading goes on to the NOOP, so the stream stays in step. */
static int read_multi_bin(const struct mc_client *c, struct client_server *s, uint64_t deadline, mc_client_value_fn fn,
                          void *arg)
{
    int result = MC_CLIENT_OK;
    for (;;) {
        struct bin_res r;
        int rc = bin_read(s, deadline, &r);
        if (rc != MC_CLIENT_OK)
            return rc;
        if (r.op == BIN_NOOP)
            return result;
        if (r.op != BIN_GETKQ)
            return MC_CLIENT_PROTOCOL;
        if (r.status != BIN_OK) {
            if (r.status != BIN_ENOENT && result == MC_CLIENT_OK)
                result = MC_CLIENT_SERVER_ERROR;
            continue;
        }
        if (r.next != 4 || r.nkey == 0 || r.nkey > KEY_MAX)
            return MC_CLIENT_PROTOCOL;
        char kb[KEY_MAX + 1];
        memcpy(kb, r.key, r.nkey);
        deliver(c, fn, arg, kb, r.nkey, r.val, r.nval, (uint32_t)get_be((const unsigned char *)r.ext, 4), r.cas);
    }
}

/* Read one server's multi-get replies up to END (text) or MN (meta). */
static int read_multi(const struct mc_client *c, struct client_server *s, bool meta, uint64_t deadline,
                      mc_client_value_fn fn, void *arg)
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
            memcpy(kb, k, nk); /* rbuf may move while the value is read */
            char *data;
            rc = read_data(s, bytes, deadline, &data);
            if (rc != MC_CLIENT_OK)
                return rc;
            deliver(c, fn, arg, kb, nk, data, bytes, flags, cas);
            continue;
        }
        if (!strcmp(line, "MN"))
            return MC_CLIENT_OK;
        if (len >= 3 && !strncmp(line, "VA ", 3)) {
            char *end;
            unsigned long long bytes = strtoull(line + 3, &end, 10);
            if (end == line + 3 || (*end && *end != ' ') || bytes > MC_VALUE_MAX)
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
            deliver(c, fn, arg, kb, nk, data, (size_t)bytes, flags, cas);
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
    bool meta = c->o.protocol == MC_CLIENT_META, bin = c->o.protocol == MC_CLIENT_BINARY;
    struct req *reqs = calloc(c->n, sizeof *reqs);
    size_t *count = calloc(c->n, sizeof *count);
    int *state = calloc(c->n, sizeof *state); /* 0 unused, 1 sent, rc+2 failed */
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
        if (bin) {
            bin_req(r, BIN_GETKQ, keys[i], nkeys[i], NULL, 0, NULL, 0, 0);
        } else if (meta) {
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
        if (bin)
            bin_req(r, BIN_NOOP, NULL, 0, NULL, 0, NULL, 0, 0);
        else if (meta)
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
            size_t batches = meta || bin ? 1 : (count[si] + GET_BATCH - 1) / GET_BATCH;
            for (size_t b = 0; b < batches && rc == MC_CLIENT_OK; b++)
                rc = bin ? read_multi_bin(c, s, deadline, fn, arg) : read_multi(c, s, meta, deadline, fn, arg);
        }
        finish(c, s, rc);
        if (rc == MC_CLIENT_SERVER_ERROR)
            server_close(s); /* replies of later batches may still be coming */
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
    /* Cache::Memcached's rule: at or over the threshold, not append or
     * prepend, kept only when it saves 20% or more. */
    char *packed = NULL;
    if (c->o.compress_threshold > 0 && len >= (size_t)c->o.compress_threshold && op != ST_APPEND && op != ST_PREPEND) {
        size_t plen;
        if (gzip_value(data, len, &packed, &plen) == 0) {
            if ((double)plen < (double)len * 0.8) {
                data = packed;
                len = plen;
                flags |= MC_CLIENT_F_COMPRESS;
            } else {
                free(packed);
                packed = NULL;
            }
        }
    }
    bool meta = c->o.protocol == MC_CLIENT_META;
    struct req r = { 0 };
    if (c->o.protocol == MC_CLIENT_BINARY) {
        static const uint8_t bin_op[] = { BIN_SET, BIN_ADD, BIN_REPLACE, BIN_APPEND, BIN_PREPEND, BIN_SET };
        unsigned char ext[8];
        put_be(ext, flags, 4);
        put_be(ext + 4, (uint32_t)exptime, 4);
        bool noext = op == ST_APPEND || op == ST_PREPEND;
        bin_req(&r, bin_op[op], key, nkey, ext, noext ? 0 : 8, data, len, op == ST_CAS ? cas : 0);
        free(packed);
        uint64_t deadline = deadline_of(c);
        int rc = start_call(c, s, &r, deadline);
        free(r.p);
        struct bin_res res;
        if (rc == MC_CLIENT_OK)
            rc = bin_expect(s, bin_op[op], deadline, &res);
        if (rc == MC_CLIENT_OK) {
            rc = bin_status(res.status);
            /* the text protocol's answers: add over an existing key and
             * replace of a missing one are NOT_STORED */
            if ((op == ST_ADD && rc == MC_CLIENT_EXISTS) || (op == ST_REPLACE && rc == MC_CLIENT_NOT_FOUND))
                rc = MC_CLIENT_NOT_STORED;
        }
        return finish(c, s, rc);
    }
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
    free(packed);
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
int mc_client_replace(struct mc_client *c, const char *key, size_t nkey, const void *data, size_t len, uint32_t flags,
                      int32_t exptime)
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

/* Binary: one request on the key's server and its one response, the
 * status in this library's terms; *num gets an 8-byte value (incr/decr). */
static int bin_simple(struct mc_client *c, const char *key, size_t nkey, uint8_t op, const void *ext, size_t next,
                      uint64_t *num)
{
    struct client_server *s = pick(c, key, nkey);
    if (!s)
        return MC_CLIENT_NO_SERVER;
    struct req r = { 0 };
    bin_req(&r, op, key, nkey, ext, next, NULL, 0, 0);
    uint64_t deadline = deadline_of(c);
    int rc = start_call(c, s, &r, deadline);
    free(r.p);
    struct bin_res res;
    if (rc == MC_CLIENT_OK)
        rc = bin_expect(s, op, deadline, &res);
    if (rc == MC_CLIENT_OK) {
        rc = bin_status(res.status);
        if (rc == MC_CLIENT_OK && num) {
            if (res.nval != 8)
                rc = MC_CLIENT_PROTOCOL;
            else
                *num = get_be((const unsigned char *)res.val, 8);
        }
    }
    return finish(c, s, rc);
}

int mc_client_delete(struct mc_client *c, const char *key, size_t nkey)
{
    if (!key_ok(key, nkey))
        return MC_CLIENT_BAD_ARGUMENT;
    if (c->o.protocol == MC_CLIENT_BINARY)
        return bin_simple(c, key, nkey, BIN_DELETE, NULL, 0, NULL);
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
    if (c->o.protocol == MC_CLIENT_BINARY) {
        unsigned char ext[20];
        put_be(ext, delta, 8);
        put_be(ext + 8, 0, 8);
        put_be(ext + 16, 0xffffffffu, 4); /* never create: text incr's NOT_FOUND */
        uint64_t v = 0;
        int rc = bin_simple(c, key, nkey, incr ? BIN_INCR : BIN_DECR, ext, sizeof ext, &v);
        if (rc == MC_CLIENT_OK && value)
            *value = v;
        return rc;
    }
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
    if (c->o.protocol == MC_CLIENT_BINARY) {
        unsigned char ext[4];
        put_be(ext, (uint32_t)exptime, 4);
        return bin_simple(c, key, nkey, BIN_TOUCH, ext, sizeof ext, NULL);
    }
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

static int server_call_n(struct mc_client *c, size_t i, const char *cmd, size_t ncmd, struct client_server **sp,
                         uint64_t *deadline)
{
    if (i >= c->n)
        return MC_CLIENT_BAD_ARGUMENT;
    revive(c);
    struct client_server *s = &c->servers[i];
    if (s->dead)
        return MC_CLIENT_NO_SERVER;
    *deadline = deadline_of(c);
    struct req r = { 0 };
    req_add(&r, cmd, ncmd);
    int rc = start_call(c, s, &r, *deadline);
    free(r.p);
    *sp = s;
    return rc;
}

static int server_call(struct mc_client *c, size_t i, const char *cmd, struct client_server **sp, uint64_t *deadline)
{
    return server_call_n(c, i, cmd, strlen(cmd), sp, deadline);
}

/* Binary: a keyless request (flush, version) to server i and its response. */
static int bin_server_call(struct mc_client *c, size_t i, uint8_t op, const void *ext, size_t next,
                           struct client_server **sp, struct bin_res *res)
{
    struct req r = { 0 };
    bin_req(&r, op, NULL, 0, ext, next, NULL, 0, 0);
    if (r.oom) {
        free(r.p);
        return MC_CLIENT_NO_MEMORY;
    }
    uint64_t deadline;
    int rc = server_call_n(c, i, r.p, r.len, sp, &deadline);
    free(r.p);
    if (rc == MC_CLIENT_OK)
        rc = bin_expect(*sp, op, deadline, res);
    if (rc == MC_CLIENT_OK)
        rc = bin_status(res->status);
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
        int rc;
        if (c->o.protocol == MC_CLIENT_BINARY) {
            unsigned char ext[4];
            struct bin_res res;
            put_be(ext, (uint32_t)delay, 4);
            rc = bin_server_call(c, i, BIN_FLUSH, ext, sizeof ext, &s, &res);
            if (rc == MC_CLIENT_NO_SERVER)
                continue;
            if (s)
                finish(c, s, rc);
            if (rc != MC_CLIENT_OK && result == MC_CLIENT_OK)
                result = rc;
            continue;
        }
        rc = server_call(c, i, cmd, &s, &deadline);
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
    if (c->o.protocol == MC_CLIENT_BINARY) {
        /* STAT with the group as key; one frame per stat, an empty one last */
        struct req r = { 0 };
        size_t ng = group ? strlen(group) : 0;
        bin_req(&r, BIN_STAT, group, ng, NULL, 0, NULL, 0, 0);
        int rc = r.oom ? MC_CLIENT_NO_MEMORY : server_call_n(c, i, r.p, r.len, &s, &deadline);
        free(r.p);
        while (rc == MC_CLIENT_OK) {
            struct bin_res res;
            rc = bin_expect(s, BIN_STAT, deadline, &res);
            if (rc != MC_CLIENT_OK)
                break;
            if (res.status != BIN_OK) {
                rc = MC_CLIENT_SERVER_ERROR;
                break;
            }
            if (res.nkey == 0)
                break;
            char name[256], value[1024];
            snprintf(name, sizeof name, "%.*s", (int)res.nkey, res.key);
            snprintf(value, sizeof value, "%.*s", (int)(res.nval > 1023 ? 1023 : res.nval), res.val);
            if (fn)
                fn(name, value, arg);
        }
        if (s)
            finish(c, s, rc);
        return rc;
    }
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
    if (c->o.protocol == MC_CLIENT_BINARY) {
        struct bin_res res;
        int rc = bin_server_call(c, i, BIN_VERSION, NULL, 0, &s, &res);
        if (rc == MC_CLIENT_OK && len)
            snprintf(buf, len, "%.*s", (int)(res.nval > 255 ? 255 : res.nval), res.val);
        if (s)
            finish(c, s, rc);
        return rc;
    }
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
