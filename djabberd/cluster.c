/* cluster: several djabberd nodes serving the same domains share where
 * users are connected, and hand each other stanzas for them.
 *
 * Every node listens on `cluster_listen` (its node name) and dials every
 * address in `cluster_peer`. A link is an XML stream (urn:djabberd:cluster)
 * authenticated with HMAC-SHA256(SHA256(cluster_secret), stream id + node)
 * — the same secret on every node. Over its outgoing links a node announces
 * its sessions (<loc/> with the current presence, <unloc/>, a <reset/>
 * snapshot when a link comes up) and forwards stanzas (<route to=JID>
 * stanza</route>); incoming links only receive. The receiving node keeps
 * the other nodes' sessions in dj_user->remote, so routing, presence
 * broadcast and probes see them as if they were local. A forwarded stanza
 * is delivered locally only: it is never forwarded again.
 *
 * Storage (rosters, offline) is the shared database every node points at;
 * an account's roster is changed on the node where it is online. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "common/conn.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"

#define NS_CLUSTER "urn:djabberd:cluster"
#define DJ_LINK_OUT_MAX (32u << 20)

struct dj_link {
    struct core_conn *c;
    struct dj_xml *xml;
    bool outgoing, up, authed;
    char *peer; /* outgoing: the address dialled = the peer's node name */
    char *node; /* incoming: the authenticated node */
    char id[40];
    struct event *retry;
    struct dj_link *next;
};

static struct dj_link *links;
static unsigned char cluster_key[32];
bool dj_cluster_local_only;
struct dj_cluster_counters dj_cluster_n;

static const char *my_name(void) { return dj.cfg.cluster_listen; }
bool dj_cluster_on(void) { return dj.cfg.cluster_listen && *dj.cfg.cluster_listen; }

static void link_mac(const char *id, const char *node, char out[65])
{
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s %s", id, node);
    unsigned char mac[32];
    unsigned int ml;
    HMAC(EVP_sha256(), cluster_key, sizeof cluster_key, (unsigned char *)msg, (size_t)(n < 0 ? 0 : n), mac, &ml);
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hx[mac[i] >> 4];
        out[2 * i + 1] = hx[mac[i] & 15];
    }
    out[64] = 0;
}

static void attr(struct evbuffer *b, const char *k, const char *v)
{
    evbuffer_add_printf(b, " %s='", k);
    dj_xml_escape(b, v, strlen(v));
    evbuffer_add(b, "'", 1);
}

/* ---- the remote-session map ---------------------------------------------------------- */

static void rsess_free(struct dj_rsess *r)
{
    free(r->node);
    free(r->resource);
    free(r->presence);
    free(r);
}

static void forget_node(const char *node)
{
    for (size_t b = 0; b < dj.nbuckets; b++)
        for (struct dj_user *u = dj.users[b], *nx; u; u = nx) {
            nx = u->hnext;
            for (struct dj_rsess **pp = &u->remote; *pp;) {
                if (!strcmp((*pp)->node, node)) {
                    struct dj_rsess *r = *pp;
                    *pp = r->next;
                    rsess_free(r);
                } else
                    pp = &(*pp)->next;
            }
            dj_user_maybe_free(u);
        }
}

static struct dj_link *link_to(const char *node);

/* A session on another node appeared or became available. Messages this
 * node sent to storage for the account, or roster changes it made (a
 * subscription that came before it knew), may have been committed after
 * that node's offline fetch or roster load read the database (they are on
 * another connection): once every such write begun here is committed, ask
 * that node to fetch again and, for a new session, to reload the roster
 * (<osync jid=... roster='1'/>). From now on this node routes messages and
 * subscriptions for the account to that node. */
struct osync {
    char *node, *jid;
    bool roster;
};

static void offline_sync_send(void *arg)
{
    struct osync *o = arg;
    struct dj_link *l = link_to(o->node);
    if (l && l->c && !conn_is_closing(l->c)) {
        struct evbuffer *out = conn_out(l->c);
        evbuffer_add_printf(out, "<osync");
        attr(out, "jid", o->jid);
        evbuffer_add_printf(out, "%s/>", o->roster ? " roster='1'" : "");
        dj_cluster_n.offline_syncs++;
    }
    free(o->node);
    free(o->jid);
    free(o);
}

static void offline_sync_later(const char *node, const char *jid, bool roster)
{
    struct osync *o = calloc(1, sizeof *o);
    if (!o)
        return;
    o->node = strdup(node);
    o->jid = strdup(jid);
    o->roster = roster;
    if (!o->node || !o->jid) {
        free(o->node);
        free(o->jid);
        free(o);
        return;
    }
    dj_after_writes(offline_sync_send, o);
}

