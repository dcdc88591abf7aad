/* backend: connections from userdbd to MariaDB servers, their pools, and
 * internal queries (directory, counters, replication lag).
 *
 * A backend connection is opened without blocking on the event loop (the
 * core's conn_connect), authenticates with mysql_native_password, and then
 * carries commands as raw MySQL packets: a client's command goes out as it
 * came and the reply is relayed packet by packet to the client, tracked by
 * ud_resp_feed only to know where it ends. Nothing is re-encoded and no
 * result set is held whole.
 *
 * Pools: per server, a common/pool (one loop, one node: the server) with
 * max_members = pool_max, so at the bound statements wait for a busy
 * connection to come back instead of failing; at most max_waiters wait.
 * userdbd's own queries (directory, counters, lag) wait at priority 0 and
 * may open UD_INTERNAL_RESERVE connections beyond pool_max, so clients
 * pinning every pooled connection can't starve the directory. A connect
 * failure marks the server's node dead for dead_retry seconds (the pool
 * then fails its waiters at once: a session routes elsewhere or gets an
 * error). */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <stddef.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"

#define UD_RELAY_HIGH (4u << 20) /* pause the backend when the client has this much unread */

static const struct conn_ops backend_ops;

/* ---- pool ------------------------------------------------------------------- */

#define UD_IDLE_KEEP_MS 60000 /* an idle backend connection is closed after this */

static inline struct ud_backend *member_backend(struct pool_member *m)
{
    return (struct ud_backend *)((char *)m - offsetof(struct ud_backend, m));
}

static inline struct ud_waiter *pool_waiter_ud(struct pool_waiter *w)
{
    return (struct ud_waiter *)((char *)w - offsetof(struct ud_waiter, pw));
}

static struct pool_member *op_connect(struct pool *p);

static void op_assign(struct pool *p, struct pool_member *m, struct pool_waiter *pw)
{
    struct ud_server *srv = p->data;
    struct ud_backend *b = member_backend(m);
    struct ud_waiter *w = pool_waiter_ud(pw);
    srv->n_leases++;
    conn_set_timeouts(b->c, UD_FOREVER_MS, 0);
    w->ready(w, b, NULL);
}

static void op_fail(struct pool *p, struct pool_waiter *pw)
{
    struct ud_server *srv = p->data;
    struct ud_waiter *w = pool_waiter_ud(pw);
    w->ready(w, NULL, srv->retired ? "server removed from the configuration" : "cannot connect to the backend");
}

static void op_close(struct pool *p, struct pool_member *m)
{
    (void)p;
    ud_backend_discard(member_backend(m));
}

static int op_idle_keep(struct pool *p)
{
    (void)p;
    return ud_cfg.pool_max + UD_INTERNAL_RESERVE; /* idle ones close by their idle timeout */
}

static bool op_usable(struct pool *p, struct pool_member *m)
{
    (void)p;
    return !conn_is_closing(member_backend(m)->c);
}

static const struct pool_ops ud_pool_ops = {
    .connect = op_connect,
    .assign = op_assign,
    .fail = op_fail,
    .close = op_close,
    .idle_keep = op_idle_keep,
    .usable = op_usable,
};

void ud_server_pool_init(struct ud_server *srv)
{
    pool_init(&srv->pool, &ud_pool_ops, srv);
    snprintf(srv->node.name, sizeof srv->node.name, "%s", srv->name);
    ud_server_pool_settings(srv);
}

void ud_server_pool_settings(struct ud_server *srv)
{
    srv->pool.max_members = ud_cfg.pool_max;
    srv->pool.dead_ms = (int)(ud_cfg.dead_retry * 1000) > 0 ? (int)(ud_cfg.dead_retry * 1000) : 1;
    srv->pool.connect_ahead = 0;
}

bool ud_server_dead(struct ud_server *srv) { return !pool_node_alive(&srv->node, pool_now_ms()); }

void ud_server_retire(struct ud_server *srv)
{
    srv->retired = true;
    atomic_store(&srv->node.removed, true);
    srv->pool.stopping = true;
    pool_drain(&srv->pool);
}

