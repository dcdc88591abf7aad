/* s2s: server-to-server streams (RFC 6120, jabber:server) authenticated by
 * Server Dialback (XEP-0220), in plain TCP.
 *
 * Outgoing: one stream per (our domain, their domain), opened on the first
 * stanza for that domain; stanzas wait in a bounded queue until the remote
 * server says our key is valid. The address is a configured `s2s_route`,
 * else the domain itself on s2s_default_port (resolved without blocking by
 * the core's evdns; no SRV lookup).
 * Incoming: we answer db:verify for keys we made, and check a peer's
 * db:result by sending db:verify to its authoritative server over our
 * outgoing stream to it. Stanzas on an incoming stream are accepted only
 * from the domain it authenticated.
 *
 * Keys: HMAC-SHA256(SHA256(secret), receiving " " originating " " stream-id)
 * in hex (XEP-0185). */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/conn.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/tls.h"

#define NS_STREAMS "urn:ietf:params:xml:ns:xmpp-streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define DJ_S2S_QUEUE_MAX (256 * 1024)
#define DJ_S2S_OUT_MAX (16u << 20)

enum s2s_state { S2S_CONNECTING = 0, S2S_HEADER, S2S_OPEN, S2S_AUTHED, S2S_CLOSED };

struct dj_s2s {
    struct core_conn *c;
    struct dj_xml *xml;
    bool outgoing;
    bool result_sent;
    bool switch_tls; /* <proceed/> seen or sent: TLS starts right after this element */
    uint8_t state;
    char *local, *remote; /* remote: on incoming, the domain it authenticated (or asked for) */
    char id[40];
    struct evbuffer *ctl;   /* db:verify requests waiting for the stream to open */
    struct evbuffer *queue; /* stanzas waiting for authentication */
    struct dj_s2s *next;
};

static struct dj_s2s *streams;
static unsigned char secret_key[32];
static void *client_ctx; /* TLS towards peers (no verification: dialback authenticates) */

int dj_s2s_tls_init(char *err, size_t errlen)
{
    client_ctx = tls_client_ctx_new(NULL, false, NULL, NULL, err, errlen);
    return client_ctx ? 0 : -1;
}

void dj_s2s_tls_free(void)
{
    if (client_ctx)
        tls_ctx_free(client_ctx);
    client_ctx = NULL;
}

struct dj_s2s_counters dj_s2s_n;

/* ---- keys ------------------------------------------------------------------------- */

void dj_s2s_set_secret(const char *secret)
{
    if (secret && *secret) {
        unsigned int l;
        EVP_Digest(secret, strlen(secret), secret_key, &l, EVP_sha256(), NULL);
    } else
        RAND_bytes(secret_key, sizeof secret_key);
}

static void dialback_key(const char *receiving, const char *originating, const char *id, char out[65])
{
    char msg[3 * DJ_JID_MAX + 100];
    int n = snprintf(msg, sizeof msg, "%s %s %s", receiving, originating, id);
    unsigned char mac[32];
    unsigned int ml;
    HMAC(EVP_sha256(), secret_key, sizeof secret_key, (unsigned char *)msg, (size_t)(n < 0 ? 0 : n), mac, &ml);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[mac[i] >> 4];
        out[2 * i + 1] = hx[mac[i] & 15];
    }
    out[64] = 0;
}

/* ---- bookkeeping ---------------------------------------------------------------------- */

