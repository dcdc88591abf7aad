/* session: the c2s connection state machine — stream header, features,
 * SASL (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256), stream restart, resource
 * binding. One enum of states (enum dj_sess_state), one driver
 * (sess_stanza). Stanzas of a bound session go to cmd_xmpp.c.
 *
 * Memory: an idle authenticated session holds the core conn, this struct,
 * its small strings and a dj_xml without an expat parser (see proto_xml.h). */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/bufferevent_ssl.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "common/conn.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_SM "urn:xmpp:sm:3"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"

const char *dj_sess_state_names[] = { "stream", "auth",   "auth-wait", "scram",   "restart",
                                      "bind",   "active", "closed",    "detached" };

/* XEP-0198 resumption: what a session keeps so a new connection can take
 * it over — its id, and every stanza sent but not yet acked. */
struct dj_sm_resume {
    char id[33];
    struct evbuffer *queue; /* unacked stanzas, in order */
    uint32_t *lens;         /* their sizes; lens[head..n) are live */
    size_t n, head, cap;
    struct event *timer; /* while detached */
    bool clean_close;    /* the client ended the stream itself: nothing to resume */
};

static void resume_free(struct dj_sm_resume *r)
{
    if (!r)
        return;
    if (r->timer)
        event_free(r->timer);
    evbuffer_free(r->queue);
    free(r->lens);
    free(r);
}

static void detached_end(struct dj_sess *s);

/* Keep a copy of a stanza until the client acks it. Past max_output the
 * session stops being resumable (memory stays bounded). */
static void sm_keep(struct dj_sess *s, const void *xml, size_t len)
{
    struct dj_sm_resume *r = s->resume;
    if (r->n == r->cap) {
        if (r->head > 0) {
            memmove(r->lens, r->lens + r->head, (r->n - r->head) * sizeof *r->lens);
            r->n -= r->head;
            r->head = 0;
        }
        if (r->n == r->cap) {
            size_t nc = r->cap ? r->cap * 2 : 16;
            uint32_t *nl = realloc(r->lens, nc * sizeof *nl);
            if (!nl)
                goto drop;
            r->lens = nl;
            r->cap = nc;
        }
    }
    if (evbuffer_get_length(r->queue) + len > dj.cfg.max_output)
        goto drop;
    evbuffer_add(r->queue, xml, len);
    r->lens[r->n++] = (uint32_t)len;
    return;
drop:
    log_info("djabberd: a session's unacked stanzas passed max_output: no longer resumable");
    if (s->state == DJ_S_DETACHED) {
        detached_end(s);
        return;
    }
    resume_free(s->resume);
    s->resume = NULL;
}

/* The client has handled h stanzas: forget those from the queue. */
static void sm_ack(struct dj_sess *s, uint32_t h)
{
    uint32_t n = (uint32_t)(h - s->sm_acked);
    if (n > (uint32_t)(s->sm_out - s->sm_acked))
        n = (uint32_t)(s->sm_out - s->sm_acked); /* lenient, as before */
    s->sm_acked += n;
    struct dj_sm_resume *r = s->resume;
    for (uint32_t i = 0; r && i < n && r->head < r->n; i++)
        evbuffer_drain(r->queue, r->lens[r->head++]);
}

static int sess_on_stream(void *arg, const char *name, const char **attrs);
static int sess_on_stanza(void *arg, struct dj_stanza *st);
static const struct dj_xml_cbs sess_xml_cbs = { sess_on_stream, sess_on_stanza };

/* ---- life cycle ------------------------------------------------------------------ */

void dj_sess_hold(struct dj_sess *s) { s->refs++; }

void dj_sess_put(struct dj_sess *s)
{
    if (--s->refs > 0)
        return;
    dj_xml_free(s->xml);
    free(s->scram);
    free(s->node);
    free(s->resource);
    free(s->presence);
    dj_cmd_presence_drop(s);
    resume_free(s->resume);
    free(s);
}

bool dj_sess_alive(const struct dj_sess *s) { return s->c != NULL && s->state != DJ_S_CLOSED; }

static struct dj_xml_limits sess_limits(void)
{
    struct dj_xml_limits lim = { .max_stanza = (size_t)dj.cfg.max_stanza, .max_depth = 32, .max_attrs = 64 };
    return lim;
}

void dj_sess_accept(struct core_conn *c)
{
    struct dj_sess *s = calloc(1, sizeof *s);
    struct dj_xml_limits lim = sess_limits();
    if (s)
        s->xml = dj_xml_new(&lim, &sess_xml_cbs, s);
    if (!s || !s->xml) {
        free(s);
        conn_close(c);
        return;
    }
    s->c = c;
    s->refs = 1;
    c->data = s;
    dj.nsessions++;
    dj.n.sessions_total++;
    /* Until authenticated, the idle timeout is the auth deadline. */
    conn_set_timeouts(c, (uint32_t)dj.cfg.auth_timeout * 1000, 30000);
    conn_set_output_limit(c, 1u << 20);
}

/* ---- output ------------------------------------------------------------------------ */

/* A client that does not read what is sent to it: past max_output the
 * session stops taking stanzas, counts as unavailable (messages to its bare
 * JID go to other resources or offline storage) and closes once its output
 * drains or the write timeout passes. Memory stays bounded. */