/* A connection is free: the first waiter gets it, else it goes idle. */
static void pool_put(struct ud_backend *b)
{
    struct ud_server *srv = b->srv;
    b->owner = NULL;
    b->iq = NULL;
    b->state = UB_IDLE;
    b->sync_steps = 0;
    if (srv->retired || loop_stopping()) {
        ud_backend_discard(b);
        return;
    }
    /* A connection of the internal reserve serves only internal queries. */
    if (srv->pool.nmembers > ud_cfg.pool_max) {
        struct pool_waiter *w = pool_first_waiter(&srv->pool);
        if (!w || !pool_waiter_ud(w)->internal) {
            ud_backend_discard(b);
            return;
        }
    }
    conn_set_timeouts(b->c, UD_IDLE_KEEP_MS, 0);
    pool_ready(&srv->pool, &b->m);
}

void ud_pool_lease(struct ud_server *srv, struct ud_waiter *w)
{
    struct pool *p = &srv->pool;
    w->server = srv;
    ud_server_pool_settings(srv); /* pool_max and dead_retry may have changed */
    if (srv->retired) {
        w->ready(w, NULL, "server removed from the configuration");
        return;
    }
    if (ud_server_dead(srv)) {
        w->ready(w, NULL, "backend is down (connect failed recently)");
        return;
    }
    /* userdbd's own queries (one per session at most, plus the console's)
     * get twice the room, but a bound all the same. */
    if (!p->nidle && p->nwaiting >= (w->internal ? 2 * ud_cfg.max_waiters : ud_cfg.max_waiters)) {
        srv->n_wait_full++;
        w->ready(w, NULL, "too many clients waiting for a backend connection");
        return;
    }
    if (!p->nidle)
        srv->n_waits++;
    if (w->internal) {
        /* At most one reserve connect per internal statement, and only
         * while every pooled connection is busy. */
        int room = p->nmembers + 1 > ud_cfg.pool_max ? p->nmembers + 1 : ud_cfg.pool_max;
        p->max_members = room < ud_cfg.pool_max + UD_INTERNAL_RESERVE ? room : ud_cfg.pool_max + UD_INTERNAL_RESERVE;
        pool_request(p, &w->pw, 0, true);
        p->max_members = ud_cfg.pool_max;
    } else {
        pool_request(p, &w->pw, 1, false);
    }
}

void ud_pool_cancel(struct ud_waiter *w)
{
    if (w->server)
        pool_cancel(&w->server->pool, &w->pw);
}

void ud_pool_release(struct ud_backend *b)
{
    if (b->paused) {
        b->paused = false;
        conn_resume_read(b->c);
    }
    pool_put(b);
}

void ud_backend_discard(struct ud_backend *b)
{
    b->owner = NULL;
    b->iq = NULL;
    conn_close(b->c);
}

void ud_pool_close_idle(struct ud_server *srv)
{
    struct pool_member *m;
    while ((m = pool_take_idle(&srv->pool)))
        ud_backend_discard(member_backend(m));
}

/* ---- connecting ---------------------------------------------------------------- */

static struct pool_member *op_connect(struct pool *p)
{
    struct ud_server *srv = p->data;
    if (srv->retired || ud_server_dead(srv))
        return NULL;
    struct ud_backend *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->srv = srv;
    b->m.node = &srv->node;
    b->state = UB_CONNECTING;
    b->autocommit = 1;
    snprintf(b->db, sizeof b->db, "%s", srv->dsn.database);
    srv->n_connects++;
    atomic_fetch_add_explicit(&srv->node.connects, 1, memory_order_relaxed);
    /* A DSN host name resolves through the core's evdns, off the loop. */
    struct core_conn *c =
        srv->addr ? conn_connect(loop_get(0), (const struct sockaddr *)srv->addr, srv->addr_len, &backend_ops, b)
                  : conn_connect_host(loop_get(0), srv->dsn.host, srv->dsn.port, &backend_ops, b);
    if (!c) {
        /* Nothing happened (the core's contract): b is still ours. */
        srv->n_connect_fail++;
        pool_node_dead(&srv->node, p->dead_ms);
        free(b);
        return NULL;
    }
    b->c = c;
    conn_set_timeouts(b->c, (uint32_t)ud_cfg.connect_timeout_ms, (uint32_t)ud_cfg.connect_timeout_ms);
    return &b->m;
}

static void backend_on_connect(struct core_conn *c, bool ok)
{
    struct ud_backend *b = c->data;
    if (ok && b)
        b->state = UB_HANDSHAKE;
}