static void s2s_unlink(struct dj_s2s *s)
{
    for (struct dj_s2s **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

static void s2s_free(struct dj_s2s *s)
{
    s2s_unlink(s);
    dj_xml_free(s->xml);
    if (s->ctl)
        evbuffer_free(s->ctl);
    if (s->queue)
        evbuffer_free(s->queue);
    free(s->local);
    free(s->remote);
    free(s);
}

static void out_attr(struct evbuffer *out, const char *name, const char *v)
{
    evbuffer_add_printf(out, " %s='", name);
    dj_xml_escape(out, v, strlen(v));
    evbuffer_add(out, "'", 1);
}

static void s2s_error(struct dj_s2s *s, const char *cond)
{
    if (!s->c || conn_is_closing(s->c))
        return;
    evbuffer_add_printf(conn_out(s->c), "<stream:error><%s xmlns='" NS_STREAMS "'/></stream:error></stream:stream>",
                        cond);
    conn_close_after_write(s->c);
}

static void header(struct dj_s2s *s, const char *from, const char *to, const char *id)
{
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                             "xmlns='jabber:server' xmlns:db='jabber:server:dialback'");
    if (from)
        out_attr(out, "from", from);
    if (to)
        out_attr(out, "to", to);
    if (id)
        out_attr(out, "id", id);
    evbuffer_add_printf(out, " version='1.0'>");
}

/* ---- stanzas that came in ------------------------------------------------------------------ */

static struct dj_s2s *find_out(const char *local, const char *remote)
{
    for (struct dj_s2s *s = streams; s; s = s->next)
        if (s->outgoing && s->state != S2S_CLOSED && !strcmp(s->local, local) && !strcmp(s->remote, remote))
            return s;
    return NULL;
}

static struct dj_s2s *out_open(const char *local, const char *remote);

static bool is_dialback(struct dj_node *n, const char *local)
{
    if (strcmp(dj_node_local(n), local))
        return false;
    if (!strncmp(n->name, "db:", 3))
        return true;
    const char *ns = dj_node_ns(n);
    return ns && !strcmp(ns, "jabber:server:dialback");
}

static void domain_of(const char *jid, char *out, size_t cap)
{
    struct dj_jid j;
    if (dj_jid_parse(jid, &j) < 0)
        out[0] = 0;
    else
        snprintf(out, cap, "%s", j.domain);
}

/* A stanza from an authenticated peer to one of our users. */
static void inbound_stanza(struct dj_s2s *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    const char *from = dj_node_attr(n, "from"), *to = dj_node_attr(n, "to");
    char fd[DJ_JID_MAX + 1], td[DJ_JID_MAX + 1];
    if (!from || !to) {
        dj_stanza_free(st);
        return;
    }
    domain_of(from, fd, sizeof fd);
    domain_of(to, td, sizeof td);
    if (strcmp(fd, s->remote) || strcmp(td, s->local)) {
        s2s_error(s, strcmp(fd, s->remote) ? "invalid-from" : "host-unknown");
        dj_stanza_free(st);
        return;
    }
    dj_s2s_n.stanzas_in++;
    struct dj_jid fj, tj;
    dj_jid_parse(from, &fj);
    dj_jid_parse(to, &tj);
    char fbare[2 * DJ_JID_MAX + 2], tbare[2 * DJ_JID_MAX + 2];
    dj_jid_bare(&fj, fbare, sizeof fbare);
    dj_jid_bare(&tj, tbare, sizeof tbare);
    const char *type = dj_node_attr(n, "type");
    if (!strcmp(n->name, "presence") && type &&
        (!strcmp(type, "subscribe") || !strcmp(type, "subscribed") || !strcmp(type, "unsubscribe") ||
         !strcmp(type, "unsubscribed"))) {
        if (tj.node[0])
            dj_roster_subscription_in(st, type, tbare, fbare);
        dj_stanza_free(st);
        return;
    }
    if (!strcmp(n->name, "presence") && type && !strcmp(type, "probe")) {
        dj_presence_probe(tbare, fbare);
        dj_stanza_free(st);
        return;
    }
    if (!strcmp(n->name, "iq") && !tj.node[0]) {
        /* to our domain itself: ping answers, the rest is unavailable */
        const char *id = dj_node_attr(n, "id");
        if (type && (!strcmp(type, "get") || !strcmp(type, "set"))) {
            struct evbuffer *b = evbuffer_new();
            bool ping = dj_node_child(n, "ping", "urn:xmpp:ping") != NULL;
            evbuffer_add_printf(b, "<iq type='%s'", ping ? "result" : "error");
            out_attr(b, "from", to);
            out_attr(b, "to", from);
            if (id)
                out_attr(b, "id", id);
            if (ping)
                evbuffer_add_printf(b, "/>");
            else
                evbuffer_add_printf(b, "><error type='cancel'><service-unavailable "
                                       "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>");
            dj_s2s_send_buf(s->local, s->remote, b);
            evbuffer_free(b);
        }
        dj_stanza_free(st);
        return;
    }
    char *t = strdup(to);
    dj_route(st, t);
    free(t);
}

/* The peer (originating server) asks us to accept its key: ask its
 * authoritative server over our outgoing stream to it. */
static void got_result(struct dj_s2s *s, struct dj_node *n, struct dj_stanza *st)
{
    const char *from = dj_node_attr(n, "from"), *to = dj_node_attr(n, "to");
    if (!from || !to || dj_vhost_find(to) < 0) {
        s2s_error(s, "host-unknown");
        return;
    }
    if (s->remote && strcmp(s->remote, from)) {
        /* one peer domain per incoming stream here (no multiplexing) */
        s2s_error(s, "policy-violation");
        return;
    }
    free(s->remote);
    s->remote = strdup(from);
    free(s->local);
    s->local = strdup(to);
    size_t kl;
    const char *key = dj_node_text_of(st, n, &kl);
    struct dj_s2s *o = find_out(to, from);
    if (!o)
        o = out_open(to, from);
    if (!o) {
        evbuffer_add_printf(conn_out(s->c), "<db:result type='invalid'");
        out_attr(conn_out(s->c), "from", to);
        out_attr(conn_out(s->c), "to", from);
        evbuffer_add_printf(conn_out(s->c), "/>");
        return;
    }
    struct evbuffer *b = o->state >= S2S_OPEN ? conn_out(o->c) : o->ctl;
    evbuffer_add_printf(b, "<db:verify");
    out_attr(b, "from", to);
    out_attr(b, "to", from);
    out_attr(b, "id", s->id);
    evbuffer_add(b, ">", 1);
    dj_xml_escape(b, key, kl);
    evbuffer_add_printf(b, "</db:verify>");
}

/* A peer checks a key we made (we are the authoritative server). */
static void got_verify_request(struct dj_s2s *s, struct dj_node *n, struct dj_stanza *st)
{
    const char *from = dj_node_attr(n, "from"), *to = dj_node_attr(n, "to"), *id = dj_node_attr(n, "id");
    if (!from || !to || !id) {
        s2s_error(s, "invalid-xml");
        return;
    }
    size_t kl;
    const char *key = dj_node_text_of(st, n, &kl);
    char want[65];
    dialback_key(from, to, id, want);
    bool ok = dj_vhost_find(to) >= 0 && kl == 64 && CRYPTO_memcmp(key, want, 64) == 0;
    struct evbuffer *out = conn_out(s->c);
    evbuffer_add_printf(out, "<db:verify");
    out_attr(out, "from", to);
    out_attr(out, "to", from);
    out_attr(out, "id", id);
    evbuffer_add_printf(out, " type='%s'/>", ok ? "valid" : "invalid");
    dj_s2s_n.verify_answered++;
}

/* The answer to a db:verify we sent for one of our incoming streams. */
static void got_verify_answer(struct dj_node *n)
{
    const char *from = dj_node_attr(n, "from"), *to = dj_node_attr(n, "to"), *id = dj_node_attr(n, "id");
    const char *type = dj_node_attr(n, "type");
    if (!from || !to || !id)
        return;
    for (struct dj_s2s *in = streams; in; in = in->next) {
        if (in->outgoing || in->state == S2S_CLOSED || strcmp(in->id, id) || !in->remote || strcmp(in->remote, from))
            continue;
        bool ok = type && !strcmp(type, "valid");
        struct evbuffer *out = conn_out(in->c);
        evbuffer_add_printf(out, "<db:result");
        out_attr(out, "from", to);
        out_attr(out, "to", from);
        evbuffer_add_printf(out, " type='%s'/>", ok ? "valid" : "invalid");
        if (ok) {
            in->state = S2S_AUTHED;
            dj_s2s_n.incoming_authed++;
            log_info("djabberd: s2s from %s authenticated by dialback", from);
        } else
            conn_close_after_write(in->c);
        return;
    }
}

static void bounce_queue(struct dj_s2s *s);

static int s2s_on_stanza(void *arg, struct dj_stanza *st)
{
    struct dj_s2s *s = arg;
    struct dj_node *n = st->root;
    if (s->outgoing) {
        if (!strcmp(n->name, "stream:features") && !conn_is_tls(s->c) && client_ctx &&
            dj_node_child(n, "starttls", NS_TLS)) {
            /* encrypt first, then dialback inside TLS */
            evbuffer_add_printf(conn_out(s->c), "<starttls xmlns='" NS_TLS "'/>");
        } else if (!strcmp(dj_node_local(n), "proceed") && !conn_is_tls(s->c)) {
            s->switch_tls = true;
            dj_stanza_free(st);
            return 1;
        } else if (!strcmp(n->name, "stream:features") && !s->result_sent) {
            char key[65];
            dialback_key(s->remote, s->local, s->id, key);
            struct evbuffer *out = conn_out(s->c);
            evbuffer_add_printf(out, "<db:result");
            out_attr(out, "from", s->local);
            out_attr(out, "to", s->remote);
            evbuffer_add_printf(out, ">%s</db:result>", key);
            s->result_sent = true;
        } else if (is_dialback(n, "result")) {
            const char *type = dj_node_attr(n, "type");
            if (type && !strcmp(type, "valid")) {
                s->state = S2S_AUTHED;
                dj_s2s_n.outgoing_authed++;
                log_info("djabberd: s2s to %s authenticated by dialback", s->remote);
                evbuffer_add_buffer(conn_out(s->c), s->queue);
            } else {
                log_warn("djabberd: s2s to %s: dialback refused", s->remote);
                bounce_queue(s);
                conn_close_after_write(s->c);
            }
        } else if (is_dialback(n, "verify")) {
            got_verify_answer(n);
        } else if (!strcmp(n->name, "stream:error")) {
            bounce_queue(s);
            conn_close_after_write(s->c);
        }
        dj_stanza_free(st);
        return 0;
    }
    if (!strcmp(dj_node_local(n), "starttls") && dj_node_ns(n) && !strcmp(dj_node_ns(n), NS_TLS)) {
        if (!dj.tls_ctx || conn_is_tls(s->c)) {
            evbuffer_add_printf(conn_out(s->c), "<failure xmlns='" NS_TLS "'/></stream:stream>");
            conn_close_after_write(s->c);
        } else {
            evbuffer_add_printf(conn_out(s->c), "<proceed xmlns='" NS_TLS "'/>");
            s->switch_tls = true;
        }
        dj_stanza_free(st);
        return 1;
    } else if (is_dialback(n, "result")) {
        got_result(s, n, st);
    } else if (is_dialback(n, "verify")) {
        got_verify_request(s, n, st);
    } else if (!strcmp(n->name, "message") || !strcmp(n->name, "presence") || !strcmp(n->name, "iq")) {
        if (s->state != S2S_AUTHED) {
            s2s_error(s, "not-authorized");
        } else {
            inbound_stanza(s, st);
            st = NULL;
        }
    } else if (!strcmp(n->name, "stream:error")) {
        conn_close_after_write(s->c);
    }
    dj_stanza_free(st);
    return conn_is_closing(s->c) ? 1 : 0;
}

static int s2s_on_stream(void *arg, const char *name, const char **attrs)
{
    struct dj_s2s *s = arg;
    const char *ns = NULL, *db = NULL, *to = NULL, *from = NULL, *id = NULL, *dflt = NULL;
    for (int i = 0; attrs[i]; i += 2) {
        const char *k = attrs[i], *v = attrs[i + 1];
        if (!strcmp(k, "xmlns:stream"))
            ns = v;
        else if (!strcmp(k, "xmlns:db"))
            db = v;
        else if (!strcmp(k, "xmlns"))
            dflt = v;
        else if (!strcmp(k, "to"))
            to = v;
        else if (!strcmp(k, "from"))
            from = v;
        else if (!strcmp(k, "id"))
            id = v;
    }
    if (strcmp(name, "stream:stream") || !ns || strcmp(ns, "http://etherx.jabber.org/streams") ||
        (dflt && strcmp(dflt, "jabber:server"))) {
        s2s_error(s, "invalid-namespace");
        return -1;
    }
    if (s->outgoing) {
        if (!id || strlen(id) >= sizeof s->id) {
            s2s_error(s, "invalid-id");
            return -1;
        }
        snprintf(s->id, sizeof s->id, "%s", id);
        s->state = S2S_OPEN;
        evbuffer_add_buffer(conn_out(s->c), s->ctl); /* db:verify requests that waited */
        return 0;
    }
    (void)from;
    if (!db || strcmp(db, "jabber:server:dialback")) {
        header(s, to, NULL, NULL);
        s2s_error(s, "unsupported-feature"); /* dialback is the only way in */
        return -1;
    }
    if (!to || dj_vhost_find(to) < 0) {
        header(s, NULL, NULL, NULL);
        s2s_error(s, "host-unknown");
        return -1;
    }
    unsigned char rnd[16];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(s->id + 2 * i, 3, "%02x", rnd[i]);
    free(s->local);
    s->local = strdup(to);
    s->state = S2S_OPEN;
    header(s, to, from, s->id);
    evbuffer_add_printf(conn_out(s->c),
                        "<stream:features>%s<dialback xmlns='urn:xmpp:features:dialback'><errors/>"
                        "</dialback></stream:features>",
                        dj.tls_ctx && !conn_is_tls(s->c) ? "<starttls xmlns='" NS_TLS "'/>" : "");
    return 0;
}

static const struct dj_xml_cbs s2s_xml_cbs = { s2s_on_stream, s2s_on_stanza };

/* ---- connections ----------------------------------------------------------------------------------- */

static int s2s_on_read(struct core_conn *c)
{
    struct dj_s2s *s = c->data;
    struct evbuffer *in = conn_in(c);
    struct evbuffer_iovec v[8];
    while (evbuffer_get_length(in) > 0 && !conn_is_closing(c)) {
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        if (nv > 8)
            nv = 8;
        size_t used = 0;
        enum dj_xml_error e = DJ_XML_OK;
        for (int i = 0; i < nv && e == DJ_XML_OK && !conn_is_closing(c); i++) {
            e = dj_xml_feed(s->xml, v[i].iov_base, v[i].iov_len);
            if (s->switch_tls) {
                /* exactly through </starttls> or <proceed/>: what follows is TLS */
                s->switch_tls = false;
                evbuffer_drain(in, used + dj_xml_feed_used(s->xml));
                dj_xml_restart(s->xml);
                int rc = s->outgoing ? conn_start_tls(c, client_ctx, false, s->remote)
                                     : conn_start_tls(c, dj.tls_ctx, true, NULL);
                if (rc < 0) {
                    conn_close(c);
                    return 0;
                }
                if (s->outgoing) {
                    dj_s2s_n.tls_out++;
                    s->state = S2S_HEADER;
                    header(s, s->local, s->remote, NULL); /* the new stream, encrypted */
                } else {
                    dj_s2s_n.tls_in++;
                    s->state = S2S_CONNECTING;
                }
                return 0;
            }
            used += v[i].iov_len;
        }
        evbuffer_drain(in, used);
        if (e == DJ_XML_CLOSED) {
            evbuffer_add_printf(conn_out(c), "</stream:stream>");
            conn_close_after_write(c);
        } else if (e != DJ_XML_OK)
            s2s_error(s, dj_xml_error_condition(e));
    }
    return 0;
}

static void bounce_queue(struct dj_s2s *s)
{
    /* what waited for this peer is dropped; its local senders learn it
     * through the stream's failure counter and the log */
    size_t n = s->queue ? evbuffer_get_length(s->queue) : 0;
    if (n) {
        dj_s2s_n.dropped_bytes += n;
        evbuffer_drain(s->queue, n);
    }
}

static void s2s_on_connect(struct core_conn *c, bool ok)
{
    struct dj_s2s *s = c->data;
    if (!ok) {
        char e[128];
        log_warn("djabberd: s2s to %s: connect failed: %s", s->remote, conn_error_str(c, e, sizeof e));
        return;
    }
    s->state = S2S_HEADER;
    header(s, s->local, s->remote, NULL);
}

static void s2s_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct dj_s2s *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    s->state = S2S_CLOSED;
    s->c = NULL;
    bounce_queue(s);
    s2s_free(s);
}