static void got_loc(const char *node, struct dj_node *n, struct dj_stanza *st, bool gone)
{
    const char *jid = dj_node_attr(n, "jid");
    struct dj_jid j;
    if (!jid || dj_jid_parse(jid, &j) < 0 || !j.node[0] || !j.resource[0])
        return;
    char bare[2 * DJ_JID_MAX + 2];
    dj_jid_bare(&j, bare, sizeof bare);
    struct dj_user *u = dj_user_get(bare, !gone);
    if (!u)
        return;
    struct dj_rsess *r = NULL;
    bool was_avail = false;
    for (struct dj_rsess **pp = &u->remote; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->node, node) && !strcmp((*pp)->resource, j.resource)) {
            r = *pp;
            if (gone) {
                *pp = r->next;
                rsess_free(r);
                dj_user_maybe_free(u);
                return;
            }
            break;
        }
    if (gone)
        return;
    was_avail = r && r->avail;
    bool is_new = !r;
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return;
        r->node = strdup(node);
        r->resource = strdup(j.resource);
        r->next = u->remote;
        u->remote = r;
    }
    const char *prio = dj_node_attr(n, "prio"), *avail = dj_node_attr(n, "avail");
    r->prio = (int8_t)(prio ? atoi(prio) : 0);
    r->avail = avail && !strcmp(avail, "1");
    free(r->presence);
    size_t pl;
    const char *p = dj_node_text_of(st, n, &pl);
    r->presence = pl ? strndup(p, pl) : NULL;
    /* a new session: its node may have loaded the roster before a change
     * made here (by a subscription that came before we knew) was
     * committed, so it reloads; an available one fetches offline messages */
    if (is_new || (r->avail && !was_avail))
        offline_sync_later(node, jid, is_new);
}

/* ---- outgoing: announcements and routes ------------------------------------------------- */

static struct dj_link *link_to(const char *node)
{
    for (struct dj_link *l = links; l; l = l->next)
        if (l->outgoing && l->authed && !strcmp(l->peer, node))
            return l;
    return NULL;
}

static void loc_xml(struct evbuffer *b, struct dj_sess *s, bool gone)
{
    char full[3 * DJ_JID_MAX + 3];
    dj_sess_jid(s, full, sizeof full);
    if (gone) {
        evbuffer_add_printf(b, "<unloc");
        attr(b, "jid", full);
        evbuffer_add_printf(b, "/>");
        return;
    }
    evbuffer_add_printf(b, "<loc");
    attr(b, "jid", full);
    evbuffer_add_printf(b, " prio='%d' avail='%d'>", s->prio, (s->flags & DJ_F_AVAILABLE) ? 1 : 0);
    if ((s->flags & DJ_F_AVAILABLE) && s->presence)
        dj_xml_escape(b, s->presence, strlen(s->presence));
    evbuffer_add_printf(b, "</loc>");
}

void dj_cluster_announce(struct dj_sess *s, bool gone)
{
    if (!dj_cluster_on())
        return;
    for (struct dj_link *l = links; l; l = l->next)
        if (l->outgoing && l->authed) {
            loc_xml(conn_out(l->c), s, gone);
            dj_cluster_n.announced++;
        }
}