static void send_packet(struct ud_backend *b, const uint8_t *payload, size_t n, uint8_t seq)
{
    uint8_t hdr[UD_HDR];
    ud_put_header(hdr, (uint32_t)n, seq);
    evbuffer_add(conn_out(b->c), hdr, UD_HDR);
    evbuffer_add(conn_out(b->c), payload, n);
}

static void connect_failed(struct ud_backend *b, const char *why)
{
    struct ud_server *srv = b->srv;
    log_warn("userdbd: %s (%s): %s", srv->name, srv->dsn_text, why);
    srv->n_connect_fail++;
    b->failed = true;
    conn_close(b->c);
}

/* Handshake and authentication; returns -1 when the conn was closed. */
static int backend_auth_packet(struct ud_backend *b, const uint8_t *p, uint32_t n, uint8_t seq)
{
    if (b->state == UB_HANDSHAKE) {
        struct ud_server_hs hs;
        if (n >= 1 && p[0] == 0xff) {
            uint16_t code;
            char msg[200] = "";
            ud_parse_err(p, n, &code, msg, sizeof msg);
            connect_failed(b, msg);
            return -1;
        }
        if (ud_parse_server_hs(p, n, &hs) < 0 || !(hs.caps & UD_CLIENT_PROTOCOL_41)) {
            connect_failed(b, "not a MySQL protocol 10 server");
            return -1;
        }
        b->thread_id = hs.conn_id;
        if (b->srv->role == UD_ROLE_GLOBAL)
            snprintf(ud_server_version, sizeof ud_server_version, "%.80s-userdb", hs.version);
        uint8_t out[512];
        uint32_t caps = UD_ROUTER_CAPS & hs.caps;
        caps |= UD_CLIENT_PROTOCOL_41 | UD_CLIENT_SECURE_CONNECTION | UD_CLIENT_LONG_PASSWORD;
        size_t len = ud_enc_hs_response(out, sizeof out, caps, 45 /* utf8mb4_general_ci */,
                                        ud_cfg.backend_user ? ud_cfg.backend_user : "root",
                                        ud_backend_password ? ud_backend_password : "", hs.salt,
                                        b->srv->dsn.database[0] ? b->srv->dsn.database : NULL);
        if (!len) {
            connect_failed(b, "user or database name too long");
            return -1;
        }
        send_packet(b, out, len, (uint8_t)(seq + 1));
        b->state = UB_AUTH;
        return 0;
    }
    /* UB_AUTH */
    if (n >= 1 && p[0] == 0x00) {
        pool_put(b);
        return 0;
    }
    if (n >= 1 && p[0] == 0xfe) {
        char plugin[64];
        uint8_t salt[UD_SCRAMBLE_LEN];
        if (ud_parse_auth_switch(p, n, plugin, sizeof plugin, salt) < 0 || strcmp(plugin, "mysql_native_password")) {
            connect_failed(b, "backend asks for an authentication method other than mysql_native_password");
            return -1;
        }
        uint8_t resp[UD_SCRAMBLE_LEN];
        const char *pw = ud_backend_password ? ud_backend_password : "";
        if (*pw) {
            ud_native_scramble(salt, pw, resp);
            send_packet(b, resp, UD_SCRAMBLE_LEN, (uint8_t)(seq + 1));
        } else {
            send_packet(b, resp, 0, (uint8_t)(seq + 1));
        }
        return 0;
    }
    uint16_t code = 0;
    char msg[200] = "authentication failed";
    ud_parse_err(p, n, &code, msg, sizeof msg);
    connect_failed(b, msg);
    return -1;
}

/* ---- forwarding --------------------------------------------------------------- */

static void write_command(struct evbuffer *out, uint8_t command, const void *body, size_t n)
{
    uint8_t hdr[UD_HDR + 1];
    ud_put_header(hdr, (uint32_t)(n + 1), 0);
    hdr[UD_HDR] = command;
    evbuffer_add(out, hdr, sizeof hdr);
    evbuffer_add(out, body, n);
}