static bool out_full(struct dj_sess *s)
{
    if (evbuffer_get_length(conn_out(s->c)) <= dj.cfg.max_output)
        return false;
    dj.n.slow_consumers++;
    log_info("djabberd: closing a session that does not read (over max_output)");
    s->flags &= (uint8_t)~DJ_F_AVAILABLE;
    conn_close_after_write(s->c);
    return true;
}

void dj_sess_send(struct dj_sess *s, const char *xml, size_t len)
{
    if (s->state == DJ_S_DETACHED && s->resume) {
        /* lost connection, resumable: the stanza waits for the resume */
        s->sm_out++;
        sm_keep(s, xml, len);
        return;
    }
    if (!dj_sess_alive(s) || conn_is_closing(s->c) || out_full(s))
        return;
    evbuffer_add(conn_out(s->c), xml, len);
    dj.n.stanzas_out++;
    s->sm_out++;
    if (s->resume)
        sm_keep(s, xml, len);
}

void dj_sess_send_buf(struct dj_sess *s, struct evbuffer *b)
{
    size_t len = evbuffer_get_length(b);
    dj_sess_send(s, (const char *)evbuffer_pullup(b, (ev_ssize_t)len), len);
    evbuffer_drain(b, len);
}

void dj_sess_send_node(struct dj_sess *s, const struct dj_node *n)
{
    if (!s->resume && (!dj_sess_alive(s) || conn_is_closing(s->c) || out_full(s)))
        return;
    if (!s->resume) {
        dj_xml_write(conn_out(s->c), n);
        dj.n.stanzas_out++;
        s->sm_out++;
        return;
    }
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, n);
    dj_sess_send_buf(s, b);
    evbuffer_free(b);
}

static void send_str(struct dj_sess *s, const char *str) { dj_sess_send(s, str, strlen(str)); }

static void send_header(struct dj_sess *s)
{
    unsigned char rnd[8];
    RAND_bytes(rnd, sizeof rnd);
    char id[17];
    for (int i = 0; i < 8; i++)
        snprintf(id + 2 * i, 3, "%02x", rnd[i]);
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out,
                        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                        "xmlns:stream='http://etherx.jabber.org/streams' id='%s' from='",
                        id);
    const char *host = dj.vhosts[s->vhost].name;
    dj_xml_escape(out, host, strlen(host));
    evbuffer_add_printf(out, "' version='1.0' xml:lang='en'>");
}

void dj_sess_stream_error(struct dj_sess *s, const char *condition, const char *text)
{
    if (!dj_sess_alive(s) || conn_is_closing(s->c))
        return;
    struct evbuffer *out = conn_out(s->c);
    if (s->state == DJ_S_STREAM || s->state == DJ_S_RESTART)
        evbuffer_add_printf(out, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                                 "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>");
    evbuffer_add_printf(out, "<stream:error><%s xmlns='" NS_STREAMS "'/>", condition);
    if (text) {
        evbuffer_add_printf(out, "<text xmlns='" NS_STREAMS "'>");
        dj_xml_escape(out, text, strlen(text));
        evbuffer_add_printf(out, "</text>");
    }
    evbuffer_add_printf(out, "</stream:error></stream:stream>");
    dj.n.stream_errors++;
    if (!strcmp(condition, "policy-violation"))
        dj.n.policy_violations++;
    conn_close_after_write(s->c);
}

const char *dj_sess_bare(const struct dj_sess *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s@%s", s->node ? s->node : "", dj.vhosts[s->vhost].name);
    return buf;
}

const char *dj_sess_jid(const struct dj_sess *s, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s@%s/%s", s->node ? s->node : "", dj.vhosts[s->vhost].name, s->resource ? s->resource : "");
    return buf;
}

/* ---- stream header ------------------------------------------------------------------ */

/* The tls-unique channel binding (RFC 5929) of a TLS stream: the first
 * Finished message of the handshake — the client's in a full handshake, the
 * server's in a resumed one (as OpenSSL-based clients compute it). 0 without
 * TLS. */
static size_t tls_unique(struct dj_sess *s, unsigned char *buf, size_t cap)
{
    if (!s->c || !conn_is_tls(s->c))
        return 0;
    SSL *ssl = conn_ssl(s->c);
    if (!ssl)
        return 0;
    size_t n = SSL_session_reused(ssl) ? SSL_get_finished(ssl, buf, cap) : SSL_get_peer_finished(ssl, buf, cap);
    return n <= cap ? n : 0;
}

static void send_features(struct dj_sess *s)
{
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<stream:features>");
    if (s->state == DJ_S_AUTH) {
        bool tls = conn_is_tls(s->c);
        if (!tls && dj.tls_ctx)
            evbuffer_add_printf(out, "<starttls xmlns='" NS_TLS "'>%s</starttls>",
                                dj.cfg.require_tls ? "<required/>" : "");
        if (tls || !dj.cfg.require_tls) {
            unsigned char cb[64];
            evbuffer_add_printf(out,
                                "<mechanisms xmlns='" NS_SASL "'>%s"
                                "<mechanism>SCRAM-SHA-256</mechanism><mechanism>SCRAM-SHA-1</mechanism>"
                                "<mechanism>PLAIN</mechanism></mechanisms>",
                                tls_unique(s, cb, sizeof cb) ? "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"
                                                               "<mechanism>SCRAM-SHA-1-PLUS</mechanism>"
                                                             : "");
            if (dj.cfg.inband_registration)
                evbuffer_add_printf(out, "<register xmlns='http://jabber.org/features/iq-register'/>");
        }
    } else {
        evbuffer_add_printf(out, "<bind xmlns='" NS_BIND "'/><session xmlns='" NS_SESSION "'><optional/></session>"
                                 "<ver xmlns='urn:xmpp:features:rosterver'/><sm xmlns='" NS_SM "'/>");
    }
    evbuffer_add_printf(out, "</stream:features>");
}

