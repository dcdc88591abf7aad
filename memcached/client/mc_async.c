/* mc_async: libmc's event-loop client (see mc_async.h for the contract).
 *
 * One struct as_server per server: the common/client server record (name,
 * weight, dead marking), at most one core conn, and the FIFO of requests
 * sent on it and not yet answered. Replies are parsed straight out of the
 * conn's input buffer in the order the requests went out. */
#include "memcached/client/mc_async.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/buffer.h>

#include "common/client.h"
#include "common/conn.h"
#include "common/hash.h"

#define KEY_MAX 250
#define LINE_MAX_ 2048
#define VALUE_MAX (1u << 30)

struct pending {
    enum mc_async_kind kind;
    mc_async_fn fn;
    void *arg;
    struct pending *next;
};

struct as_server {
    struct client_server *cs;
    struct mc_async *a;
    struct core_conn *conn;
    struct pending *head, *tail;
    size_t npending;
    int close_rc; /* why we closed it ourselves (0 = transport) */
};

struct mc_async {
    struct core_loop *loop;
    struct client_server *cs;
    struct as_server *servers;
    size_t n;
    struct mc_async_options o;
    struct hash_ketama ring;
    bool ring_ok;
};

static void rebuild_ring(struct mc_async *a)
{
    struct hash_ketama_server *ks = calloc(a->n, sizeof *ks);
    if (!ks) {
        a->ring_ok = false;
        return;
    }
    for (size_t i = 0; i < a->n; i++) {
        ks[i].host = a->cs[i].host;
        ks[i].port = a->cs[i].port;
        ks[i].weight = a->cs[i].weight;
        ks[i].dead = a->cs[i].dead;
    }
    a->ring_ok = hash_ketama_build(&a->ring, ks, a->n) == 0;
    free(ks);
}

struct mc_async *mc_async_new(struct core_loop *loop, const char *servers, const struct mc_async_options *opts,
                              char *err, size_t errlen)
{
    struct mc_async *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    a->loop = loop;
    if (opts)
        a->o = *opts;
    if (a->o.io_timeout_ms <= 0)
        a->o.io_timeout_ms = 1000;
    if (a->o.failure_limit <= 0)
        a->o.failure_limit = 2;
    if (a->o.retry_interval_ms <= 0)
        a->o.retry_interval_ms = 2000;
    if (a->o.max_pending == 0)
        a->o.max_pending = 4096;
    int n = client_parse_servers(servers, 11211, true, &a->cs, err, errlen);
    if (n < 0) {
        free(a);
        return NULL;
    }
    a->n = (size_t)n;
    a->servers = calloc(a->n, sizeof *a->servers);
    if (a->servers) {
        for (size_t i = 0; i < a->n; i++) {
            a->servers[i].cs = &a->cs[i];
            a->servers[i].a = a;
        }
        rebuild_ring(a);
    }
    if (!a->servers || !a->ring_ok) {
        snprintf(err, errlen, "out of memory");
        mc_async_free(a);
        return NULL;
    }
    return a;
}

void mc_async_free(struct mc_async *a)
{
    if (!a)
        return;
    for (size_t i = 0; a->servers && i < a->n; i++)
        if (a->servers[i].conn)
            conn_close(a->servers[i].conn); /* on_close answers what waits */
    free(a->servers);
    client_servers_free(a->cs, (int)a->n);
    hash_ketama_free(&a->ring);
    free(a);
}

size_t mc_async_pending(const struct mc_async *a)
{
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++)
        n += a->servers[i].npending;
    return n;
}

/* ------------------------------------------------------------------ */
/* the connection */

static void fail_all(struct as_server *s, int rc)
{
    struct pending *p = s->head;
    s->head = s->tail = NULL;
    s->npending = 0;
    while (p) {
        struct pending *next = p->next;
        struct mc_async_result r = { .rc = rc };
        p->fn(&r, p->arg);
        free(p);
        p = next;
    }
}