static bool s2s_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

static const struct conn_ops s2s_ops = {
    .name = "xmpp-s2s",
    .on_read = s2s_on_read,
    .on_connect = s2s_on_connect,
    .on_eof = s2s_on_eof,
    .on_close = s2s_on_close,
};

static struct dj_s2s *s2s_new(bool outgoing)
{
    struct dj_s2s *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    struct dj_xml_limits lim = { .max_stanza = (size_t)dj.cfg.max_stanza, .max_depth = 32, .max_attrs = 64 };
    s->xml = dj_xml_new(&lim, &s2s_xml_cbs, s);
    s->ctl = evbuffer_new();
    s->queue = evbuffer_new();
    if (!s->xml || !s->ctl || !s->queue) {
        dj_xml_free(s->xml);
        if (s->ctl)
            evbuffer_free(s->ctl);
        if (s->queue)
            evbuffer_free(s->queue);
        free(s);
        return NULL;
    }
    s->outgoing = outgoing;
    s->next = streams;
    streams = s;
    return s;
}

void dj_s2s_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct dj_s2s *s = s2s_new(false);
    if (!s) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &s2s_ops, s);
    if (!c) {
        s2s_free(s);
        return;
    }
    s->c = c;
    conn_set_timeouts(c, 600000, 60000);
    conn_set_output_limit(c, 4u << 20);
    dj_s2s_n.incoming++;
}