static int sess_on_stream(void *arg, const char *name, const char **attrs)
{
    struct dj_sess *s = arg;
    const char *to = NULL, *ns = NULL, *version = NULL;
    for (int i = 0; attrs[i]; i += 2) {
        if (!strcmp(attrs[i], "to"))
            to = attrs[i + 1];
        else if (!strcmp(attrs[i], "xmlns:stream"))
            ns = attrs[i + 1];
        else if (!strcmp(attrs[i], "version"))
            version = attrs[i + 1];
    }
    if (strcmp(name, "stream:stream") || !ns || strcmp(ns, "http://etherx.jabber.org/streams")) {
        dj_sess_stream_error(s, "invalid-namespace", NULL);
        return -1;
    }
    int vh = to ? dj_vhost_find(to) : -1;
    if (vh < 0) {
        dj_sess_stream_error(s, "host-unknown", "this server does not serve that domain");
        return -1;
    }
    if (s->state == DJ_S_RESTART && vh != s->vhost) {
        dj_sess_stream_error(s, "host-unknown", NULL);
        return -1;
    }
    if (!version || strncmp(version, "1.", 2)) {
        dj_sess_stream_error(s, "unsupported-version", "only XMPP 1.0 streams");
        return -1;
    }
    s->vhost = (uint16_t)vh;
    if (s->state == DJ_S_STREAM)
        s->state = DJ_S_AUTH;
    else if (s->state == DJ_S_RESTART)
        s->state = DJ_S_BIND;
    send_header(s);
    send_features(s);
    return 0;
}

/* ---- SASL ---------------------------------------------------------------------------- */

static void sasl_failure(struct dj_sess *s, const char *cond)
{
    char who[80];
    if (log_command_enabled()) /* -vv: never the SASL data itself */
        log_command(log_addr(&s->c->peer, who, sizeof who), "auth", 4, false, cond, strlen(cond));
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<failure xmlns='" NS_SASL "'><%s/></failure>", cond);
    free(s->scram);
    s->scram = NULL;
    s->state = DJ_S_AUTH;
    dj.n.auth_fail++;
}

static void sasl_success(struct dj_sess *s, const char *user, const char *final)
{
    char who[80];
    if (log_command_enabled())
        log_command(log_addr(&s->c->peer, who, sizeof who), "auth", 4, false, user, strlen(user));
    struct evbuffer *out = conn_out(s->c);
    if (final) {
        char b[128];
        dj_b64_encode((const unsigned char *) final, strlen(final), b, sizeof b);
        evbuffer_add_printf(out, "<success xmlns='" NS_SASL "'>%s</success>", b);
    } else
        evbuffer_add_printf(out, "<success xmlns='" NS_SASL "'/>");
    free(s->node);
    s->node = strdup(user);
    free(s->scram);
    s->scram = NULL;
    s->state = DJ_S_RESTART;
    /* a hook that answered later (db, hashing thread): nothing is being
     * parsed now, so the new stream starts here; inside a feed,
     * sess_on_read restarts the parser once the feed returns */
    if (!(s->flags & DJ_F_IN_FEED))
        dj_xml_restart(s->xml);
    dj.n.auth_ok++;
    /* authenticated: from now on only the idle timeout applies */
    conn_set_timeouts(s->c, (uint32_t)dj.cfg.idle_timeout * 1000, 60000);
}

/* Normalise a SASL user name to a JID node (ASCII lower-case). */
static int norm_user(const char *in, size_t len, char *out, size_t cap)
{
    if (len == 0 || len >= cap)
        return -1;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch <= ' ' || strchr("\"&'/:<>@", ch) || ch == 0x7f)
            return -1;
        out[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    out[len] = 0;
    return 0;
}

struct sasl_call {
    struct dj_hook_creds h;
    struct dj_sess *s;
    char user[256];
    char pw[1024];
    enum dj_sasl_mech mech;
    bool plain_fallback;
};

static void plain_creds_done(struct dj_hook_call *call);

static void plain_check_done(struct dj_hook_call *call)
{
    struct sasl_call *sc = (struct sasl_call *)call;
    struct dj_sess *s = sc->s;
    if (call->status == DJ_DECLINED && !sc->plain_fallback) {
        /* no plugin checks cleartext itself: derive from the stored SCRAM keys */
        sc->plain_fallback = true;
        dj_hook_run(DJ_HOOK_GET_CREDS, &sc->h.call, plain_creds_done);
        return;
    }
    if (dj_sess_alive(s) && s->state == DJ_S_AUTH_WAIT) {
        if (call->status == DJ_OK)
            sasl_success(s, sc->user, NULL);
        else
            sasl_failure(s, call->status == DJ_ERROR ? "temporary-auth-failure" : "not-authorized");
    }
    memset(sc->pw, 0, sizeof sc->pw);
    dj_sess_put(s);
    free(sc);
}