void ud_backend_forward(struct ud_backend *b, const char *db, int autocommit, int multi, struct evbuffer *cmd,
                        uint8_t command)
{
    b->relayed = false;
    b->sync_steps = 0;
    b->pending_cmd = command;
    /* Session sync: internal commands whose OKs are swallowed, sent in the
     * same write as the client's command. */
    if ((db && *db && strcmp(db, b->db) != 0) || (autocommit >= 0 && autocommit != b->autocommit) ||
        (multi >= 0 && multi != b->multi)) {
        struct evbuffer *pre = evbuffer_new();
        if (db && *db && strcmp(db, b->db) != 0) {
            write_command(pre, UD_COM_INIT_DB, db, strlen(db));
            snprintf(b->db, sizeof b->db, "%s", db);
            b->sync_steps++;
        }
        if (autocommit >= 0 && autocommit != b->autocommit) {
            const char *q = autocommit ? "SET autocommit=1" : "SET autocommit=0";
            write_command(pre, UD_COM_QUERY, q, strlen(q));
            b->autocommit = autocommit;
            b->sync_steps++;
        }
        if (multi >= 0 && multi != b->multi) {
            uint8_t opt[2] = { multi ? 0 : 1, 0 }; /* MYSQL_OPTION_MULTI_STATEMENTS_ON / _OFF */
            write_command(pre, UD_COM_SET_OPTION, opt, 2);
            b->multi = multi;
            b->sync_steps++;
        }
        evbuffer_prepend_buffer(cmd, pre);
        evbuffer_free(pre);
    }
    enum ud_resp_kind kind = ud_resp_kind_for(command);
    ud_resp_start(&b->resp, kind);
    b->state = b->sync_steps ? UB_SYNC : UB_FORWARD;
    conn_write_now(b->c, cmd);
    if (kind == UD_RESP_NONE && !b->sync_steps) {
        struct ud_sess *s = b->owner;
        if (s)
            ud_sess_reply_done(s, b, false);
    }
}

void ud_backend_resume(struct ud_backend *b)
{
    if (b->paused) {
        b->paused = false;
        conn_resume_read(b->c);
        conn_kick(b->c);
    }
}

static void iq_finish(struct ud_iq *q);

/* The reply to a sync command: OK goes on, ERR fails the client's command
 * (its own reply is then swallowed too). */
static int sync_packet(struct ud_backend *b, const uint8_t *p, uint32_t n)
{
    struct ud_sess *s = b->owner;
    b->sync_steps--;
    if (n >= 1 && p[0] == 0xff) {
        uint16_t code = 0;
        char msg[256] = "";
        ud_parse_err(p, n, &code, msg, sizeof msg);
        b->db[0] = '\0'; /* unknown now */
        struct ud_iq *q = b->iq;
        /* The client's command is still queued behind: the connection
         * can't be reused cleanly. */
        ud_backend_discard(b);
        if (s) {
            ud_sess_send_error(s, 1, code, "42000", msg);
            ud_sess_reply_done(s, NULL, true);
        } else if (q) {
            q->error = true;
            q->err_code = code;
            snprintf(q->err, sizeof q->err, "%s", msg);
            iq_finish(q);
        }
        return -1;
    }
    if (b->sync_steps == 0) {
        b->state = UB_FORWARD;
        if (b->resp.kind == UD_RESP_NONE && s)
            ud_sess_reply_done(s, b, false);
    }
    return 0;
}

/* ---- internal queries ----------------------------------------------------------- */

static void iq_ready(struct ud_waiter *w, struct ud_backend *b, const char *err);

int ud_iq_run(struct ud_server *srv, const char *sql, void (*done)(struct ud_iq *q), void *arg)
{
    struct ud_iq *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    snprintf(q->sql, sizeof q->sql, "%s", sql);
    q->done = done;
    q->arg = arg;
    q->w.ready = iq_ready;
    q->w.internal = true;
    ud_pool_lease(srv, &q->w);
    return 0;
}

static void iq_finish(struct ud_iq *q)
{
    q->done(q);
    for (int i = 0; i < q->ncols && i < 64; i++) {
        free(q->col[i]);
        free(q->val[i]);
    }
    free(q);
}