static void on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct as_server *s = c->data;
    s->conn = NULL;
    int rc = why == CONN_CLOSE_TIMEOUT ? MC_CLIENT_TIMEOUT : s->close_rc ? s->close_rc : MC_CLIENT_CONNECTION;
    s->close_rc = 0;
    bool counts = why != CONN_CLOSE_LOCAL || rc == MC_CLIENT_PROTOCOL;
    if (counts && (s->npending || why == CONN_CLOSE_ERROR) &&
        client_failed(s->cs, s->a->o.failure_limit, s->a->o.retry_interval_ms))
        rebuild_ring(s->a);
    fail_all(s, rc);
}

static int line_status(const char *line)
{
    if (!strncmp(line, "SERVER_ERROR", 12) || !strncmp(line, "CLIENT_ERROR", 12) || !strcmp(line, "ERROR"))
        return MC_CLIENT_SERVER_ERROR;
    return MC_CLIENT_PROTOCOL;
}

/* "VALUE <key> <flags> <bytes> <cas>" */
static bool parse_value(const char *line, uint32_t *flags, size_t *bytes, uint64_t *cas)
{
    const char *p = line + 6, *sp = strchr(p, ' ');
    if (!sp || sp == p)
        return false;
    char *end;
    unsigned long long f = strtoull(sp + 1, &end, 10);
    if (end == sp + 1 || *end != ' ' || f > UINT32_MAX)
        return false;
    const char *b0 = end + 1;
    unsigned long long b = strtoull(b0, &end, 10);
    if (end == b0 || (*end != ' ' && *end) || b > VALUE_MAX)
        return false;
    unsigned long long cv = 0;
    if (*end) {
        const char *c0 = end + 1;
        cv = strtoull(c0, &end, 10);
        if (end == c0 || *end)
            return false;
    }
    *flags = (uint32_t)f;
    *bytes = (size_t)b;
    *cas = cv;
    return true;
}

int mc_async_parse(enum mc_async_kind kind, const char *buf, size_t len, struct mc_async_result *r, size_t *consumed,
                   size_t *need)
{
    memset(r, 0, sizeof *r);
    r->rc = MC_CLIENT_PROTOCOL;
    size_t scan = len < LINE_MAX_ + 2 ? len : LINE_MAX_ + 2;
    const char *nl = memchr(buf, '\n', scan);
    if (!nl) {
        if (len >= LINE_MAX_ + 2)
            return -1;
        *need = len + 1;
        return 0;
    }
    if (nl == buf || nl[-1] != '\r')
        return -1;
    size_t ll = (size_t)(nl - 1 - buf);
    if (memchr(buf, 0, ll))
        return -1;
    char line[LINE_MAX_ + 1];
    memcpy(line, buf, ll);
    line[ll] = 0;
    size_t cons = ll + 2;
    switch (kind) {
    case MC_ASYNC_K_GET:
        if (!strcmp(line, "END")) {
            r->rc = MC_CLIENT_NOT_FOUND;
        } else if (!strncmp(line, "VALUE ", 6)) {
            size_t bytes;
            if (!parse_value(line, &r->flags, &bytes, &r->cas))
                return -1;
            size_t total = cons + bytes + 2 + 5; /* data CRLF "END" CRLF */
            if (len < total) {
                *need = total;
                return 0;
            }
            if (buf[cons + bytes] != '\r' || buf[cons + bytes + 1] != '\n' ||
                memcmp(buf + cons + bytes + 2, "END\r\n", 5))
                return -1;
            r->rc = MC_CLIENT_OK;
            r->data = buf + cons;
            r->len = bytes;
            cons = total;
        } else {
            r->rc = line_status(line);
        }
        break;
    case MC_ASYNC_K_STORE:
        r->rc = !strcmp(line, "STORED")       ? MC_CLIENT_OK
                : !strcmp(line, "NOT_STORED") ? MC_CLIENT_NOT_STORED
                : !strcmp(line, "EXISTS")     ? MC_CLIENT_EXISTS
                : !strcmp(line, "NOT_FOUND")  ? MC_CLIENT_NOT_FOUND
                                              : line_status(line);
        break;
    case MC_ASYNC_K_DELETE:
        r->rc = !strcmp(line, "DELETED")     ? MC_CLIENT_OK
                : !strcmp(line, "NOT_FOUND") ? MC_CLIENT_NOT_FOUND
                                             : line_status(line);
        break;
    case MC_ASYNC_K_TOUCH:
        r->rc = !strcmp(line, "TOUCHED")     ? MC_CLIENT_OK
                : !strcmp(line, "NOT_FOUND") ? MC_CLIENT_NOT_FOUND
                                             : line_status(line);
        break;
    case MC_ASYNC_K_ARITH:
        if (line[0] >= '0' && line[0] <= '9') {
            char *end;
            r->value = strtoull(line, &end, 10);
            r->rc = *end ? MC_CLIENT_PROTOCOL : MC_CLIENT_OK;
        } else {
            r->rc = !strcmp(line, "NOT_FOUND") ? MC_CLIENT_NOT_FOUND : line_status(line);
        }
        break;
    }
    if (r->rc == MC_CLIENT_PROTOCOL)
        return -1;
    *consumed = cons;
    return 1;
}