/* "domain=host:port" entries of s2s_route. */
static bool route_for(const char *domain, char *host, size_t cap, int *port)
{
    const char *r = dj.cfg.s2s_routes;
    size_t dl = strlen(domain);
    while (r && *r) {
        const char *end = strchr(r, ',');
        size_t len = end ? (size_t)(end - r) : strlen(r);
        if (len > dl && !strncasecmp(r, domain, dl) && r[dl] == '=') {
            const char *hp = r + dl + 1;
            size_t hl = len - dl - 1;
            const char *colon = memrchr(hp, ':', hl);
            if (colon && (size_t)(colon - hp) < cap) {
                memcpy(host, hp, (size_t)(colon - hp));
                host[colon - hp] = 0;
                *port = atoi(colon + 1);
                return true;
            }
        }
        r = end ? end + 1 : NULL;
    }
    return false;
}

static struct dj_s2s *out_open(const char *local, const char *remote)
{
    if (!dj.cfg.s2s_port)
        return NULL;
    char host[512];
    int port = dj.cfg.s2s_default_port;
    if (!route_for(remote, host, sizeof host, &port))
        snprintf(host, sizeof host, "%s", remote);
    struct dj_s2s *s = s2s_new(true);
    if (!s)
        return NULL;
    s->local = strdup(local);
    s->remote = strdup(remote);
    struct core_loop *l = loop_current();
    struct core_conn *c = conn_connect_host(l ? l : loop_get(0), host, port, &s2s_ops, s);
    if (!c) {
        s2s_free(s);
        return NULL;
    }
    s->c = c;
    conn_set_timeouts(c, 600000, 30000);
    conn_set_output_limit(c, 4u << 20);
    dj_s2s_n.outgoing++;
    return s;
}

