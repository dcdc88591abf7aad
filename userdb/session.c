/* session: one application connection to userdbd — the MySQL server side.
 *
 * States: HANDSHAKE (greeting sent, waiting for the login) -> AUTH_SWITCH
 * (asked for mysql_native_password) -> READY (waiting for a command) ->
 * ROUTING (waiting for the directory or a backend connection) -> BUSY (a
 * backend's reply is being relayed) -> READY ... One command is handled at a
 * time; commands pipelined behind it wait in the input buffer.
 *
 * Routing: a leading user=ID comment sends the statement to that user's cluster, no
 * hint to the global database; writes, and everything while autocommit is
 * off, go to the active master; plain reads to a fresh replica. A backend
 * connection is lent per statement and given back when the reply ends
 * outside a transaction; it stays pinned to the session during a
 * transaction, and for the rest of the session once the session holds
 * state a shared connection can't carry (prepared statements, SET, user
 * variables, locks, temporary tables). */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/rand.h>

#include "common/conn.h"
#include "common/log.h"

enum ud_sstate { US_HANDSHAKE = 0, US_AUTH_SWITCH, US_READY, US_ROUTING, US_BUSY };
enum ud_pin { PIN_NONE = 0, PIN_TRANS, PIN_SESSION };

struct ud_sess {
    struct core_conn *c;
    enum ud_sstate state;
    uint8_t salt[UD_SCRAMBLE_LEN];
    uint32_t caps;
    uint32_t conn_id; /* the id the handshake gave (KILL takes it) */
    struct ud_sess *next_all, *prev_all;
    char user[65]; /* login name, kept between login and auth switch */
    char db[65];
    int autocommit;
    struct ud_backend *b;
    enum ud_pin pin;
    struct ud_waiter w;
    struct evbuffer *cmd; /* the command being handled, whole packet */
    uint8_t command;
    struct ud_query q;
    int cluster;
    bool read;
    bool retried;
    uint64_t route_until_ms; /* a hinted write: its directory answer expires then (0: none) */
    int refreshes;           /* directory answers that expired while the write waited */
    int refs;                /* directory/internal callbacks outstanding + the conn */
    int nstmts;              /* prepared statements open on the pinned backend */
    bool processing;         /* sess_process is on the stack: callbacks don't recurse */
    bool read_paused;        /* too much pipelined input while a command runs */
    bool state_pinned;       /* SET, user variables, locks, temporary tables */
    bool closed;
    char log_cmd[160]; /* -vv: the command, logged with its outcome */
    size_t log_cmd_len;
    bool log_secret;
};

static uint32_t next_conn_id = 1;
static struct ud_sess *all_sessions; /* for KILL <id> */

struct core_conn *ud_sess_conn(struct ud_sess *s) { return s->closed ? NULL : s->c; }

static void sess_unref(struct ud_sess *s)
{
    if (--s->refs == 0) {
        evbuffer_free(s->cmd);
        free(s);
    }
}

static uint16_t my_status(const struct ud_sess *s)
{
    return (uint16_t)((s->autocommit ? UD_STATUS_AUTOCOMMIT : 0) | (s->pin == PIN_TRANS ? UD_STATUS_IN_TRANS : 0));
}

void ud_sess_send_error(struct ud_sess *s, uint8_t seq, uint16_t code, const char *state, const char *msg)
{
    if (s->closed)
        return;
    uint8_t buf[600];
    size_t n = ud_enc_err(buf, sizeof buf, seq, code, state, msg);
    evbuffer_add(conn_out(s->c), buf, n);
    ud_n.errors_sent++;
}

static void send_ok(struct ud_sess *s, uint8_t seq)
{
    uint8_t buf[32];
    size_t n = ud_enc_ok(buf, sizeof buf, seq, 0, 0, my_status(s), 0);
    evbuffer_add(conn_out(s->c), buf, n);
}

static void sess_process(struct ud_sess *s);
static void sess_process_loop(struct ud_sess *s);
static void logged_in(struct ud_sess *s);

/* -vv: the command (SQL text, only its first word if it may carry a
 * password; never the login or COM_CHANGE_USER's auth data), kept when it
 * starts and logged with how it was answered. */