static int on_read(struct core_conn *c)
{
    struct as_server *s = c->data;
    struct evbuffer *in = conn_in(c);
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            break;
        if (!s->head) { /* bytes nobody asked for: broken */
            s->close_rc = MC_CLIENT_PROTOCOL;
            return -1;
        }
        /* The parser reads contiguous bytes: a line's worth first, then
         * as much as a value it found says it needs. */
        size_t want = avail < LINE_MAX_ + 2 ? avail : LINE_MAX_ + 2, consumed = 0, need = 0;
        struct mc_async_result r;
        int rc;
        for (;;) {
            const char *buf = (const char *)evbuffer_pullup(in, (ssize_t)want);
            if (!buf) {
                s->close_rc = MC_CLIENT_NO_MEMORY;
                return -1;
            }
            rc = mc_async_parse(s->head->kind, buf, want, &r, &consumed, &need);
            if (rc == 0 && need > want && need <= avail) {
                want = need;
                continue;
            }
            break;
        }
        if (rc < 0) {
            s->close_rc = MC_CLIENT_PROTOCOL;
            return -1;
        }
        if (rc == 0)
            break;
        struct pending *q = s->head;
        s->head = q->next;
        if (!s->head)
            s->tail = NULL;
        s->npending--;
        client_ok(s->cs);
        q->fn(&r, q->arg); /* r.data points into the input: drained after */
        free(q);
        evbuffer_drain(in, consumed);
    }
    return 0;
}

static void on_connect(struct core_conn *c, bool ok)
{
    (void)c;
    (void)ok; /* a failure is followed by on_close */
}

static const struct conn_ops async_ops = {
    .name = "mc_async",
    .on_read = on_read,
    .on_connect = on_connect,
    .on_close = on_close,
};

static int ensure_conn(struct mc_async *a, struct as_server *s)
{
    if (s->conn)
        return MC_CLIENT_OK;
    struct core_conn *c;
    if (s->cs->port == 0) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        if (strlen(s->cs->host) >= sizeof sun.sun_path)
            return MC_CLIENT_BAD_ARGUMENT;
        strcpy(sun.sun_path, s->cs->host);
        c = conn_connect(a->loop, (struct sockaddr *)&sun, sizeof sun, &async_ops, s);
    } else {
        c = conn_connect_host(a->loop, s->cs->host, s->cs->port, &async_ops, s);
    }
    if (!c) {
        if (client_failed(s->cs, a->o.failure_limit, a->o.retry_interval_ms))
            rebuild_ring(a);
        return MC_CLIENT_CONNECTION;
    }
    s->conn = c;
    conn_set_timeouts(c, (uint32_t)a->o.io_timeout_ms, (uint32_t)a->o.io_timeout_ms);
    return MC_CLIENT_OK;
}

static bool key_ok(const char *key, size_t nkey)
{
    if (!key || nkey == 0 || nkey > KEY_MAX)
        return false;
    for (size_t i = 0; i < nkey; i++)
        if ((unsigned char)key[i] <= ' ' || key[i] == 0x7f)
            return false;
    return true;
}

/* Choose the key's server, connect if needed and queue the request's
 * callback; the caller then writes the request to *out. */