/* ---- sending ------------------------------------------------------------------------------------------ */

int dj_s2s_send_buf(const char *local, const char *remote, struct evbuffer *b)
{
    struct dj_s2s *s = find_out(local, remote);
    if (!s)
        s = out_open(local, remote);
    if (!s) {
        evbuffer_drain(b, evbuffer_get_length(b));
        return -1;
    }
    dj_s2s_n.stanzas_out++;
    if (s->state == S2S_AUTHED) {
        if (evbuffer_get_length(conn_out(s->c)) > DJ_S2S_OUT_MAX) {
            /* the peer does not read: drop rather than grow without bound */
            dj_s2s_n.dropped_bytes += evbuffer_get_length(b);
            evbuffer_drain(b, evbuffer_get_length(b));
            return -1;
        }
        evbuffer_add_buffer(conn_out(s->c), b);
        return 0;
    }
    if (evbuffer_get_length(s->queue) + evbuffer_get_length(b) > DJ_S2S_QUEUE_MAX) {
        evbuffer_drain(b, evbuffer_get_length(b));
        return -1;
    }
    evbuffer_add_buffer(s->queue, b);
    return 0;
}

int dj_s2s_send_node(const char *remote, const struct dj_node *n)
{
    char local[DJ_JID_MAX + 1];
    const char *from = dj_node_attr(n, "from");
    domain_of(from ? from : "", local, sizeof local);
    if (!local[0] || dj_vhost_find(local) < 0)
        return -1;
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, n);
    int rc = dj_s2s_send_buf(local, remote, b);
    evbuffer_free(b);
    return rc;
}