/* The default ClusterDeliverMessage plugin: our own links. */
static void links_deliver(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_cluster *h = (struct dj_hook_cluster *)call;
    struct dj_link *l = link_to(h->node);
    if (!l) {
        dj_hook_decline(call);
        return;
    }
    struct evbuffer *out = conn_out(l->c);
    if (evbuffer_get_length(out) > DJ_LINK_OUT_MAX) {
        /* the peer node does not keep up: drop (counted), never grow without bound */
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    evbuffer_add_printf(out, "<route");
    attr(out, "to", h->to);
    evbuffer_add(out, ">", 1);
    evbuffer_add(out, h->xml, h->len);
    evbuffer_add_printf(out, "</route>");
    dj_cluster_n.forwarded++;
    dj_hook_finish(call, DJ_OK);
}

struct forward_call {
    struct dj_hook_cluster h;
    bool in_run, done;
    char data[]; /* node, to, xml copies */
};

static void forward_done(struct dj_hook_call *call)
{
    struct forward_call *f = (struct forward_call *)call;
    if (call->status != DJ_OK)
        dj_cluster_n.dropped++;
    if (f->in_run)
        f->done = true; /* the caller still looks at the status */
    else
        free(f);
}

/* Cluster delivery goes through the ClusterDeliverMessage chain (plugins
 * may answer later: the call owns copies of node, to and the stanza).
 * Returns -1 when the chain refused at once, else 0 (sent or under way). */
int dj_cluster_forward(const char *node, const char *to, const char *xml, size_t len)
{
    size_t nl = strlen(node) + 1, tl = strlen(to) + 1;
    struct forward_call *f = malloc(sizeof *f + nl + tl + len + 1);
    if (!f)
        return -1;
    memset(f, 0, sizeof *f);
    memcpy(f->data, node, nl);
    memcpy(f->data + nl, to, tl);
    memcpy(f->data + nl + tl, xml, len);
    f->data[nl + tl + len] = 0;
    f->h.node = f->data;
    f->h.to = f->data + nl;
    f->h.xml = f->data + nl + tl;
    f->h.len = len;
    f->in_run = true;
    dj_hook_run(DJ_HOOK_CLUSTER_DELIVER, &f->h.call, forward_done);
    f->in_run = false;
    if (!f->done)
        return 0; /* a plugin answers later */
    int rc = f->h.call.status == DJ_OK ? 0 : -1;
    free(f);
    return rc;
}

int dj_cluster_forward_node(const char *node, const char *to, const struct dj_node *n)
{
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, n);
    size_t len = evbuffer_get_length(b);
    int rc = dj_cluster_forward(node, to, (const char *)evbuffer_pullup(b, (ev_ssize_t)len), len);
    evbuffer_free(b);
    return rc;
}

/* Forward once to each node holding an available session of u. */
void dj_cluster_forward_available(struct dj_user *u, const char *xml, size_t len)
{
    for (struct dj_rsess *r = u ? u->remote : NULL; r; r = r->next) {
        if (!r->avail)
            continue;
        bool seen = false;
        for (struct dj_rsess *q = u->remote; q != r; q = q->next)
            if (q->avail && !strcmp(q->node, r->node))
                seen = true;
        if (!seen)
            dj_cluster_forward(r->node, u->bare, xml, len);
    }
}

/* ---- links ------------------------------------------------------------------------------------ */

static void link_free(struct dj_link *l)
{
    for (struct dj_link **pp = &links; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    dj_xml_free(l->xml);
    if (l->retry)
        event_free(l->retry);
    free(l->peer);
    free(l->node);
    free(l);
}

static void dial(struct dj_link *l);

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    dial(arg);
}

static void schedule_retry(struct dj_link *l)
{
    if (loop_stopping())
        return;
    if (!l->retry)
        l->retry = evtimer_new(loop_get(0)->base, retry_cb, l);
    struct timeval tv = { 0, 500000 };
    evtimer_add(l->retry, &tv);
}

static void send_snapshot(struct dj_link *l)
{
    struct evbuffer *out = conn_out(l->c);
    evbuffer_add_printf(out, "<reset/>");
    for (size_t b = 0; b < dj.nbuckets; b++)
        for (struct dj_user *u = dj.users[b]; u; u = u->hnext)
            for (struct dj_sess *s = u->sessions; s; s = s->next_res)
                if (s->state == DJ_S_ACTIVE)
                    loc_xml(out, s, false);
}

static void link_error(struct dj_link *l, const char *why)
{
    log_warn("djabberd: cluster link %s: %s", l->outgoing ? l->peer : (l->node ? l->node : "?"), why);
    if (l->c && !conn_is_closing(l->c)) {
        evbuffer_add_printf(conn_out(l->c), "</stream:stream>");
        conn_close_after_write(l->c);
    }
}