static int submit(struct mc_async *a, const char *key, size_t nkey, enum mc_async_kind kind, mc_async_fn fn, void *arg,
                  struct evbuffer **out)
{
    if (!key_ok(key, nkey) || !fn)
        return MC_CLIENT_BAD_ARGUMENT;
    bool changed = false;
    for (size_t i = 0; i < a->n; i++)
        if (a->cs[i].dead && client_revive(&a->cs[i], a->o.failure_limit))
            changed = true;
    if (changed)
        rebuild_ring(a);
    int si = a->ring_ok ? hash_ketama_server_for(&a->ring, key, nkey) : -1;
    if (si < 0)
        return MC_CLIENT_NO_SERVER;
    struct as_server *s = &a->servers[si];
    if (s->npending >= a->o.max_pending)
        return MC_CLIENT_NO_MEMORY;
    struct pending *p = calloc(1, sizeof *p);
    if (!p)
        return MC_CLIENT_NO_MEMORY;
    int rc = ensure_conn(a, s);
    if (rc != MC_CLIENT_OK) {
        free(p);
        return rc;
    }
    p->kind = kind;
    p->fn = fn;
    p->arg = arg;
    if (s->tail)
        s->tail->next = p;
    else
        s->head = p;
    s->tail = p;
    s->npending++;
    *out = conn_out(s->conn);
    return MC_CLIENT_OK;
}

int mc_async_get(struct mc_async *a, const char *key, size_t nkey, mc_async_fn fn, void *arg)
{
    struct evbuffer *out;
    int rc = submit(a, key, nkey, MC_ASYNC_K_GET, fn, arg, &out);
    if (rc == MC_CLIENT_OK)
        evbuffer_add_printf(out, "gets %.*s\r\n", (int)nkey, key);
    return rc;
}

int mc_async_store(struct mc_async *a, enum mc_async_store op, const char *key, size_t nkey, const void *data,
                   size_t len, uint32_t flags, int32_t exptime, uint64_t cas, mc_async_fn fn, void *arg)
{
    static const char *const cmd[] = { "set", "add", "replace", "append", "prepend", "cas" };
    if ((unsigned)op > MC_ASYNC_CAS || (len && !data) || len > VALUE_MAX)
        return MC_CLIENT_BAD_ARGUMENT;
    struct evbuffer *out;
    int rc = submit(a, key, nkey, MC_ASYNC_K_STORE, fn, arg, &out);
    if (rc != MC_CLIENT_OK)
        return rc;
    evbuffer_add_printf(out, "%s %.*s %" PRIu32 " %" PRId32 " %zu", cmd[op], (int)nkey, key, flags, exptime, len);
    if (op == MC_ASYNC_CAS)
        evbuffer_add_printf(out, " %" PRIu64, cas);
    evbuffer_add(out, "\r\n", 2);
    evbuffer_add(out, data, len);
    evbuffer_add(out, "\r\n", 2);
    return MC_CLIENT_OK;
}

int mc_async_delete(struct mc_async *a, const char *key, size_t nkey, mc_async_fn fn, void *arg)
{
    struct evbuffer *out;
    int rc = submit(a, key, nkey, MC_ASYNC_K_DELETE, fn, arg, &out);
    if (rc == MC_CLIENT_OK)
        evbuffer_add_printf(out, "delete %.*s\r\n", (int)nkey, key);
    return rc;
}

int mc_async_arith(struct mc_async *a, bool incr, const char *key, size_t nkey, uint64_t delta, mc_async_fn fn,
                   void *arg)
{
    struct evbuffer *out;
    int rc = submit(a, key, nkey, MC_ASYNC_K_ARITH, fn, arg, &out);
    if (rc == MC_CLIENT_OK)
        evbuffer_add_printf(out, "%s %.*s %" PRIu64 "\r\n", incr ? "incr" : "decr", (int)nkey, key, delta);
    return rc;
}

int mc_async_touch(struct mc_async *a, const char *key, size_t nkey, int32_t exptime, mc_async_fn fn, void *arg)
{
    struct evbuffer *out;
    int rc = submit(a, key, nkey, MC_ASYNC_K_TOUCH, fn, arg, &out);
    if (rc == MC_CLIENT_OK)
        evbuffer_add_printf(out, "touch %.*s %" PRId32 "\r\n", (int)nkey, key, exptime);
    return rc;
}