static void log_keep(struct ud_sess *s)
{
    size_t n = evbuffer_get_length(s->cmd);
    s->log_cmd_len = 0;
    if (!log_command_enabled() || n <= UD_HDR)
        return;
    const char *p = (const char *)evbuffer_pullup(s->cmd, -1) + UD_HDR;
    n -= UD_HDR;
    if (p[0] == UD_COM_QUERY || p[0] == UD_COM_STMT_PREPARE) {
        s->log_secret = memmem(p, n, "ASSWORD", 7) || memmem(p, n, "assword", 7) || memmem(p, n, "DENTIFIED", 9) ||
                        memmem(p, n, "dentified", 9);
        s->log_cmd_len = n - 1 < sizeof s->log_cmd ? n - 1 : sizeof s->log_cmd;
        memcpy(s->log_cmd, p + 1, s->log_cmd_len);
    } else {
        s->log_secret = false;
        int k = snprintf(s->log_cmd, sizeof s->log_cmd, "command 0x%02x%s", (unsigned char)p[0],
                         p[0] == UD_COM_CHANGE_USER ? " (change user)" : "");
        s->log_cmd_len = k > 0 ? (size_t)k : 0;
    }
}

static void log_cmd(struct ud_sess *s, const char *result)
{
    if (!s->log_cmd_len)
        return;
    char who[80];
    log_command(log_addr(&s->c->peer, who, sizeof who), s->log_cmd, s->log_cmd_len, s->log_secret, result,
                strlen(result));
    s->log_cmd_len = 0;
}

/* A command finished without a backend reply being relayed. */
static void local_done(struct ud_sess *s)
{
    log_cmd(s, "answered by userdbd");
    s->state = US_READY;
    evbuffer_drain(s->cmd, evbuffer_get_length(s->cmd));
}

static void fail_cmd(struct ud_sess *s, uint16_t code, const char *state, const char *msg)
{
    if (log_command_enabled()) {
        char r[300];
        snprintf(r, sizeof r, "ERR %u %s", code, msg);
        log_cmd(s, r);
    }
    ud_sess_send_error(s, 1, code, state, msg);
    local_done(s);
}

/* ---- handshake ------------------------------------------------------------------ */