static void plain_hashed(void *arg, bool ok, const struct dj_creds *made)
{
    (void)made;
    struct sasl_call *sc = arg;
    sc->h.call.status = ok ? DJ_OK : DJ_REJECT;
    plain_check_done(&sc->h.call);
}

static void plain_creds_done(struct dj_hook_call *call)
{
    struct sasl_call *sc = (struct sasl_call *)call;
    if (call->status != DJ_OK) {
        call->status = DJ_REJECT;
        plain_check_done(call);
        return;
    }
    /* derive and compare on the hashing thread, not on the loop */
    if (dj_creds_async(&sc->h.creds, sc->pw, strlen(sc->pw), plain_hashed, sc) < 0) {
        call->status = DJ_ERROR;
        plain_check_done(call);
    }
}

static void scram_creds_done(struct dj_hook_call *call)
{
    struct sasl_call *sc = (struct sasl_call *)call;
    struct dj_sess *s = sc->s;
    if (dj_sess_alive(s) && s->state == DJ_S_AUTH_WAIT && s->scram) {
        if (call->status != DJ_OK) {
            sasl_failure(s, call->status == DJ_ERROR ? "temporary-auth-failure" : "not-authorized");
        } else if (dj_scram_server_first(s->scram, &sc->h.creds) < 0) {
            sasl_failure(s, "temporary-auth-failure");
        } else {
            /* the keys are needed again for client-final: keep them with the exchange */
            struct {
                struct dj_scram sc;
                struct dj_creds cr;
            } *both = realloc(s->scram, sizeof *both);
            if (!both) {
                sasl_failure(s, "temporary-auth-failure");
            } else {
                both->cr = sc->h.creds;
                s->scram = &both->sc;
                char b[400];
                dj_b64_encode((const unsigned char *)s->scram->server_first, strlen(s->scram->server_first), b,
                              sizeof b);
                struct evbuffer *out = conn_out(s->c);
                evbuffer_add_printf(out, "<challenge xmlns='" NS_SASL "'>%s</challenge>", b);
                s->state = DJ_S_SCRAM;
            }
        }
    }
    dj_sess_put(s);
    free(sc);
}

static const struct dj_creds *scram_creds(struct dj_sess *s)
{
    struct {
        struct dj_scram sc;
        struct dj_creds cr;
    } *both = (void *)s->scram;
    return &both->cr;
}

static void sasl_auth(struct dj_sess *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    enum dj_sasl_mech m = dj_sasl_mech_parse(dj_node_attr(n, "mechanism"));
    if (m == DJ_SASL_NONE) {
        sasl_failure(s, "invalid-mechanism");
        return;
    }
    size_t tl;
    const char *text = dj_node_text_of(st, n, &tl);
    unsigned char *raw = malloc(tl + 1);
    int rl = raw ? dj_b64_decode(text, tl, raw, tl + 1) : -1;
    if (rl < 0 || (tl == 1 && text[0] == '=')) {
        if (raw && tl == 1 && text[0] == '=')
            rl = 0;
        else {
            free(raw);
            sasl_failure(s, "incorrect-encoding");
            return;
        }
    }
    struct sasl_call *sc = calloc(1, sizeof *sc);
    if (!sc) {
        free(raw);
        sasl_failure(s, "temporary-auth-failure");
        return;
    }
    sc->s = s;
    sc->mech = m;
    s->mech = (uint8_t)m;
    if (m == DJ_SASL_PLAIN) {
        const char *zid, *cid, *pw;
        size_t zl, cl, pl;
        char zbuf[DJ_JID_MAX + 1], bare[DJ_JID_MAX + 1];
        if (dj_sasl_plain_parse((const char *)raw, (size_t)rl, &zid, &zl, &cid, &cl, &pw, &pl) < 0 ||
            norm_user(cid, cl, sc->user, sizeof sc->user) < 0 || pl >= sizeof sc->pw) {
            free(raw);
            free(sc);
            sasl_failure(s, rl == 0 ? "malformed-request" : "not-authorized");
            return;
        }
        if (zl) {
            /* an authzid must be the account itself */
            snprintf(zbuf, sizeof zbuf, "%.*s", (int)zl, zid);
            snprintf(bare, sizeof bare, "%s@%s", sc->user, dj.vhosts[s->vhost].name);
            if (strcasecmp(zbuf, bare)) {
                free(raw);
                free(sc);
                sasl_failure(s, "invalid-authzid");
                return;
            }
        }
        memcpy(sc->pw, pw, pl);
        sc->pw[pl] = 0;
        memset(raw, 0, (size_t)rl);
        free(raw);
        sc->h.vhost = s->vhost;
        sc->h.user = sc->user;
        sc->h.password = sc->pw;
        sc->h.password_len = pl;
        s->state = DJ_S_AUTH_WAIT;
        dj_sess_hold(s);
        dj_hook_run(DJ_HOOK_CHECK_PLAIN, &sc->h.call, plain_check_done);
        return;
    }
    free(s->scram);
    s->scram = calloc(1, sizeof *s->scram);
    const char *cond = "temporary-auth-failure";
    unsigned char cb[64];
    size_t cbl = tls_unique(s, cb, sizeof cb);
    if (dj_sasl_mech_plus(m) && !cbl) {
        free(raw);
        free(sc);
        sasl_failure(s, "invalid-mechanism"); /* -PLUS is offered over TLS only */
        return;
    }
    if (!s->scram ||
        dj_scram_client_first(s->scram, m, cbl ? cb : NULL, cbl, (const char *)raw, (size_t)rl, &cond) < 0 ||
        norm_user(s->scram->user, strlen(s->scram->user), sc->user, sizeof sc->user) < 0) {
        free(raw);
        free(sc);
        sasl_failure(s, s->scram ? cond : "temporary-auth-failure");
        return;
    }
    free(raw);
    sc->h.vhost = s->vhost;
    sc->h.user = sc->user;
    s->state = DJ_S_AUTH_WAIT;
    dj_sess_hold(s);
    dj_hook_run(DJ_HOOK_GET_CREDS, &sc->h.call, scram_creds_done);
}