static void iq_ready(struct ud_waiter *w, struct ud_backend *b, const char *err)
{
    struct ud_iq *q = (struct ud_iq *)w;
    if (!b) {
        q->error = true;
        q->err_code = UD_ER_CONN_ERROR;
        snprintf(q->err, sizeof q->err, "%s: %s", w->server ? w->server->name : "backend", err);
        iq_finish(q);
        return;
    }
    q->b = b;
    b->iq = q;
    struct evbuffer *cmd = evbuffer_new();
    uint8_t hdr[UD_HDR + 1];
    size_t n = strlen(q->sql);
    ud_put_header(hdr, (uint32_t)(n + 1), 0);
    hdr[UD_HDR] = UD_COM_QUERY;
    evbuffer_add(cmd, hdr, sizeof hdr);
    evbuffer_add(cmd, q->sql, n);
    ud_backend_forward(b, b->srv->dsn.database, 1, 0, cmd, UD_COM_QUERY);
    evbuffer_free(cmd);
    b->state = b->sync_steps ? UB_SYNC : UB_INTERNAL;
}

const char *ud_iq_value(const struct ud_iq *q, const char *col)
{
    if (q->nrows < 1)
        return NULL;
    for (int i = 0; i < q->ncols && i < 64; i++)
        if (q->col[i] && strcasecmp(q->col[i], col) == 0)
            return q->val[i];
    return NULL;
}

/* One packet of an internal query's reply. Returns 1 when complete. */
static int iq_packet(struct ud_backend *b, const uint8_t *p, uint32_t n)
{
    struct ud_iq *q = b->iq;
    int prev_state = b->resp.state;
    int rc = ud_resp_feed(&b->resp, p, n, n);
    if (rc < 0)
        return -1;
    if (p[0] == 0xff && (prev_state == 0 || b->resp.error)) {
        q->error = true;
        ud_parse_err(p, n, &q->err_code, q->err, sizeof q->err);
    } else if (prev_state == 0 && p[0] == 0x00) {
        struct ud_ok ok;
        if (ud_parse_ok(p, n, &ok) == 0) {
            q->affected = ok.affected;
            q->insert_id = ok.insert_id;
        }
    } else if (prev_state == 1 /* column definitions */) {
        const char *name;
        size_t len;
        if (q->ncols < 64 && ud_parse_coldef_name(p, n, &name, &len) == 0)
            q->col[q->ncols++] = strndup(name, len);
    } else if (prev_state == 3 /* rows */ && !(p[0] == 0xfe && n < 9)) {
        if (q->nrows++ == 0)
            for (int i = 0; i < q->ncols; i++) {
                const char *v;
                size_t len;
                if (ud_text_row_cell(p, n, i, &v, &len) == 1)
                    q->val[i] = strndup(v, len);
            }
    }
    return rc;
}

/* ---- reading ------------------------------------------------------------------- */

/* Relayed packets collect here and go to the client in one write per
 * read from the backend (the loop is single-threaded). */
static struct evbuffer *relay_buf;

static void relay_flush(struct ud_backend *b)
{
    if (!relay_buf || evbuffer_get_length(relay_buf) == 0)
        return;
    struct core_conn *cc = b->owner ? ud_sess_conn(b->owner) : NULL;
    if (cc)
        conn_write_now(cc, relay_buf);
    else
        evbuffer_drain(relay_buf, evbuffer_get_length(relay_buf));
}