static int link_on_stream(void *arg, const char *name, const char **attrs)
{
    struct dj_link *l = arg;
    const char *ns = NULL, *id = NULL;
    for (int i = 0; attrs[i]; i += 2) {
        if (!strcmp(attrs[i], "xmlns"))
            ns = attrs[i + 1];
        else if (!strcmp(attrs[i], "id"))
            id = attrs[i + 1];
    }
    if (strcmp(name, "stream:stream") || !ns || strcmp(ns, NS_CLUSTER)) {
        link_error(l, "not a cluster stream");
        return -1;
    }
    struct evbuffer *out = conn_out(l->c);
    if (l->outgoing) {
        if (!id || strlen(id) >= sizeof l->id) {
            link_error(l, "no stream id");
            return -1;
        }
        char mac[65];
        link_mac(id, my_name(), mac);
        evbuffer_add_printf(out, "<auth");
        attr(out, "node", my_name());
        evbuffer_add_printf(out, ">%s</auth>", mac);
        l->authed = true; /* a wrong secret makes the peer close the link */
        log_info("djabberd: cluster link to %s up", l->peer);
        send_snapshot(l);
        /* while this link was down, messages for that node's available
         * sessions could not be forwarded and went to storage */
        for (size_t b = 0; b < dj.nbuckets; b++)
            for (struct dj_user *u = dj.users[b]; u; u = u->hnext)
                for (struct dj_rsess *r = u->remote; r; r = r->next)
                    if (r->avail && !strcmp(r->node, l->peer)) {
                        char full[3 * DJ_JID_MAX + 3];
                        snprintf(full, sizeof full, "%s/%s", u->bare, r->resource);
                        offline_sync_later(l->peer, full, true);
                    }
        return 0;
    }
    unsigned char rnd[16];
    RAND_bytes(rnd, sizeof rnd);
    for (int i = 0; i < 16; i++)
        snprintf(l->id + 2 * i, 3, "%02x", rnd[i]);
    evbuffer_add_printf(out,
                        "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                        "xmlns='" NS_CLUSTER "' id='%s' version='1.0'>",
                        l->id);
    return 0;
}

static int link_on_stanza(void *arg, struct dj_stanza *st)
{
    struct dj_link *l = arg;
    struct dj_node *n = st->root;
    if (l->outgoing) { /* nothing is expected back */
        dj_stanza_free(st);
        return 0;
    }
    if (!l->authed) {
        const char *node = dj_node_attr(n, "node");
        size_t ml;
        const char *mac = dj_node_text_of(st, n, &ml);
        char want[65];
        if (strcmp(n->name, "auth") || !node || !*node || ml != 64 ||
            (link_mac(l->id, node, want), CRYPTO_memcmp(want, mac, 64) != 0)) {
            dj_cluster_n.auth_failed++;
            link_error(l, "bad cluster authentication");
            dj_stanza_free(st);
            return 1;
        }
        l->node = strdup(node);
        l->authed = true;
        log_info("djabberd: cluster link from %s up", node);
        dj_stanza_free(st);
        return 0;
    }
    if (!strcmp(n->name, "loc") || !strcmp(n->name, "unloc")) {
        got_loc(l->node, n, st, n->name[0] == 'u');
    } else if (!strcmp(n->name, "osync")) {
        const char *jid = dj_node_attr(n, "jid"), *ro = dj_node_attr(n, "roster");
        if (jid) {
            dj_cluster_n.offline_syncs_in++;
            dj_cluster_offline_sync(l->node, jid, ro && !strcmp(ro, "1"));
        }
    } else if (!strcmp(n->name, "reset")) {
        forget_node(l->node);
    } else if (!strcmp(n->name, "route")) {
        const char *to = dj_node_attr(n, "to");
        struct dj_node *inner = NULL;
        for (struct dj_node *c = n->child; c; c = c->next)
            if (c->name) {
                inner = c;
                break;
            }
        if (to && inner) {
            char *t = strdup(to);
            inner->next = NULL;
            inner->up = NULL;
            st->root = inner; /* same arena: the stanza now is the routed one */
            dj_cluster_n.received++;
            dj_cluster_local_only = true;
            dj_cluster_deliver(st, t);
            dj_cluster_local_only = false;
            free(t);
            return 0;
        }
    }
    dj_stanza_free(st);
    return 0;
}

static const struct dj_xml_cbs link_cbs = { link_on_stream, link_on_stanza };

static int link_on_read(struct core_conn *c)
{
    struct dj_link *l = c->data;
    struct evbuffer *in = conn_in(c);
    struct evbuffer_iovec v[8];
    while (evbuffer_get_length(in) > 0 && !conn_is_closing(c)) {
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        if (nv > 8)
            nv = 8;
        size_t used = 0;
        enum dj_xml_error e = DJ_XML_OK;
        for (int i = 0; i < nv && e == DJ_XML_OK && !conn_is_closing(c); i++) {
            e = dj_xml_feed(l->xml, v[i].iov_base, v[i].iov_len);
            used += v[i].iov_len;
        }
        evbuffer_drain(in, used);
        if (e != DJ_XML_OK) {
            link_error(l, e == DJ_XML_CLOSED ? "closed by peer" : dj_xml_error_condition(e));
            break;
        }
    }
    return 0;
}

static void link_on_connect(struct core_conn *c, bool ok)
{
    struct dj_link *l = c->data;
    if (!ok)
        return; /* on_close follows and schedules a retry */
    l->up = true;
    struct evbuffer *out = conn_out(c);
    evbuffer_add_printf(out, "<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
                             "xmlns='" NS_CLUSTER "'");
    attr(out, "from", my_name());
    evbuffer_add_printf(out, " version='1.0'>");
}