static void sasl_response(struct dj_sess *s, struct dj_stanza *st)
{
    size_t tl;
    const char *text = dj_node_text_of(st, st->root, &tl);
    unsigned char raw[1024];
    int rl = dj_b64_decode(text, tl, raw, sizeof raw - 1);
    if (rl < 0) {
        sasl_failure(s, "incorrect-encoding");
        return;
    }
    char final[128];
    const char *cond;
    if (dj_scram_client_final(s->scram, scram_creds(s), (const char *)raw, (size_t)rl, final, sizeof final, &cond) <
        0) {
        sasl_failure(s, cond);
        return;
    }
    char user[256];
    snprintf(user, sizeof user, "%s", s->scram->user);
    for (char *p = user; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p += 32;
    sasl_success(s, user, final);
}

/* ---- binding --------------------------------------------------------------------------- */

static void iq_error(struct dj_sess *s, const char *id, const char *type, const char *cond)
{
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<iq type='error' id='");
    dj_xml_escape(out, id ? id : "", id ? strlen(id) : 0);
    evbuffer_add_printf(out, "'><error type='%s'><%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>", type,
                        cond);
}

static bool valid_resource(const char *r, size_t len)
{
    if (len == 0 || len > DJ_JID_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f)
            return false;
    return true;
}

static void bind_resource(struct dj_sess *s, struct dj_stanza *st, struct dj_node *bind)
{
    const char *id = dj_node_attr(st->root, "id");
    size_t rl = 0;
    struct dj_node *rn = dj_node_child(bind, "resource", NULL);
    const char *res = rn ? dj_node_text_of(st, rn, &rl) : NULL;
    char gen[40];
    if (!res || rl == 0) {
        unsigned char rnd[9];
        RAND_bytes(rnd, sizeof rnd);
        dj_b64_encode(rnd, sizeof rnd, gen, sizeof gen);
        for (char *p = gen; *p; p++)
            if (*p == '/' || *p == '+')
                *p = 'x';
        res = gen;
        rl = strlen(gen);
    } else if (!valid_resource(res, rl)) {
        iq_error(s, id, "modify", "bad-request");
        return;
    }
    char bare[2 * DJ_JID_MAX + 2];
    dj_sess_bare(s, bare, sizeof bare);
    struct dj_user *u = dj_user_get(bare, true);
    if (!u) {
        iq_error(s, id, "wait", "resource-constraint");
        return;
    }
    int count = 0;
    struct dj_sess *old = NULL;
    for (struct dj_sess *o = u->sessions; o; o = o->next_res) {
        count++;
        if (o->resource && strlen(o->resource) == rl && !memcmp(o->resource, res, rl))
            old = o;
    }
    if (!old && count >= dj.cfg.max_resources) {
        iq_error(s, id, "cancel", "resource-constraint");
        dj_user_maybe_free(u);
        return;
    }
    if (old) {
        /* The new session wins (Prosody's default): the old one gets a conflict. */
        u->pending++; /* u must outlive the old session's departure */
        if (old->state == DJ_S_DETACHED)
            detached_end(old);
        else {
            dj_sess_stream_error(old, "conflict", "replaced by a new connection");
            dj_cmd_session_gone(old);
        }
        u->pending--;
    }
    s->resource = strndup(res, rl);
    s->user = u;
    s->next_res = u->sessions;
    u->sessions = s;
    s->state = DJ_S_ACTIVE;
    dj.nbound++;
    dj.per_vhost[s->vhost]++;
    char full[3 * DJ_JID_MAX + 3];
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<iq type='result' id='");
    dj_xml_escape(out, id ? id : "", id ? strlen(id) : 0);
    evbuffer_add_printf(out, "'><bind xmlns='" NS_BIND "'><jid>");
    dj_sess_jid(s, full, sizeof full);
    dj_xml_escape(out, full, strlen(full));
    evbuffer_add_printf(out, "</jid></bind></iq>");
    dj_cluster_announce(s, false);
    /* warm the roster cache so presence broadcast needs no extra round trip */
    dj_roster_with(bare, NULL, NULL);
}

/* ---- the driver --------------------------------------------------------------------------- */

void dj_register_iq(struct dj_sess *s, struct dj_stanza *st); /* cmd_xmpp.c */

static bool is_sasl(struct dj_node *n, const char *local)
{
    const char *ns = dj_node_ns(n);
    return !strcmp(dj_node_local(n), local) && ns && !strcmp(ns, NS_SASL);
}

static bool is_sm(struct dj_node *n)
{
    const char *ns = dj_node_ns(n);
    return ns && !strcmp(ns, NS_SM);
}

/* XEP-0198 stream management without resumption: enable, ack requests and
 * acks. Counters are mod 2^32 as the XEP says. Returns non-zero to stop. */
static int sm_element(struct dj_sess *s, struct dj_node *n)
{
    struct evbuffer *out = conn_out(s->c);
    const char *local = dj_node_local(n);
    if (!strcmp(local, "enable")) {
        if (s->flags & DJ_F_SM) {
            evbuffer_add_printf(out, "<failed xmlns='" NS_SM "'><unexpected-request "
                                     "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
            return 0;
        }
        s->flags |= DJ_F_SM;
        s->sm_in = s->sm_out = s->sm_acked = 0;
        dj.n.sm_enabled++;
        const char *want = dj_node_attr(n, "resume");
        if (want && (!strcmp(want, "true") || !strcmp(want, "1")) && dj.cfg.sm_resume_timeout > 0 &&
            (s->resume = calloc(1, sizeof *s->resume)) != NULL) {
            s->resume->queue = evbuffer_new();
            unsigned char rnd[16];
            RAND_bytes(rnd, sizeof rnd);
            for (int i = 0; i < 16; i++)
                snprintf(s->resume->id + 2 * i, 3, "%02x", rnd[i]);
            evbuffer_add_printf(out, "<enabled xmlns='" NS_SM "' id='%s' resume='true' max='%d'/>", s->resume->id,
                                dj.cfg.sm_resume_timeout);
        } else
            evbuffer_add_printf(out, "<enabled xmlns='" NS_SM "'/>");
        return 0;
    }
    if (!strcmp(local, "resume")) {
        evbuffer_add_printf(out, "<failed xmlns='" NS_SM "'><unexpected-request "
                                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
        return 0;
    }
    if (!(s->flags & DJ_F_SM)) {
        dj_sess_stream_error(s, "unsupported-stanza-type", "stream management is not enabled");
        return 1;
    }
    if (!strcmp(local, "r")) {
        evbuffer_add_printf(out, "<a xmlns='" NS_SM "' h='%u'/>", s->sm_in);
        return 0;
    }
    if (!strcmp(local, "a")) {
        const char *h = dj_node_attr(n, "h");
        char *end;
        unsigned long v = h ? strtoul(h, &end, 10) : 0;
        if (!h || *end || v > UINT32_MAX) {
            dj_sess_stream_error(s, "undefined-condition", "bad h in stream management ack");
            return 1;
        }
        sm_ack(s, (uint32_t)v); /* an h beyond what we counted is taken as "everything" (lenient) */
        return 0;
    }
    dj_sess_stream_error(s, "unsupported-stanza-type", NULL);
    return 1;
}

/* XEP-0198 resume: this freshly authenticated connection takes over a
 * detached session of the same account: its resource, presence, counters and
 * unacked stanzas, which are sent again. The old record is dropped without
 * any unavailable presence — to everyone else nothing happened. */
static void sm_resume(struct dj_sess *s, struct dj_node *n)
{
    struct evbuffer *out = conn_out(s->c);
    const char *previd = dj_node_attr(n, "previd"), *hs = dj_node_attr(n, "h");
    char bare[2 * DJ_JID_MAX + 2];
    struct dj_user *u = dj_user_get(dj_sess_bare(s, bare, sizeof bare), false);
    struct dj_sess *o = NULL, **pp = NULL;
    for (struct dj_sess **q = u ? &u->sessions : NULL; q && *q; q = &(*q)->next_res)
        if ((*q)->state == DJ_S_DETACHED && (*q)->resume && previd && !strcmp((*q)->resume->id, previd)) {
            o = *q;
            pp = q;
            break;
        }
    char *end = NULL;
    unsigned long h = hs ? strtoul(hs, &end, 10) : 0;
    if (!o || !hs || *end || h > UINT32_MAX) {
        evbuffer_add_printf(out, "<failed xmlns='" NS_SM "'><item-not-found "
                                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
        return;
    }
    sm_ack(o, (uint32_t)h);
    event_free(o->resume->timer);
    o->resume->timer = NULL;
    /* the new connection becomes the session */
    s->resource = o->resource;
    o->resource = NULL;
    s->presence = o->presence;
    o->presence = NULL;
    s->flags = (uint8_t)(o->flags & (DJ_F_AVAILABLE | DJ_F_INTERESTED | DJ_F_SM));
    s->prio = o->prio;
    s->sm_in = o->sm_in;
    s->sm_out = o->sm_out;
    s->sm_acked = o->sm_acked;
    s->resume = o->resume;
    o->resume = NULL;
    s->user = u;
    s->next_res = o->next_res;
    *pp = s;
    o->user = NULL;
    o->next_res = NULL;
    o->state = DJ_S_CLOSED;
    s->state = DJ_S_ACTIVE;
    dj.n.sm_resumed++;
    evbuffer_add_printf(out, "<resumed xmlns='" NS_SM "' previd='%s' h='%u'/>", s->resume->id, s->sm_in);
    /* everything the client has not acked, again (it stays queued until acked) */
    size_t ql = evbuffer_get_length(s->resume->queue);
    evbuffer_add(out, evbuffer_pullup(s->resume->queue, (ev_ssize_t)ql), ql);
    dj_sess_put(o); /* the reference the detached state held */
}

/* A detached session's time is up (or it is replaced): it ends for real. */
static void detached_end(struct dj_sess *s)
{
    if (s->resume && s->resume->timer) {
        event_free(s->resume->timer);
        s->resume->timer = NULL;
    }
    resume_free(s->resume);
    s->resume = NULL;
    s->state = DJ_S_CLOSED;
    dj.n.sm_expired++;
    dj_cmd_session_gone(s);
    dj_sess_put(s);
}

static void detached_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    detached_end(arg);
}

void dj_sess_kick(struct dj_sess *s, const char *text)
{
    if (s->state == DJ_S_DETACHED)
        detached_end(s);
    else
        dj_sess_stream_error(s, "policy-violation", text);
}

void dj_sess_expire_detached(void)
{
    for (size_t b = 0; b < dj.nbuckets; b++)
        for (struct dj_user *u = dj.users[b]; u; u = u->hnext) {
            u->pending++;
            for (struct dj_sess *s = u->sessions, *nx; s; s = nx) {
                nx = s->next_res;
                if (s->state == DJ_S_DETACHED)
                    detached_end(s);
            }
            u->pending--;
        }
}

/* One stanza in whatever state the stream is. Returns non-zero to stop the
 * current feed (stream restart or close). */
static int sess_on_stanza(void *arg, struct dj_stanza *st)
{
    struct dj_sess *s = arg;
    struct dj_node *n = st->root;
    int stop = 0;
    dj.n.stanzas_in++;
    if (s->c)
        s->c->requests++;
    switch ((enum dj_sess_state)s->state) {
    case DJ_S_AUTH:
        if (!strcmp(dj_node_local(n), "starttls")) {
            const char *ns = dj_node_ns(n);
            if (!ns || strcmp(ns, NS_TLS) || !dj.tls_ctx || conn_is_tls(s->c)) {
                evbuffer_add_printf(conn_out(s->c), "<failure xmlns='" NS_TLS "'/></stream:stream>");
                conn_close_after_write(s->c);
            } else {
                /* queued before the switch, so it goes out in plain text;
                 * sess_on_read switches right after this stanza's last byte */
                evbuffer_add_printf(conn_out(s->c), "<proceed xmlns='" NS_TLS "'/>");
                s->flags |= DJ_F_STARTTLS;
                dj.n.starttls++;
            }
            stop = 1;
        } else if (dj.cfg.require_tls && !conn_is_tls(s->c)) {
            if (is_sasl(n, "auth"))
                sasl_failure(s, "encryption-required");
            else {
                dj_sess_stream_error(s, "policy-violation", "use STARTTLS first");
                stop = 1;
            }
        } else if (is_sasl(n, "auth")) {
            sasl_auth(s, st);
            stop = s->state == DJ_S_RESTART;
        } else if (!strcmp(n->name, "iq") && dj.cfg.inband_registration &&
                   dj_node_child(n, "query", "jabber:iq:register")) {
            dj_register_iq(s, st);
            st = NULL;
        } else {
            dj_sess_stream_error(s, "not-authorized", NULL);
            stop = 1;
        }
        break;
    case DJ_S_SCRAM:
        if (is_sasl(n, "response"))
            sasl_response(s, st);
        else if (is_sasl(n, "abort"))
            sasl_failure(s, "aborted");
        else {
            dj_sess_stream_error(s, "not-authorized", NULL);
            stop = 1;
        }
        stop = stop || s->state == DJ_S_RESTART;
        break;
    case DJ_S_AUTH_WAIT:
        /* a pipelined stanza while a hook decides: RFC 6120 forbids it */
        dj_sess_stream_error(s, "not-authorized", "wait for the SASL outcome");
        stop = 1;
        break;
    case DJ_S_BIND: {
        if (is_sm(n) && !strcmp(dj_node_local(n), "resume")) {
            sm_resume(s, n);
            break;
        }
        if (is_sm(n)) {
            /* XEP-0198: enable only after binding */
            evbuffer_add_printf(conn_out(s->c), "<failed xmlns='" NS_SM "'><unexpected-request "
                                                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
            break;
        }
        struct dj_node *bind = !strcmp(n->name, "iq") ? dj_node_child(n, "bind", NS_BIND) : NULL;
        const char *type = dj_node_attr(n, "type");
        if (bind && type && !strcmp(type, "set"))
            bind_resource(s, st, bind);
        else if (!strcmp(n->name, "iq"))
            iq_error(s, dj_node_attr(n, "id"), "auth", "not-authorized");
        else {
            dj_sess_stream_error(s, "not-authorized", "bind a resource first");
            stop = 1;
        }
        break;
    }
    case DJ_S_ACTIVE:
        if (is_sm(n)) {
            stop = sm_element(s, n);
            break;
        }
        if (s->flags & DJ_F_SM)
            s->sm_in++; /* a stanza handled (XEP-0198 counts every one) */
        if (!strcmp(n->name, "iq") && dj_node_child(n, "session", NS_SESSION)) {
            struct evbuffer *b = evbuffer_new();
            const char *id = dj_node_attr(n, "id");
            evbuffer_add_printf(b, "<iq type='result' id='");
            dj_xml_escape(b, id ? id : "", id ? strlen(id) : 0);
            evbuffer_add_printf(b, "'/>");
            dj_sess_send_buf(s, b); /* a stanza: counted for XEP-0198 */
            evbuffer_free(b);
            break;
        }
        dj_cmd_stanza(s, st);
        st = NULL;
        break;
    default: stop = 1; break;
    }
    dj_stanza_free(st);
    if (!dj_sess_alive(s) || conn_is_closing(s->c))
        stop = 1;
    return stop;
}

static int sess_on_read(struct core_conn *c)
{
    struct dj_sess *s = c->data;
    struct evbuffer *in = conn_in(c);
    size_t avail = evbuffer_get_length(in);
    if (s->state < DJ_S_BIND) {
        s->preauth += (uint32_t)(avail > UINT32_MAX ? UINT32_MAX : avail);
        double age = stats_wall_time() - c->created;
        if (s->preauth > dj.cfg.preauth_bytes || age > dj.cfg.auth_timeout) {
            evbuffer_drain(in, avail);
            dj_sess_stream_error(s, "policy-violation",
                                 s->preauth > dj.cfg.preauth_bytes ? "too many bytes before authentication"
                                                                   : "authentication took too long");
            return 0;
        }
    }
    dj_sess_hold(s);
    s->flags |= DJ_F_IN_FEED;
    struct evbuffer_iovec v[8];
    while (evbuffer_get_length(in) > 0 && dj_sess_alive(s) && !conn_is_closing(c)) {
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        if (nv > 8)
            nv = 8;
        size_t used = 0;
        bool restart = false;
        enum dj_xml_error e = DJ_XML_OK;
        for (int i = 0; i < nv; i++) {
            enum dj_sess_state before = (enum dj_sess_state)s->state;
            e = dj_xml_feed(s->xml, v[i].iov_base, v[i].iov_len);
            if (s->flags & DJ_F_STARTTLS) {
                /* STARTTLS: consume exactly through </starttls>; whatever
                 * follows is the client's first TLS bytes (plain text a
                 * client pipelined here never reaches the XML parser) */
                s->flags &= (uint8_t)~DJ_F_STARTTLS;
                evbuffer_drain(in, used + dj_xml_feed_used(s->xml));
                dj_xml_restart(s->xml);
                s->state = DJ_S_STREAM;
                if (conn_start_tls(c, dj.tls_ctx, true, NULL) < 0)
                    conn_close(c);
                s->flags &= (uint8_t)~DJ_F_IN_FEED;
                dj_sess_put(s);
                return 0;
            }
            used += v[i].iov_len;
            if (e != DJ_XML_OK)
                break;
            if (!dj_sess_alive(s) || conn_is_closing(c))
                break;
            if (s->state == DJ_S_RESTART && before != DJ_S_RESTART) {
                /* SASL success: anything after the stanza belonged to the old stream */
                restart = true;
                break;
            }
        }
        evbuffer_drain(in, used);
        if (restart) {
            dj_xml_restart(s->xml);
            evbuffer_drain(in, evbuffer_get_length(in));
            break;
        }
        if (e == DJ_XML_CLOSED) {
            if (s->resume)
                s->resume->clean_close = true;
            if (dj_sess_alive(s) && !conn_is_closing(c)) {
                send_str(s, "</stream:stream>");
                conn_close_after_write(c);
            }
            break;
        }
        if (e != DJ_XML_OK) {
            dj_sess_stream_error(s, dj_xml_error_condition(e), NULL);
            break;
        }
    }
    s->flags &= (uint8_t)~DJ_F_IN_FEED;
    if (dj_sess_alive(s) && s->state >= DJ_S_BIND)
        dj_xml_release(s->xml);
    dj_sess_put(s);
    return 0;
}

static void sess_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct dj_sess *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    if (s->resume && s->state == DJ_S_ACTIVE && !s->resume->clean_close && !loop_stopping() && s->user) {
        /* XEP-0198: keep the session (still available to others) for a
         * resume; stanzas for it queue up meanwhile */
        s->resume->timer = evtimer_new(c->loop->base, detached_timeout, s);
        if (s->resume->timer) {
            struct timeval tv = { dj.cfg.sm_resume_timeout, 0 };
            evtimer_add(s->resume->timer, &tv);
            s->c = NULL;
            s->state = DJ_S_DETACHED;
            dj.nsessions--;
            return; /* the reference stays with the detached state */
        }
    }
    dj_cmd_session_gone(s);
    s->c = NULL;
    s->state = DJ_S_CLOSED;
    dj.nsessions--;
    dj_sess_put(s);
}

static bool sess_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

static const struct conn_ops dj_c2s_ops = {
    .name = "xmpp-c2s",
    .on_read = sess_on_read,
    .on_eof = sess_on_eof,
    .on_close = sess_on_close,
};

const struct conn_ops *dj_sess_conn_ops(void) { return &dj_c2s_ops; }