static int backend_on_read(struct core_conn *c)
{
    struct ud_backend *b = c->data;
    struct evbuffer *in = conn_in(c);
    if (!relay_buf && !(relay_buf = evbuffer_new()))
        return -1;
    while (b && !b->paused && !conn_is_closing(c)) {
        uint8_t head[UD_HDR + 32];
        size_t avail = evbuffer_get_length(in);
        if (avail < UD_HDR)
            break;
        uint32_t plen;
        uint8_t seq;
        evbuffer_copyout(in, head, UD_HDR);
        ud_pkt_header(head, UD_HDR, &plen, &seq);
        if (avail < UD_HDR + (size_t)plen)
            break;
        switch (b->state) {
        case UB_CONNECTING:
        case UB_HANDSHAKE:
        case UB_AUTH: {
            if (plen > 4096) {
                connect_failed(b, "handshake packet too large");
                return -1;
            }
            const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(UD_HDR + plen));
            uint8_t copy[4096];
            memcpy(copy, p + UD_HDR, plen);
            evbuffer_drain(in, UD_HDR + plen);
            if (backend_auth_packet(b, copy, plen, seq) < 0)
                return 0;
            continue;
        }
        case UB_IDLE:
            /* Unsolicited packet (e.g. the server closing an idle conn). */
            conn_close(c);
            return 0;
        case UB_SYNC: {
            uint8_t first[32];
            size_t k = plen < sizeof first ? plen : sizeof first;
            const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(UD_HDR + k));
            memcpy(first, p + UD_HDR, k);
            evbuffer_drain(in, UD_HDR + plen);
            if (sync_packet(b, first, (uint32_t)k) < 0)
                return 0;
            if (b->state == UB_FORWARD && b->iq)
                b->state = UB_INTERNAL;
            if (b->state == UB_IDLE)
                return 0; /* reply_done released it */
            continue;
        }
        case UB_INTERNAL: {
            if (plen > 65536) {
                conn_close(c);
                return 0;
            }
            const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(UD_HDR + plen));
            uint8_t *copy = malloc(plen ? plen : 1);
            if (!copy) {
                conn_close(c);
                return 0;
            }
            memcpy(copy, p + UD_HDR, plen);
            evbuffer_drain(in, UD_HDR + plen);
            int rc = plen ? iq_packet(b, copy, plen) : -1;
            free(copy);
            if (rc < 0) {
                conn_close(c);
                return 0;
            }
            if (rc == 1) {
                struct ud_iq *q = b->iq;
                pool_put(b);
                iq_finish(q);
                return 0;
            }
            continue;
        }
        case UB_FORWARD: {
            struct ud_sess *s = b->owner;
            struct core_conn *cc = s ? ud_sess_conn(s) : NULL;
            size_t k = plen < 32 ? plen : 32;
            const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)(UD_HDR + k));
            int rc = ud_resp_feed(&b->resp, p + UD_HDR, k, plen);
            bool err_first = !b->relayed && rc == 1 && b->resp.error;
            if (cc)
                evbuffer_remove_buffer(in, relay_buf, UD_HDR + plen);
            else
                evbuffer_drain(in, UD_HDR + plen);
            b->relayed = true;
            if (rc < 0) {
                relay_flush(b);
                log_warn("userdbd: %s: reply out of protocol; closing both sides", b->srv->name);
                ud_n.protocol_errors++;
                if (s)
                    ud_sess_backend_lost(s, b);
                conn_close(c);
                return 0;
            }
            if (rc == 1) {
                relay_flush(b);
                if (s)
                    ud_sess_reply_done(s, b, err_first);
                else
                    pool_put(b);
                return 0;
            }
            if (cc && evbuffer_get_length(relay_buf) > 65536)
                relay_flush(b);
            if (cc && evbuffer_get_length(conn_out(cc)) > UD_RELAY_HIGH) {
                b->paused = true;
                conn_pause_read(c);
                return 0;
            }
            continue;
        }
        }
    }
    if (b && b->state == UB_FORWARD)
        relay_flush(b);
    return 0;
}

static void backend_on_close(struct core_conn *c, enum conn_close_reason why)
{
    struct ud_backend *b = c->data;
    if (!b)
        return;
    struct ud_server *srv = b->srv;
    c->data = NULL;
    bool failed = false;
    if (b->state <= UB_AUTH) {
        /* A connect that failed (refused, timed out, login refused): the
         * pool marks the server dead and fails waiters nothing else serves.
         * One we closed ourselves (stopping, retired) is not a failure. */
        failed = b->failed || why != CONN_CLOSE_LOCAL;
        if (why != CONN_CLOSE_LOCAL) {
            srv->n_connect_fail++;
            log_warn("userdbd: %s (%s): cannot connect", srv->name, srv->dsn_text);
        }
    } else if (b->state == UB_IDLE) {
        /* idle: pool_gone takes it off the idle list */
    } else if (b->owner) {
        ud_n.backend_lost++;
        ud_sess_backend_lost(b->owner, b);
    } else if (b->iq) {
        struct ud_iq *q = b->iq;
        q->error = true;
        q->err_code = UD_ER_CONN_ERROR;
        snprintf(q->err, sizeof q->err, "%s: lost connection (%s)", srv->name,
                 why == CONN_CLOSE_TIMEOUT ? "timeout"
                 : why == CONN_CLOSE_EOF   ? "closed by the server"
                                           : "error");
        iq_finish(q);
    }
    pool_gone(&srv->pool, &b->m, failed);
    free(b);
}

static bool backend_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

static const struct conn_ops backend_ops = {
    .name = "userdb-backend",
    .on_read = backend_on_read,
    .on_connect = backend_on_connect,
    .on_eof = backend_on_eof,
    .on_close = backend_on_close,
};