/* A serialised stanza from a local bare JID (e.g. a presence) to a remote JID:
 * the `to` is added after the element name. */
int dj_s2s_send_raw_to(const char *xml, size_t len, const char *to)
{
    char remote[DJ_JID_MAX + 1], local[DJ_JID_MAX + 1];
    domain_of(to, remote, sizeof remote);
    const char *sp = memchr(xml, ' ', len);
    const char *gt = memchr(xml, '>', len);
    const char *cut = sp && (!gt || sp < gt) ? sp : gt;
    if (!cut || !remote[0])
        return -1;
    if (cut > xml && cut[-1] == '/')
        cut--;
    /* from='...' names our domain */
    const char *f = strstr(xml, " from='");
    if (!f)
        return -1;
    char fromjid[3 * DJ_JID_MAX + 3];
    const char *fe = strchr(f + 7, '\'');
    if (!fe || (size_t)(fe - f - 7) >= sizeof fromjid)
        return -1;
    memcpy(fromjid, f + 7, (size_t)(fe - f - 7));
    fromjid[fe - f - 7] = 0;
    domain_of(fromjid, local, sizeof local);
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, xml, (size_t)(cut - xml));
    out_attr(b, "to", to);
    evbuffer_add(b, cut, len - (size_t)(cut - xml));
    int rc = dj_s2s_send_buf(local, remote, b);
    evbuffer_free(b);
    return rc;
}

void dj_s2s_close_all(void)
{
    for (struct dj_s2s *s = streams; s; s = s->next)
        if (s->c && !conn_is_closing(s->c)) {
            evbuffer_add_printf(conn_out(s->c), "</stream:stream>");
            conn_close_after_write(s->c);
        }
}

size_t dj_s2s_count(bool outgoing)
{
    size_t n = 0;
    for (struct dj_s2s *s = streams; s; s = s->next)
        if (s->outgoing == outgoing && s->state == S2S_AUTHED)
            n++;
    return n;
}