void ud_reject(int fd, void *arg)
{
    (void)arg;
    uint8_t buf[128];
    size_t n = ud_enc_err(buf, sizeof buf, 0, UD_ER_TOO_MANY_CONN, "08004", "Too many connections");
    ssize_t r = send(fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

static bool auth_ok(struct ud_sess *s, const char *user, size_t ulen, const uint8_t *resp, size_t rlen)
{
    const char *want = ud_cfg.client_user ? ud_cfg.client_user : "";
    if (strlen(want) != ulen || memcmp(want, user, ulen) != 0)
        return false;
    return ud_native_check(s->salt, ud_client_password ? ud_client_password : "", resp, rlen);
}

static void auth_denied(struct ud_sess *s, uint8_t seq, const char *user, size_t ulen)
{
    char msg[200], peer[64];
    conn_peer_str(s->c, peer, sizeof peer);
    char *colon = strrchr(peer, ':');
    if (colon)
        *colon = '\0';
    snprintf(msg, sizeof msg, "Access denied for user '%.*s'@'%s' (using password: YES)", (int)(ulen > 64 ? 64 : ulen),
             user, peer);
    ud_n.auth_failures++;
    ud_sess_send_error(s, seq, UD_ER_ACCESS_DENIED, "28000", msg);
    conn_close_after_write(s->c);
}

static int handle_login(struct ud_sess *s, const uint8_t *p, uint32_t n, uint8_t seq)
{
    struct ud_hs_response r;
    if (ud_parse_hs_response(p, n, &r) < 0) {
        ud_n.protocol_errors++;
        ud_sess_send_error(s, (uint8_t)(seq + 1), UD_ER_HANDSHAKE, "08S01", "Bad handshake");
        conn_close_after_write(s->c);
        return -1;
    }
    if (r.ssl_request) {
        ud_sess_send_error(s, (uint8_t)(seq + 1), UD_ER_HANDSHAKE, "08S01", "TLS is not offered by this server");
        conn_close_after_write(s->c);
        return -1;
    }
    /* As a server does, honour only what both sides offered: libmariadb,
     * for one, asks for session tracking whether offered or not. */
    s->caps = r.caps & UD_OFFERED_CAPS;
    /* The database named at login is not used: each server's DSN names its
     * database (README). */
    if (r.plugin && !(r.plugin_len == 21 && memcmp(r.plugin, "mysql_native_password", 21) == 0)) {
        snprintf(s->user, sizeof s->user, "%.*s", (int)(r.user_len > 64 ? 64 : r.user_len), r.user);
        uint8_t buf[64];
        size_t k = ud_enc_auth_switch(buf, sizeof buf, (uint8_t)(seq + 1), s->salt);
        evbuffer_add(conn_out(s->c), buf, k);
        s->state = US_AUTH_SWITCH;
        return 0;
    }
    if (!auth_ok(s, r.user, r.user_len, r.auth, r.auth_len)) {
        auth_denied(s, (uint8_t)(seq + 1), r.user, r.user_len);
        return -1;
    }
    send_ok(s, (uint8_t)(seq + 1));
    logged_in(s);
    return 0;
}

static int handle_auth_switch(struct ud_sess *s, const uint8_t *p, uint32_t n, uint8_t seq)
{
    if (!auth_ok(s, s->user, strlen(s->user), p, n)) {
        auth_denied(s, (uint8_t)(seq + 1), s->user, strlen(s->user));
        return -1;
    }
    send_ok(s, (uint8_t)(seq + 1));
    logged_in(s);
    return 0;
}

/* ---- routing ---------------------------------------------------------------------- */

static void backend_ready(struct ud_waiter *w, struct ud_backend *b, const char *err);

static void forward_to(struct ud_sess *s, struct ud_backend *b)
{
    s->b = b;
    b->owner = s;
    s->state = US_BUSY;
    conn_set_busy(s->c, true);
    ud_backend_forward(b, s->db, s->autocommit, (s->caps & UD_CLIENT_MULTI_STATEMENTS) ? 1 : 0, s->cmd, s->command);
}

static void routed_command(struct ud_sess *s);

/* A write may only reach a user's cluster while the directory answer that
 * sent it there is fresh: the mover counts directory_ttl from setting the
 * read-only flag, then copies. A write that waited in the pool past that
 * asks the directory again (and is refused if the user is now read-only). */
static bool route_expired(struct ud_sess *s)
{
    return !s->read && s->route_until_ms && ud_now_ms() >= s->route_until_ms;
}

static void route_to_server(struct ud_sess *s, struct ud_server *srv)
{
    s->state = US_ROUTING;
    s->w.ready = backend_ready;
    srv->n_routed++;
    if (srv->role == UD_ROLE_REPLICA)
        ud_n.queries_replica++;
    ud_pool_lease(srv, &s->w);
}

static void backend_ready(struct ud_waiter *w, struct ud_backend *b, const char *err)
{
    struct ud_sess *s = (struct ud_sess *)((char *)w - offsetof(struct ud_sess, w));
    if (s->closed) {
        if (b)
            ud_pool_release(b);
        return;
    }
    if (!b) {
        if (s->read && !s->retried) {
            /* A replica could not be reached: the master serves the read. */
            s->retried = true;
            struct ud_server *m = ud_pick_server(s->cluster, false);
            if (m && m != w->server) {
                route_to_server(s, m);
                return;
            }
        }
        char msg[300];
        snprintf(msg, sizeof msg, "userdb: %s: %s", w->server ? w->server->name : "backend", err);
        fail_cmd(s, UD_ER_CONN_ERROR, "HY000", msg);
        sess_process(s);
        return;
    }
    if (route_expired(s)) {
        ud_pool_release(b);
        s->route_until_ms = 0;
        if (++s->refreshes > UD_MAX_ROUTE_REFRESHES) {
            fail_cmd(s, UD_ER_READ_ONLY, "HY000",
                     "userdb: the directory answers older than directory_ttl by the time a backend is free; retry");
            sess_process(s);
            return;
        }
        ud_n.route_refreshes++;
        routed_command(s); /* dir_done carries on with the session */
        return;
    }
    forward_to(s, b);
}

/* Where the current command goes, once the user's cluster is known. */
static void route(struct ud_sess *s, int cluster, bool user_readonly, bool hinted)
{
    struct ud_cluster *cl = cluster ? ud_cluster_get(cluster) : NULL;
    if (cluster && !cl) {
        char msg[128];
        snprintf(msg, sizeof msg, "userdb: cluster %d is not configured", cluster);
        fail_cmd(s, UD_ER_UNKNOWN, "HY000", msg);
        return;
    }
    bool write = !s->read;
    if (write && (user_readonly || (cl && cl->readonly))) {
        char msg[160];
        if (user_readonly)
            snprintf(msg, sizeof msg, "userdb: user %llu is read-only (being moved); retry shortly",
                     (unsigned long long)s->q.user_id);
        else
            snprintf(msg, sizeof msg, "userdb: cluster %d is read-only", cluster);
        ud_n.readonly_refused++;
        fail_cmd(s, UD_ER_READ_ONLY, "HY000", msg);
        return;
    }
    if (s->b) {
        if (hinted && s->b->srv->cluster != cluster) {
            char msg[200];
            snprintf(msg, sizeof msg, "userdb: this connection is pinned to %s by %s; user %llu lives on cluster %d",
                     s->b->srv->name,
                     s->pin == PIN_TRANS ? "an open transaction (COMMIT or ROLLBACK first)"
                                         : "session state (prepared statements, SET, locks)",
                     (unsigned long long)s->q.user_id, cluster);
            fail_cmd(s, UD_ER_UNKNOWN, "HY000", msg);
            return;
        }
        forward_to(s, s->b);
        return;
    }
    s->cluster = cluster;
    s->retried = false;
    struct ud_server *srv = ud_pick_server(cluster, s->read);
    if (!srv) {
        fail_cmd(s, UD_ER_UNKNOWN, "HY000", "userdb: no server configured for this route");
        return;
    }
    route_to_server(s, srv);
}

static void dir_done(void *arg, const struct ud_dir_entry *e, const char *err)
{
    struct ud_sess *s = arg;
    if (s->closed) {
        sess_unref(s);
        return;
    }
    sess_unref(s);
    if (err) {
        char msg[300];
        snprintf(msg, sizeof msg, "userdb: directory: %s", err);
        fail_cmd(s, UD_ER_UNKNOWN, "HY000", msg);
    } else if (!e->cluster) {
        char msg[100];
        snprintf(msg, sizeof msg, "userdb: no user %llu", (unsigned long long)s->q.user_id);
        fail_cmd(s, UD_ER_NO_USER, "HY000", msg);
    } else if (s->q.special == UD_SPECIAL_COUNTER) {
        void ud_counter_next(struct ud_sess * s, const struct ud_dir_entry *e);
        ud_counter_next(s, e);
        return;
    } else {
        s->route_until_ms = e->expires_ms;
        route(s, e->cluster, e->readonly, true);
    }
    if (s->state == US_READY)
        sess_process(s);
}

static void routed_command(struct ud_sess *s)
{
    s->route_until_ms = 0;
    if (s->q.hint == UD_HINT_USER) {
        s->state = US_ROUTING;
        s->refs++;
        ud_dir_lookup((uint32_t)s->q.user_id, dir_done, s);
        return;
    }
    route(s, 0, false, false);
}

/* ---- specials: answers userdbd gives itself ---------------------------------------- */

void ud_sess_special_reply(struct ud_sess *s, const char *colname, uint64_t value, const char *err, uint16_t code)
{
    if (!s->closed) {
        if (err) {
            ud_sess_send_error(s, 1, code ? code : UD_ER_UNKNOWN, "HY000", err);
        } else {
            char v[24];
            snprintf(v, sizeof v, "%llu", (unsigned long long)value);
            const char *vals[1] = { v };
            uint8_t buf[512];
            size_t n = ud_enc_result(buf, sizeof buf, 1, colname, vals, 1, my_status(s));
            evbuffer_add(conn_out(s->c), buf, n);
        }
        local_done(s);
        sess_process(s);
    }
    sess_unref(s);
}

/* For directory.c: keep the session alive across an internal query. */
void ud_sess_hold(struct ud_sess *s) { s->refs++; }
const struct ud_query *ud_sess_query(struct ud_sess *s) { return &s->q; }

void ud_create_user(struct ud_sess *s);

static void special(struct ud_sess *s)
{
    if (s->q.special == UD_SPECIAL_CREATE_USER) {
        if (s->q.hint == UD_HINT_USER) {
            fail_cmd(s, UD_ER_UNKNOWN, "HY000", "userdb: userdb_create_user() takes /* user=new */ (or no hint)");
            return;
        }
        s->state = US_ROUTING;
        ud_create_user(s);
        return;
    }
    if (s->q.hint != UD_HINT_USER) {
        fail_cmd(s, UD_ER_UNKNOWN, "HY000", "userdb: userdb_counter() needs a /* user=ID */ hint");
        return;
    }
    routed_command(s);
}

/* ---- KILL ------------------------------------------------------------------------------ */

static void kill_sent(struct ud_iq *q)
{
    if (q->error)
        log_warn("userdbd: KILL on the backend: %s", q->err);
}

/* KILL [CONNECTION | QUERY] id, with the id userdbd's handshake gave: the
 * target's running statement is killed on its backend (KILL QUERY there),
 * and for KILL CONNECTION its client connection is closed. */
static void kill_session(struct ud_sess *s)
{
    struct ud_sess *t = all_sessions;
    while (t && t->conn_id != s->q.kill_id)
        t = t->next_all;
    if (!t || t->closed) {
        char msg[64];
        snprintf(msg, sizeof msg, "Unknown thread id: %llu", (unsigned long long)s->q.kill_id);
        fail_cmd(s, 1094, "HY000", msg);
        return;
    }
    if (t->b && t->state == US_BUSY && t->b->thread_id) {
        char sql[64];
        snprintf(sql, sizeof sql, "KILL QUERY %u", t->b->thread_id);
        ud_iq_run(t->b->srv, sql, kill_sent, NULL);
    }
    if (t == s) {
        ud_sess_send_error(s, 1, 1927, "70100", "Connection was killed");
        local_done(s);
        conn_close_after_write(s->c);
        return;
    }
    if (s->q.kill == 1)
        conn_close(t->c); /* its backend, busy or pinned, is closed with it */
    send_ok(s, 1);
    local_done(s);
}

/* ---- commands ----------------------------------------------------------------------- */

static void query(struct ud_sess *s)
{
    size_t len = evbuffer_get_length(s->cmd) - UD_HDR - 1;
    const char *sql = (const char *)evbuffer_pullup(s->cmd, -1) + UD_HDR + 1;
    char err[200];
    ud_n.queries++;
    if (ud_query_classify(sql, len, &s->q, err, sizeof err) < 0) {
        fail_cmd(s, UD_ER_UNKNOWN, "42000", err);
        return;
    }
    if (s->q.hint == UD_HINT_USER)
        ud_n.queries_hinted++;
    if (s->q.special) {
        special(s);
        return;
    }
    if (s->q.hint == UD_HINT_NEW) {
        fail_cmd(s, UD_ER_UNKNOWN, "HY000", "userdb: /* user=new */ goes with SELECT userdb_create_user('name')");
        return;
    }
    if (s->q.kill) {
        kill_session(s);
        return;
    }
    if (s->q.autocommit >= 0) {
        s->autocommit = s->q.autocommit;
        if (!s->b) {
            send_ok(s, 1);
            local_done(s);
            return;
        }
    }
    s->read = s->q.is_read && s->autocommit;
    /* With multi-statements, only the first statement was classified:
     * anything after a ';' may write, so the master takes it. */
    if (s->read && (s->caps & UD_CLIENT_MULTI_STATEMENTS)) {
        const char *semi = memchr(sql, ';', len);
        while (semi && semi < sql + len) {
            const char *t = semi + 1;
            while (t < sql + len && (*t == ' ' || *t == '\t' || *t == '\r' || *t == '\n' || *t == ';'))
                t++;
            if (t < sql + len) {
                s->read = false;
                break;
            }
            semi = NULL;
        }
    }
    if (s->read)
        ud_n.queries_read++;
    else
        ud_n.queries_write++;
    routed_command(s);
}

static void prepare(struct ud_sess *s)
{
    size_t len = evbuffer_get_length(s->cmd) - UD_HDR - 1;
    const char *sql = (const char *)evbuffer_pullup(s->cmd, -1) + UD_HDR + 1;
    char err[200];
    if (ud_query_classify(sql, len, &s->q, err, sizeof err) < 0) {
        fail_cmd(s, UD_ER_UNKNOWN, "42000", err);
        return;
    }
    if (s->q.special || s->q.hint == UD_HINT_NEW) {
        fail_cmd(s, UD_ER_NOT_SUPPORTED, "42000", "userdb: userdb_* functions can't be prepared");
        return;
    }
    s->q.pins = false; /* counted instead: the pin ends when the last one closes */
    s->read = s->q.is_read && s->autocommit;
    routed_command(s);
}

/* Commands that only make sense on the connection that prepared. */
static void on_pinned(struct ud_sess *s, bool silent)
{
    if (s->b) {
        forward_to(s, s->b);
        return;
    }
    if (silent) {
        local_done(s);
        return;
    }
    fail_cmd(s, 1243, "HY000", "Unknown prepared statement handler given to mysqld_stmt_execute");
}

/* COM_CHANGE_USER (once authenticated) and COM_RESET_CONNECTION: the
 * session starts over (no backend, pin, database or transaction state) and
 * is told OK. */
static void reset_session(struct ud_sess *s)
{
    if (s->b) {
        ud_backend_discard(s->b);
        s->b = NULL;
    }
    s->pin = PIN_NONE;
    s->nstmts = 0;
    s->state_pinned = false;
    s->autocommit = 1;
    s->db[0] = '\0';
    send_ok(s, 1);
    local_done(s);
}

static void command(struct ud_sess *s)
{
    const uint8_t *p = evbuffer_pullup(s->cmd, UD_HDR + 1);
    log_keep(s);
    s->command = p[UD_HDR];
    s->refreshes = 0;
    s->c->requests++;
    memset(&s->q, 0, sizeof s->q);
    s->q.autocommit = -1;
    switch (s->command) {
    case UD_COM_QUERY: query(s); return;
    case UD_COM_PING:
        send_ok(s, 1);
        local_done(s);
        return;
    case UD_COM_QUIT:
        local_done(s);
        conn_close_after_write(s->c);
        return;
    case UD_COM_INIT_DB: {
        size_t len = evbuffer_get_length(s->cmd) - UD_HDR - 1;
        const char *db = (const char *)evbuffer_pullup(s->cmd, -1) + UD_HDR + 1;
        if (len == 0 || len > 64 || memchr(db, 0, len)) {
            fail_cmd(s, 1102, "42000", "Incorrect database name");
            return;
        }
        memcpy(s->db, db, len);
        s->db[len] = '\0';
        send_ok(s, 1);
        local_done(s);
        return;
    }
    case UD_COM_STMT_PREPARE: prepare(s); return;
    case UD_COM_STMT_EXECUTE:
    case UD_COM_STMT_FETCH:
    case UD_COM_STMT_RESET: on_pinned(s, false); return;
    case UD_COM_STMT_CLOSE:
    case UD_COM_STMT_SEND_LONG_DATA: on_pinned(s, true); return;
    case UD_COM_FIELD_LIST:
    case UD_COM_STATISTICS:
        s->read = true;
        if (s->b)
            forward_to(s, s->b);
        else
            route(s, 0, false, false);
        return;
    case UD_COM_SET_OPTION: {
        /* Multi-statements on (0) or off (1): kept per session, replayed on
         * each backend; the answer is an EOF packet, as servers send. */
        size_t len = evbuffer_get_length(s->cmd) - UD_HDR - 1;
        const uint8_t *o = evbuffer_pullup(s->cmd, -1) + UD_HDR + 1;
        if (len != 2 || o[1] != 0 || o[0] > 1) {
            fail_cmd(s, UD_ER_UNKNOWN_COM, "08S01", "Unknown option to COM_SET_OPTION");
            return;
        }
        if (o[0] == 0)
            s->caps |= UD_CLIENT_MULTI_STATEMENTS;
        else
            s->caps &= ~UD_CLIENT_MULTI_STATEMENTS;
        uint8_t buf[16];
        size_t n = ud_enc_eof(buf, sizeof buf, 1, my_status(s), 0);
        evbuffer_add(conn_out(s->c), buf, n);
        local_done(s);
        return;
    }
    case UD_COM_CHANGE_USER: {
        /* Only the one client account exists: a change to it (a driver
         * re-authenticating a pooled connection) resets the session like
         * COM_RESET_CONNECTION; the reply is checked against this
         * connection's handshake scramble, as servers do. Anything else is
         * refused and the connection closed, as MariaDB does. */
        size_t len = evbuffer_get_length(s->cmd) - UD_HDR - 1;
        const uint8_t *body = evbuffer_pullup(s->cmd, -1) + UD_HDR + 1;
        struct ud_hs_response r;
        if (ud_parse_change_user(body, len, s->caps, &r) < 0) {
            ud_n.protocol_errors++;
            fail_cmd(s, UD_ER_HANDSHAKE, "08S01", "Bad COM_CHANGE_USER packet");
            return;
        }
        if (r.plugin && !(r.plugin_len == 21 && memcmp(r.plugin, "mysql_native_password", 21) == 0)) {
            fail_cmd(s, UD_ER_UNKNOWN_COM, "08S01", "userdb: COM_CHANGE_USER takes mysql_native_password only");
            return;
        }
        if (!auth_ok(s, r.user, r.user_len, r.auth, r.auth_len)) {
            auth_denied(s, 1, r.user, r.user_len);
            local_done(s);
            return;
        }
        reset_session(s);
        return;
    }
    case UD_COM_RESET_CONNECTION: reset_session(s); return;
    default: {
        char msg[64];
        snprintf(msg, sizeof msg, "userdb: command 0x%02x is not supported", s->command);
        fail_cmd(s, UD_ER_UNKNOWN_COM, "08S01", msg);
        return;
    }
    }
}

/* ---- driver -------------------------------------------------------------------------- */

/* Handle every complete packet buffered while the session is READY (or in
 * the login states). */
static void sess_process(struct ud_sess *s)
{
    /* Replies produced synchronously (a dead server, a cached directory
     * entry, a pool that answers at once) call back here; the loop below
     * picks the next command up instead, so a pipelined client can't
     * deepen the stack. */
    if (s->processing || s->closed)
        return;
    s->processing = true;
    s->refs++;
    if (s->read_paused && s->state == US_READY) {
        s->read_paused = false;
        conn_resume_read(s->c);
    }
    sess_process_loop(s);
    /* A client may pipeline commands behind a slow one; past a bound its
     * input is left in the kernel until the session is ready again. */
    if (!s->closed && !s->read_paused && s->state != US_READY &&
        evbuffer_get_length(conn_in(s->c)) > (size_t)ud_cfg.max_packet + 65536) {
        s->read_paused = true;
        conn_pause_read(s->c);
    }
    s->processing = false;
    sess_unref(s);
}

static void sess_process_loop(struct ud_sess *s)
{
    struct evbuffer *in = conn_in(s->c);
    while (!s->closed && !conn_is_closing(s->c) &&
           (s->state == US_READY || s->state == US_HANDSHAKE || s->state == US_AUTH_SWITCH)) {
        size_t avail = evbuffer_get_length(in);
        uint8_t hdr[UD_HDR];
        if (avail < UD_HDR)
            return;
        uint32_t plen;
        uint8_t seq;
        evbuffer_copyout(in, hdr, UD_HDR);
        ud_pkt_header(hdr, UD_HDR, &plen, &seq);
        uint64_t max = s->state == US_READY ? ud_cfg.max_packet : 8192;
        if (plen >= UD_MAX_PAYLOAD || plen > max || (plen == 0 && s->state == US_READY)) {
            ud_n.protocol_errors++;
            ud_sess_send_error(s, (uint8_t)(seq + 1), plen ? UD_ER_NET_TOO_LARGE : UD_ER_UNKNOWN_COM, "08S01",
                               plen ? "Got a packet bigger than 'max_allowed_packet' bytes" : "Empty command packet");
            conn_close_after_write(s->c);
            return;
        }
        if (avail < UD_HDR + (size_t)plen)
            return;
        if (s->state != US_READY) {
            uint8_t *buf = malloc(plen ? plen : 1);
            if (!buf) {
                conn_close(s->c);
                return;
            }
            evbuffer_drain(in, UD_HDR);
            evbuffer_remove(in, buf, plen);
            int rc = s->state == US_HANDSHAKE ? handle_login(s, buf, plen, seq) : handle_auth_switch(s, buf, plen, seq);
            free(buf);
            if (rc < 0)
                return;
            continue;
        }
        if (seq != 0) {
            ud_n.protocol_errors++;
            ud_sess_send_error(s, (uint8_t)(seq + 1), UD_ER_UNKNOWN_COM, "08S01", "Got packets out of order");
            conn_close_after_write(s->c);
            return;
        }
        evbuffer_remove_buffer(in, s->cmd, UD_HDR + plen);
        command(s);
    }
}

static int sess_on_read(struct core_conn *c)
{
    struct ud_sess *s = c->data;
    sess_process(s);
    return 0;
}

void ud_sess_reply_done(struct ud_sess *s, struct ud_backend *b, bool error)
{
    log_cmd(s, !b ? "backend lost" : error ? "backend answered ERR" : "backend answered OK");
    conn_set_busy(s->c, false);
    s->state = US_READY;
    evbuffer_drain(s->cmd, evbuffer_get_length(s->cmd));
    if (b) {
        uint16_t st = b->resp.status;
        if (!error && s->q.pins && !s->state_pinned) {
            s->state_pinned = true;
            ud_n.pinned_sessions++;
        }
        if (!error && s->command == UD_COM_STMT_PREPARE)
            s->nstmts++;
        if (s->command == UD_COM_STMT_CLOSE && s->nstmts > 0)
            s->nstmts--;
        if (s->state_pinned || s->nstmts > 0)
            s->pin = PIN_SESSION;
        else
            s->pin = (st & UD_STATUS_IN_TRANS) ? PIN_TRANS : PIN_NONE;
        if (s->pin == PIN_NONE) {
            s->b = NULL;
            ud_pool_release(b);
        }
    } else {
        s->b = NULL;
        s->pin = PIN_NONE;
        s->nstmts = 0;
        s->state_pinned = false;
    }
    sess_process(s);
}

void ud_sess_backend_lost(struct ud_sess *s, struct ud_backend *b)
{
    (void)b;
    s->b = NULL;
    if (s->closed)
        return;
    conn_set_busy(s->c, false);
    if (s->state == US_BUSY && !b->relayed && s->pin == PIN_NONE) {
        ud_sess_send_error(s, 1, UD_ER_CONN_ERROR, "HY000", "userdb: lost connection to the backend during the query");
        local_done(s);
        sess_process(s);
        return;
    }
    /* Mid-reply, or a transaction/session state gone with it: the client
     * must see its connection end, as it would with the server itself. */
    s->pin = PIN_NONE;
    s->nstmts = 0;
    s->state_pinned = false;
    conn_close_after_write(s->c);
}

static void sess_on_drained(struct core_conn *c)
{
    struct ud_sess *s = c->data;
    if (s && s->b && s->b->paused)
        ud_backend_resume(s->b);
}

static void sess_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct ud_sess *s = c->data;
    if (!s)
        return;
    s->closed = true;
    ud_n.sessions--;
    if (s->prev_all)
        s->prev_all->next_all = s->next_all;
    else
        all_sessions = s->next_all;
    if (s->next_all)
        s->next_all->prev_all = s->prev_all;
    ud_pool_cancel(&s->w);
    if (s->b) {
        struct ud_backend *b = s->b;
        s->b = NULL;
        b->owner = NULL;
        /* A reply in flight, a transaction or session state: the connection
         * can't go back to the pool. */
        ud_backend_discard(b);
    }
    c->data = NULL;
    sess_unref(s);
}

static bool sess_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

static const struct conn_ops sess_ops = {
    .name = "userdb",
    .on_read = sess_on_read,
    .on_drained = sess_on_drained,
    .on_eof = sess_on_eof,
    .on_close = sess_on_close,
};

void ud_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct ud_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->cmd = evbuffer_new();
    s->autocommit = 1;
    s->refs = 1;
    struct core_conn *c = conn_new(loop, fd, sa, salen, &sess_ops, s);
    if (!c) {
        evbuffer_free(s->cmd);
        free(s);
        return;
    }
    s->c = c;
    s->conn_id = next_conn_id++;
    s->next_all = all_sessions;
    if (all_sessions)
        all_sessions->prev_all = s;
    all_sessions = s;
    ud_n.sessions++;
    ud_n.sessions_total++;
    if (RAND_bytes(s->salt, sizeof s->salt) != 1)
        for (size_t i = 0; i < sizeof s->salt; i++)
            s->salt[i] = (uint8_t)random();
    for (size_t i = 0; i < sizeof s->salt; i++) /* printable, no NUL, as servers send */
        s->salt[i] = (uint8_t)(33 + s->salt[i] % 94);
    uint8_t buf[256];
    size_t n = ud_enc_handshake(buf + UD_HDR, sizeof buf - UD_HDR, ud_server_version, s->conn_id, s->salt,
                                UD_OFFERED_CAPS, 45, UD_STATUS_AUTOCOMMIT);
    ud_put_header(buf, (uint32_t)n, 0);
    evbuffer_add(conn_out(c), buf, n + UD_HDR);
    conn_set_output_limit(c, 8u << 20);
    /* A client that connects and never logs in is closed after login_timeout. */
    conn_set_timeouts(c, (uint32_t)(ud_cfg.login_timeout > 0 ? ud_cfg.login_timeout * 1000 : 10000), 0);
}

static void logged_in(struct ud_sess *s)
{
    s->state = US_READY;
    conn_set_timeouts(s->c, UD_IDLE_MS(ud_cfg.idle_timeout > 0 ? (uint32_t)ud_cfg.idle_timeout * 1000 : 0), 0);
}