static void link_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct dj_link *l = c->data;
    c->data = NULL;
    if (!l)
        return;
    l->c = NULL;
    if (l->outgoing) {
        if (l->authed)
            log_info("djabberd: cluster link to %s down", l->peer);
        l->up = l->authed = false;
        dj_xml_free(l->xml);
        struct dj_xml_limits lim = { .max_stanza = (size_t)dj.cfg.max_stanza + 65536,
                                     .max_depth = 40,
                                     .max_attrs = 64 };
        l->xml = dj_xml_new(&lim, &link_cbs, l);
        schedule_retry(l);
        return;
    }
    if (l->node) {
        log_info("djabberd: cluster link from %s down", l->node);
        forget_node(l->node);
    }
    link_free(l);
}

static bool link_on_eof(struct core_conn *c)
{
    (void)c;
    return true;
}

static const struct conn_ops link_ops = {
    .name = "djabberd-cluster",
    .on_read = link_on_read,
    .on_connect = link_on_connect,
    .on_eof = link_on_eof,
    .on_close = link_on_close,
};

static struct dj_link *link_new(bool outgoing)
{
    struct dj_link *l = calloc(1, sizeof *l);
    if (!l)
        return NULL;
    struct dj_xml_limits lim = { .max_stanza = (size_t)dj.cfg.max_stanza + 65536, .max_depth = 40, .max_attrs = 64 };
    l->xml = dj_xml_new(&lim, &link_cbs, l);
    if (!l->xml) {
        free(l);
        return NULL;
    }
    l->outgoing = outgoing;
    l->next = links;
    links = l;
    return l;
}

static void dial(struct dj_link *l)
{
    char host[256];
    snprintf(host, sizeof host, "%s", l->peer);
    char *colon = strrchr(host, ':');
    if (!colon) {
        log_error("djabberd: cluster_peer %s: expected host:port", l->peer);
        return;
    }
    *colon = 0;
    int port = atoi(colon + 1);
    const char *h = host[0] == '[' ? host + 1 : host;
    if (host[0] == '[' && host[strlen(host) - 1] == ']')
        host[strlen(host) - 1] = 0;
    struct core_conn *c = conn_connect_host(loop_get(0), h, port, &link_ops, l);
    if (!c) {
        schedule_retry(l);
        return;
    }
    l->c = c;
    conn_set_output_limit(c, 16u << 20);
}

static void link_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct dj_link *l = link_new(false);
    if (!l) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &link_ops, l);
    if (!c) {
        link_free(l);
        return;
    }
    l->c = c;
    conn_set_timeouts(c, 0, 60000);
}

int dj_cluster_start(char *err, size_t errlen)
{
    if (!dj_cluster_on())
        return 0;
    if (!dj.cfg.cluster_secret || !*dj.cfg.cluster_secret) {
        snprintf(err, errlen, "cluster_listen needs cluster_secret (the same on every node)");
        return -1;
    }
    unsigned int kl;
    EVP_Digest(dj.cfg.cluster_secret, strlen(dj.cfg.cluster_secret), cluster_key, &kl, EVP_sha256(), NULL);
    dj_hook_register(DJ_HOOK_CLUSTER_DELIVER, "links", links_deliver, NULL);
    struct listen_opts lo = { .single_loop = true };
    if (!listen_open(dj.cfg.cluster_listen, 5270, &lo, link_accept, NULL, NULL, err, errlen))
        return -1;
    const char *p = dj.cfg.cluster_peers;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        struct dj_link *l = link_new(true);
        if (!l)
            return -1;
        l->peer = strndup(p, len);
        dial(l);
        p = end ? end + 1 : NULL;
    }
    return 0;
}

void dj_cluster_stop(void)
{
    for (struct dj_link *l = links; l; l = l->next) {
        if (l->retry)
            evtimer_del(l->retry);
        if (l->c && !conn_is_closing(l->c)) {
            evbuffer_add_printf(conn_out(l->c), "</stream:stream>");
            conn_close_after_write(l->c);
        }
    }
}

void dj_cluster_free(void)
{
    while (links)
        link_free(links);
}

size_t dj_cluster_links(bool outgoing)
{
    size_t n = 0;
    for (struct dj_link *l = links; l; l = l->next)
        if (l->outgoing == outgoing && l->authed && l->c)
            n++;
    return n;
}
