/* cmd_xmpp: what a bound session's stanzas do — IQs the server answers
 * (roster, disco, registration; the rest through the c2s-iq chain),
 * presence (broadcast, probes answered from memory, directed presence) and
 * routing of messages to bare and full JIDs, with offline storage through
 * the deliver chain. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"
#include "djabberd/plugins/plugins.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "common/conn.h"
#include "common/log.h"

#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define NS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define NS_REGISTER "jabber:iq:register"

/* ---- JIDs -------------------------------------------------------------------------- */

int dj_jid_parse(const char *s, struct dj_jid *j)
{
    memset(j, 0, sizeof *j);
    if (!s || !*s)
        return -1;
    const char *slash = strchr(s, '/');
    const char *at = strchr(s, '@');
    if (at && slash && at > slash)
        at = NULL; /* an '@' inside the resource */
    const char *dstart = at ? at + 1 : s;
    size_t dlen = slash ? (size_t)(slash - dstart) : strlen(dstart);
    size_t nlen = at ? (size_t)(at - s) : 0;
    if (dlen == 0 || dlen > DJ_JID_MAX || nlen > DJ_JID_MAX || (at && nlen == 0))
        return -1;
    for (size_t i = 0; i < nlen; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch <= ' ' || strchr("\"&'/:<>@", ch))
            return -1;
        j->node[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    for (size_t i = 0; i < dlen; i++) {
        unsigned char ch = (unsigned char)dstart[i];
        if (ch <= ' ' || ch == '@' || ch == '/')
            return -1;
        j->domain[i] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
    }
    if (j->domain[dlen - 1] == '.')
        j->domain[dlen - 1] = 0;
    if (slash) {
        size_t rlen = strlen(slash + 1);
        if (rlen == 0 || rlen > DJ_JID_MAX)
            return -1;
        memcpy(j->resource, slash + 1, rlen);
    }
    return 0;
}

const char *dj_jid_bare(const struct dj_jid *j, char *buf, size_t cap)
{
    if (j->node[0])
        snprintf(buf, cap, "%s@%s", j->node, j->domain);
    else
        snprintf(buf, cap, "%s", j->domain);
    return buf;
}

const char *dj_jid_full(const struct dj_jid *j, char *buf, size_t cap)
{
    char bare[2 * DJ_JID_MAX + 2];
    dj_jid_bare(j, bare, sizeof bare);
    if (j->resource[0])
        snprintf(buf, cap, "%s/%s", bare, j->resource);
    else
        snprintf(buf, cap, "%s", bare);
    return buf;
}

/* ---- replies --------------------------------------------------------------------------- */

static void attr_out(struct evbuffer *out, const char *name, const char *v)
{
    if (!v)
        return;
    evbuffer_add_printf(out, " %s='", name);
    dj_xml_escape(out, v, strlen(v));
    evbuffer_add(out, "'", 1);
}

/* "<iq type='result' id=.. from=(request's to)>" ; caller closes it. */
static void iq_open(struct evbuffer *out, struct dj_stanza *st, const char *type)
{
    evbuffer_add_printf(out, "<iq type='%s'", type);
    attr_out(out, "id", dj_node_attr(st->root, "id"));
    attr_out(out, "from", dj_node_attr(st->root, "to"));
    attr_out(out, "to", dj_node_attr(st->root, "from"));
}

static void iq_result_empty(struct dj_sess *s, struct dj_stanza *st)
{
    struct evbuffer *b = evbuffer_new();
    iq_open(b, st, "result");
    evbuffer_add(b, "/>", 2);
    dj_sess_send_buf(s, b);
    evbuffer_free(b);
}

void dj_cmd_error(struct dj_sess *s, struct dj_stanza *st, const char *type, const char *condition)
{
    struct dj_node *n = st->root;
    const char *t = dj_node_attr(n, "type");
    if (t && !strcmp(t, "error"))
        return; /* never answer an error with an error */
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<%s type='error'", n->name);
    attr_out(b, "id", dj_node_attr(n, "id"));
    attr_out(b, "from", dj_node_attr(n, "to"));
    attr_out(b, "to", dj_node_attr(n, "from"));
    evbuffer_add_printf(b, "><error type='%s'><%s xmlns='" NS_STANZAS "'/></error></%s>", type, condition, n->name);
    dj_sess_send_buf(s, b);
    evbuffer_free(b);
}

/* Bounce a routed stanza back to its (local) sender as an error. */
static void bounce(struct dj_stanza *st, const char *type, const char *condition)
{
    struct dj_node *n = st->root;
    const char *t = dj_node_attr(n, "type");
    const char *from = dj_node_attr(n, "from");
    if ((t && !strcmp(t, "error")) || !from || !strcmp(n->name, "presence"))
        return;
    struct dj_jid j;
    if (dj_jid_parse(from, &j) < 0 || !j.resource[0])
        return;
    char bare[2 * DJ_JID_MAX + 2];
    struct dj_user *u = dj_user_get(dj_jid_bare(&j, bare, sizeof bare), false);
    for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
        if (!strcmp(o->resource, j.resource)) {
            dj_cmd_error(o, st, type, condition);
            return;
        }
}

/* ---- routing ------------------------------------------------------------------------------ */

/* Writes in flight (messages in the deliver chain on their way to offline
 * storage, roster stores), oldest first: each has a higher seq than the one
 * before. Callers wait for the ones that were there when they asked
 * (dj_after_writes). */
struct route_call {
    struct dj_hook_deliver d;
    struct dj_inflight w;
};
struct writes_waiter {
    uint64_t upto; /* wait for every write with seq < upto */
    void (*fn)(void *arg);
    void *arg;
    struct writes_waiter *next;
};
static struct dj_inflight *inflight_head, *inflight_tail;
static struct writes_waiter *waiters_head, *waiters_tail;
static uint64_t write_seq;
static bool route_redelivery; /* dj_route of a message taken back from offline storage */

static void waiters_run(void)
{
    /* thresholds grow along the list: stop at the first that must wait */
    while (waiters_head && (!inflight_head || inflight_head->seq >= waiters_head->upto)) {
        struct writes_waiter *w = waiters_head;
        waiters_head = w->next;
        if (!waiters_head)
            waiters_tail = NULL;
        w->fn(w->arg);
        free(w);
    }
}

void dj_inflight_begin(struct dj_inflight *e)
{
    e->seq = write_seq++;
    e->next = NULL;
    e->prev = inflight_tail;
    if (inflight_tail)
        inflight_tail->next = e;
    else
        inflight_head = e;
    inflight_tail = e;
}

void dj_inflight_end(struct dj_inflight *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        inflight_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        inflight_tail = e->prev;
    e->prev = e->next = NULL;
    waiters_run();
}

void dj_after_writes(void (*fn)(void *arg), void *arg)
{
    if (!inflight_head) {
        fn(arg);
        return;
    }
    struct writes_waiter *w = calloc(1, sizeof *w);
    if (!w) {
        fn(arg); /* out of memory: at least not never */
        return;
    }
    w->upto = write_seq;
    w->fn = fn;
    w->arg = arg;
    if (waiters_tail)
        waiters_tail->next = w;
    else
        waiters_head = w;
    waiters_tail = w;
}

static void deliver_done(struct dj_hook_call *call)
{
    struct route_call *rc = (struct route_call *)call;
    struct dj_hook_deliver *d = &rc->d;
    if (call->status == DJ_DECLINED) {
        dj.n.messages_dropped++;
        bounce(d->st, "cancel", "service-unavailable");
    } else if (call->status != DJ_OK) {
        bounce(d->st, "wait", "resource-constraint");
    }
    dj_stanza_free(d->st);
    free(d->to);
    dj_inflight_end(&rc->w); /* unlinks, then runs the waiters it held up */
    free(rc);
}

void dj_route(struct dj_stanza *st, const char *to)
{
    struct dj_node *n = st->root;
    struct dj_jid j;
    if (dj_jid_parse(to, &j) < 0) {
        bounce(st, "modify", "jid-malformed");
        dj_stanza_free(st);
        return;
    }
    if (dj_vhost_find(j.domain) < 0) {
        if (dj_s2s_send_node(j.domain, n) < 0)
            bounce(st, "cancel", "remote-server-not-found");
        dj_stanza_free(st);
        return;
    }
    char bare[2 * DJ_JID_MAX + 2];
    dj_jid_bare(&j, bare, sizeof bare);
    struct dj_user *u = j.node[0] ? dj_user_get(bare, false) : NULL;
    const char *type = dj_node_attr(n, "type");
    bool is_msg = !strcmp(n->name, "message"), is_iq = !strcmp(n->name, "iq");
    if (j.resource[0]) {
        for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
            if ((o->state == DJ_S_ACTIVE || o->state == DJ_S_DETACHED) && !strcmp(o->resource, j.resource)) {
                dj_sess_send_node(o, n);
                if (is_msg)
                    dj.n.messages_routed++;
                dj_stanza_free(st);
                return;
            }
        for (struct dj_rsess *r = u && !dj_cluster_local_only ? u->remote : NULL; r; r = r->next)
            if (!strcmp(r->resource, j.resource)) {
                char full[3 * DJ_JID_MAX + 3];
                dj_cluster_forward_node(r->node, dj_jid_full(&j, full, sizeof full), n);
                dj_stanza_free(st);
                return;
            }
        if (is_iq) {
            bounce(st, "cancel", "service-unavailable");
            dj_stanza_free(st);
            return;
        }
        if (!is_msg) {
            dj_stanza_free(st);
            return;
        }
        /* a message to an absent resource goes to the bare JID */
    }
    if (is_msg) {
        bool groupchat = type && !strcmp(type, "groupchat");
        bool error = type && !strcmp(type, "error");
        int sent = 0;
        int best = -129;
        struct dj_rsess *remote = u && !dj_cluster_local_only ? u->remote : NULL;
        for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
            if ((o->flags & DJ_F_AVAILABLE) && o->prio >= 0 && o->prio > best)
                best = o->prio;
        for (struct dj_rsess *r = remote; r; r = r->next)
            if (r->avail && r->prio >= 0 && r->prio > best)
                best = r->prio;
        if (!groupchat) {
            for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
                if ((o->flags & DJ_F_AVAILABLE) && o->prio == best) {
                    dj_sess_send_node(o, n);
                    sent++;
                }
            for (struct dj_rsess *r = remote; r; r = r->next)
                if (r->avail && r->prio == best) {
                    char full[3 * DJ_JID_MAX + 3];
                    snprintf(full, sizeof full, "%s/%s", bare, r->resource);
                    if (dj_cluster_forward_node(r->node, full, n) == 0)
                        sent++;
                }
        }
        if (sent) {
            dj.n.messages_routed++;
            dj_stanza_free(st);
            return;
        }
        if (error || (type && !strcmp(type, "headline"))) {
            dj_stanza_free(st);
            return;
        }
        if (groupchat) {
            bounce(st, "cancel", "service-unavailable");
            dj_stanza_free(st);
            return;
        }
        struct route_call *rc = calloc(1, sizeof *rc);
        if (!rc) {
            dj_stanza_free(st);
            return;
        }
        rc->d.st = st;
        rc->d.to = strdup(bare);
        rc->d.redelivery = route_redelivery;
        dj_inflight_begin(&rc->w);
        dj_hook_run(DJ_HOOK_DELIVER, &rc->d.call, deliver_done);
        return;
    }
    if (!strcmp(n->name, "presence")) {
        for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
            if (o->flags & DJ_F_AVAILABLE)
                dj_sess_send_node(o, n);
        if (u && u->remote && !dj_cluster_local_only) {
            struct evbuffer *b = evbuffer_new();
            dj_xml_write(b, n);
            size_t len = evbuffer_get_length(b);
            dj_cluster_forward_available(u, (const char *)evbuffer_pullup(b, (ev_ssize_t)len), len);
            evbuffer_free(b);
        }
    }
    dj_stanza_free(st);
}

void dj_cluster_deliver(struct dj_stanza *st, const char *to)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    const char *from = dj_node_attr(n, "from");
    struct dj_jid tj, fj;
    if (!strcmp(n->name, "presence") && type && from && dj_jid_parse(to, &tj) == 0 && dj_jid_parse(from, &fj) == 0 &&
        (!strcmp(type, "subscribe") || !strcmp(type, "subscribed") || !strcmp(type, "unsubscribe") ||
         !strcmp(type, "unsubscribed"))) {
        char tb[2 * DJ_JID_MAX + 2], fb[2 * DJ_JID_MAX + 2];
        dj_roster_subscription_in(st, type, dj_jid_bare(&tj, tb, sizeof tb), dj_jid_bare(&fj, fb, sizeof fb));
        dj_stanza_free(st);
        return;
    }
    dj_route(st, to);
}

/* ---- IQ -------------------------------------------------------------------------------------- */

void dj_disco_features(struct evbuffer *out)
{
    static const char *core[] = { NS_DISCO_INFO, NS_DISCO_ITEMS, "jabber:iq:roster", "urn:xmpp:delay", "msgoffline" };
    for (size_t i = 0; i < sizeof core / sizeof core[0]; i++)
        evbuffer_add_printf(out, "<feature var='%s'/>", core[i]);
    if (dj.cfg.inband_registration)
        evbuffer_add_printf(out, "<feature var='" NS_REGISTER "'/>");
    const char **f;
    int n = dj_hook_features(&f);
    for (int i = 0; i < n; i++)
        evbuffer_add_printf(out, "<feature var='%s'/>", f[i]);
}

static void disco_done(struct dj_hook_call *call)
{
    struct dj_hook_disco *h = (struct dj_hook_disco *)call;
    if (dj_sess_alive(h->sess)) {
        struct evbuffer *b = evbuffer_new();
        iq_open(b, h->st, "result");
        evbuffer_add_printf(b, "><query xmlns='" NS_DISCO_INFO "'");
        struct dj_node *q = dj_node_child(h->st->root, "query", NS_DISCO_INFO);
        attr_out(b, "node", dj_node_attr(q, "node"));
        if (h->account)
            evbuffer_add_printf(b, "><identity category='account' type='registered'/>");
        else
            evbuffer_add_printf(b, "><identity category='server' type='im' name='djabberd'/>");
        dj_disco_features(b);
        evbuffer_add_buffer(b, h->out);
        evbuffer_add_printf(b, "</query></iq>");
        dj_sess_send_buf(h->sess, b);
        evbuffer_free(b);
    }
    evbuffer_free(h->out);
    dj_stanza_free(h->st);
    dj_sess_put(h->sess);
    free(h);
}

/* The core's identity and features, then whatever the DiscoInfo chain adds. */
static void disco_info(struct dj_sess *s, struct dj_stanza *st, bool account)
{
    struct dj_hook_disco *h = calloc(1, sizeof *h);
    if (!h || !(h->out = evbuffer_new())) {
        free(h);
        dj_stanza_free(st);
        return;
    }
    h->sess = s;
    h->st = st;
    h->account = account;
    dj_sess_hold(s);
    dj_hook_run(DJ_HOOK_DISCO_INFO, &h->call, disco_done);
}

static void disco_items(struct dj_sess *s, struct dj_stanza *st)
{
    struct evbuffer *b = evbuffer_new();
    iq_open(b, st, "result");
    evbuffer_add_printf(b, "><query xmlns='" NS_DISCO_ITEMS "'/></iq>");
    dj_sess_send_buf(s, b);
    evbuffer_free(b);
}

static void iq_hook_done(struct dj_hook_call *call)
{
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    if (call->status == DJ_DECLINED && dj_sess_alive(h->sess))
        dj_cmd_error(h->sess, h->st, "cancel", "service-unavailable");
    dj_sess_put(h->sess);
    dj_stanza_free(h->st);
    free(h);
}

/* XEP-0077 in-band registration (before authentication; removal after). */
struct reg_call {
    struct dj_hook_register h;
    struct dj_sess *s;
    struct dj_stanza *st;
};

static void register_done(struct dj_hook_call *call)
{
    struct reg_call *r = (struct reg_call *)call;
    if (dj_sess_alive(r->s)) {
        if (call->status == DJ_OK) {
            dj.n.registered++;
            iq_result_empty(r->s, r->st);
        } else if (call->status == DJ_CONFLICT)
            dj_cmd_error(r->s, r->st, "cancel", "conflict");
        else
            dj_cmd_error(r->s, r->st, "cancel", "not-allowed");
    }
    memset(r->h.password, 0, sizeof r->h.password);
    dj_sess_put(r->s);
    dj_stanza_free(r->st);
    free(r);
}

void dj_register_iq(struct dj_sess *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    struct dj_node *q = dj_node_child(n, "query", NS_REGISTER);
    if (type && !strcmp(type, "get")) {
        struct evbuffer *b = evbuffer_new();
        iq_open(b, st, "result");
        evbuffer_add_printf(b, "><query xmlns='" NS_REGISTER "'><instructions>Choose a user name and password."
                               "</instructions><username/><password/></query></iq>");
        dj_sess_send_buf(s, b);
        evbuffer_free(b);
        dj_stanza_free(st);
        return;
    }
    if (!type || strcmp(type, "set") || s->state != DJ_S_AUTH) {
        dj_cmd_error(s, st, "cancel", s->state == DJ_S_AUTH ? "bad-request" : "not-allowed");
        dj_stanza_free(st);
        return;
    }
    size_t ul = 0, pl = 0;
    struct dj_node *un = dj_node_child(q, "username", NULL), *pn = dj_node_child(q, "password", NULL);
    const char *user = un ? dj_node_text_of(st, un, &ul) : NULL;
    const char *pw = pn ? dj_node_text_of(st, pn, &pl) : NULL;
    struct reg_call *r = calloc(1, sizeof *r);
    bool ok = user && pw && ul > 0 && pl > 0 && ul < sizeof r->h.user && pl < sizeof r->h.password;
    for (size_t i = 0; ok && i < ul; i++) {
        unsigned char ch = (unsigned char)user[i];
        if (ch <= ' ' || strchr("\"&'/:<>@", ch) || ch == 0x7f)
            ok = false;
    }
    if (!r || !ok) {
        free(r);
        dj_cmd_error(s, st, "modify", "not-acceptable");
        dj_stanza_free(st);
        return;
    }
    for (size_t i = 0; i < ul; i++)
        r->h.user[i] = (char)(user[i] >= 'A' && user[i] <= 'Z' ? user[i] + 32 : user[i]);
    memcpy(r->h.password, pw, pl);
    r->h.vhost = s->vhost;
    r->s = s;
    r->st = st;
    dj_sess_hold(s);
    dj_hook_run(DJ_HOOK_REGISTER, &r->h.call, register_done);
}

static void handle_iq(struct dj_sess *s, struct dj_stanza *st, const char *to)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    const char *id = dj_node_attr(n, "id");
    if (!type || !id ||
        (strcmp(type, "get") && strcmp(type, "set") && strcmp(type, "result") && strcmp(type, "error"))) {
        dj_cmd_error(s, st, "modify", "bad-request");
        dj_stanza_free(st);
        return;
    }
    char mybare[2 * DJ_JID_MAX + 2];
    dj_sess_bare(s, mybare, sizeof mybare);
    struct dj_jid j;
    bool to_server = !to, to_self = !to, to_bare_other = false;
    if (to) {
        if (dj_jid_parse(to, &j) < 0) {
            dj_cmd_error(s, st, "modify", "jid-malformed");
            dj_stanza_free(st);
            return;
        }
        char tb[2 * DJ_JID_MAX + 2];
        dj_jid_bare(&j, tb, sizeof tb);
        to_server = !j.node[0] && !j.resource[0] && dj_vhost_find(j.domain) >= 0;
        to_self = !j.resource[0] && !strcmp(tb, mybare);
        to_bare_other = j.node[0] && !j.resource[0] && !to_self && dj_vhost_find(j.domain) >= 0;
    }
    if (!(to_server || to_self || to_bare_other)) {
        dj_route(st, to);
        return;
    }
    if (!strcmp(type, "result") || !strcmp(type, "error")) {
        dj_stanza_free(st);
        return;
    }
    struct dj_node *q = NULL;
    for (struct dj_node *c = n->child; c; c = c->next)
        if (c->name) {
            q = c;
            break;
        }
    const char *ns = q ? dj_node_ns(q) : NULL;
    if (!q || !ns) {
        dj_cmd_error(s, st, "modify", "bad-request");
        dj_stanza_free(st);
        return;
    }
    if (!strcmp(ns, "jabber:iq:roster") && !to_bare_other) {
        dj_roster_iq(s, st);
        dj_stanza_free(st);
        return;
    }
    if (!strcmp(ns, NS_DISCO_INFO) && !strcmp(type, "get")) {
        disco_info(s, st, !to_server);
        return;
    }
    if (!strcmp(ns, NS_DISCO_ITEMS) && !strcmp(type, "get")) {
        disco_items(s, st);
        dj_stanza_free(st);
        return;
    }
    if (!strcmp(ns, NS_REGISTER) && to_server) {
        dj_register_iq(s, st);
        return;
    }
    struct dj_hook_iq *h = calloc(1, sizeof *h);
    if (!h) {
        dj_stanza_free(st);
        return;
    }
    h->sess = s;
    h->st = st;
    dj_sess_hold(s);
    dj_hook_run(DJ_HOOK_C2S_IQ, &h->call, iq_hook_done);
}

/* ---- presence ------------------------------------------------------------------------------------ */

struct bcast {
    struct dj_sess *s; /* held */
    char *xml;         /* the presence to send */
    size_t len;
    bool initial, available;
};

void dj_send_to_available(struct dj_user *u, const char *xml, size_t len)
{
    for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
        if (o->flags & DJ_F_AVAILABLE)
            dj_sess_send(o, xml, len);
    if (u && u->remote && !dj_cluster_local_only)
        dj_cluster_forward_available(u, xml, len);
}

static void send_raw_to_available(struct dj_user *u, const char *xml, size_t len) { dj_send_to_available(u, xml, len); }

struct offline_call {
    struct dj_hook_list h;
    struct dj_sess *s;
};

struct one_stanza {
    struct dj_stanza *st;
};

static int one_stream(void *arg, const char *name, const char **attrs)
{
    (void)arg, (void)name, (void)attrs;
    return 0;
}

static int one_stanza(void *arg, struct dj_stanza *st)
{
    struct one_stanza *o = arg;
    if (o->st)
        dj_stanza_free(st);
    else
        o->st = st;
    return 0;
}

/* A stored message back into a stanza (NULL if it does not parse). */
static struct dj_stanza *stanza_from_xml(const char *xml, size_t len)
{
    static const struct dj_xml_cbs cbs = { one_stream, one_stanza };
    static const char hdr[] = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>";
    struct dj_xml_limits lim = { .max_stanza = len + 1024, .max_depth = 40, .max_attrs = 64 };
    struct one_stanza o = { NULL };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &o);
    if (!x)
        return NULL;
    if (dj_xml_feed(x, hdr, sizeof hdr - 1) != DJ_XML_OK || dj_xml_feed(x, xml, len) != DJ_XML_OK) {
        if (o.st)
            dj_stanza_free(o.st);
        o.st = NULL;
    }
    dj_xml_free(x);
    return o.st;
}

static void offline_done(struct dj_hook_call *call)
{
    struct offline_call *o = (struct offline_call *)call;
    for (int i = 0; i < o->h.n; i++) {
        if (dj_sess_alive(o->s) && o->s->user) {
            dj_sess_send(o->s, o->h.xml[i], strlen(o->h.xml[i]));
            dj.n.offline_delivered++;
        } else {
            /* the session went away while its fetch ran: the rows are deleted,
             * so the message goes to the account again (another resource, or
             * back into storage), never nowhere */
            struct dj_stanza *st = stanza_from_xml(o->h.xml[i], strlen(o->h.xml[i]));
            if (st) {
                route_redelivery = true;
                dj_route(st, o->h.bare);
                route_redelivery = false;
            } else {
                log_warn("djabberd: a stored message for %s does not parse; dropped", o->h.bare);
                dj.n.messages_dropped++;
            }
        }
        free(o->h.xml[i]);
    }
    free(o->h.xml);
    free(o->h.stamps);
    free(o->h.bare);
    dj_sess_put(o->s);
    free(o);
}

static void offline_fetch_now(void *arg)
{
    struct offline_call *oc = arg;
    if (!dj_sess_alive(oc->s) || !oc->s->user) {
        /* gone before the fetch: the messages stay stored */
        free(oc->h.bare);
        dj_sess_put(oc->s);
        free(oc);
        return;
    }
    dj_hook_run(DJ_HOOK_OFFLINE_FETCH, &oc->h.call, offline_done);
}

void dj_offline_fetch_for(struct dj_sess *s)
{
    char bare[2 * DJ_JID_MAX + 2];
    struct offline_call *oc = calloc(1, sizeof *oc);
    if (!oc)
        return;
    oc->s = s;
    dj_sess_hold(s);
    oc->h.bare = strdup(dj_sess_bare(s, bare, sizeof bare));
    dj_after_writes(offline_fetch_now, oc);
}

struct replay {
    struct dj_sess *s; /* held */
    char *node;
};

static void replay_with_roster(void *arg, struct dj_user *u)
{
    struct replay *rp = arg;
    if (u && dj_sess_alive(rp->s) && (rp->s->flags & DJ_F_AVAILABLE))
        for (int i = 0; i < u->nitems; i++) {
            struct dj_user *cu = (u->items[i].sub & DJ_SUB_TO) ? dj_user_get(u->items[i].jid, false) : NULL;
            for (struct dj_rsess *r = cu ? cu->remote : NULL; r; r = r->next)
                if (r->avail && r->presence && !strcmp(r->node, rp->node))
                    dj_sess_send(rp->s, r->presence, strlen(r->presence));
        }
    if (u)
        dj_user_maybe_free(u);
    dj_sess_put(rp->s);
    free(rp->node);
    free(rp);
}

void dj_cluster_offline_sync(const char *node, const char *jid, bool roster)
{
    struct dj_jid j;
    char bare[2 * DJ_JID_MAX + 2];
    if (dj_jid_parse(jid, &j) < 0 || !j.node[0])
        return;
    struct dj_user *u = dj_user_get(dj_jid_bare(&j, bare, sizeof bare), false);
    if (u && roster && u->sessions)
        dj_roster_reload(u);
    struct dj_sess *pick = NULL;
    for (struct dj_sess *o = u ? u->sessions : NULL; o; o = o->next_res)
        if (o->state == DJ_S_ACTIVE && (o->flags & DJ_F_AVAILABLE) && (!pick || !strcmp(o->resource, j.resource)))
            pick = o;
    if (!pick)
        return;
    dj_offline_fetch_for(pick);
    struct replay *rp = calloc(1, sizeof *rp);
    if (!rp || !(rp->node = strdup(node))) {
        free(rp);
        return;
    }
    rp->s = pick;
    dj_sess_hold(pick);
    dj_roster_with(bare, replay_with_roster, rp);
}

bool dj_is_remote(const char *jid)
{
    struct dj_jid j;
    return dj_jid_parse(jid, &j) == 0 && dj_vhost_find(j.domain) < 0;
}

static void send_probe(const char *from_bare, const char *to)
{
    struct evbuffer *e = evbuffer_new();
    evbuffer_add_printf(e, "<presence type='probe'");
    attr_out(e, "from", from_bare);
    attr_out(e, "to", to);
    evbuffer_add_printf(e, "/>");
    struct dj_jid j;
    char local[DJ_JID_MAX + 1];
    dj_jid_parse(from_bare, &j);
    snprintf(local, sizeof local, "%s", j.domain);
    dj_jid_parse(to, &j);
    dj_s2s_send_buf(local, j.domain, e);
    evbuffer_free(e);
}

struct probe_ctx {
    char *remote;
};

static void probe_with_roster(void *arg, struct dj_user *u)
{
    struct probe_ctx *p = arg;
    struct dj_roster_item *it = u ? dj_roster_find(u, p->remote) : NULL;
    if (it && (it->sub & DJ_SUB_FROM)) {
        int sent = 0;
        for (struct dj_sess *o = u->sessions; o; o = o->next_res)
            if ((o->flags & DJ_F_AVAILABLE) && o->presence) {
                dj_s2s_send_raw_to(o->presence, strlen(o->presence), p->remote);
                sent++;
            }
        if (!sent) {
            struct evbuffer *e = evbuffer_new();
            evbuffer_add_printf(e, "<presence type='unavailable'");
            attr_out(e, "from", u->bare);
            evbuffer_add_printf(e, "/>");
            size_t len = evbuffer_get_length(e);
            char *x = malloc(len + 1);
            evbuffer_remove(e, x, len);
            x[len] = 0;
            dj_s2s_send_raw_to(x, len, p->remote);
            free(x);
            evbuffer_free(e);
        }
    }
    if (u)
        dj_user_maybe_free(u);
    free(p->remote);
    free(p);
}

void dj_presence_probe(const char *local_bare, const char *remote_bare)
{
    struct probe_ctx *p = calloc(1, sizeof *p);
    if (!p)
        return;
    p->remote = strdup(remote_bare);
    dj_roster_with(local_bare, probe_with_roster, p);
}

static void broadcast_with_roster(void *arg, struct dj_user *u)
{
    struct bcast *b = arg;
    struct dj_sess *s = b->s;
    if (u && dj_sess_alive(s)) {
        for (int i = 0; i < u->nitems; i++) {
            struct dj_roster_item *it = &u->items[i];
            struct dj_user *cu = dj_user_get(it->jid, false);
            if ((it->sub & DJ_SUB_FROM) && cu)
                send_raw_to_available(cu, b->xml, b->len);
            else if ((it->sub & DJ_SUB_FROM) && dj_is_remote(it->jid))
                dj_s2s_send_raw_to(b->xml, b->len, it->jid);
            if (b->initial && (it->sub & DJ_SUB_TO) && dj_is_remote(it->jid))
                send_probe(u->bare, it->jid);
            if (b->initial && (it->sub & DJ_SUB_TO) && cu) {
                for (struct dj_sess *o = cu->sessions; o; o = o->next_res)
                    if ((o->flags & DJ_F_AVAILABLE) && o->presence)
                        dj_sess_send(s, o->presence, strlen(o->presence));
                for (struct dj_rsess *r = cu->remote; r; r = r->next)
                    if (r->avail && r->presence)
                        dj_sess_send(s, r->presence, strlen(r->presence));
            }
        }
        /* the account's own resources, this one included */
        send_raw_to_available(u, b->xml, b->len);
        if (b->initial) {
            for (struct dj_sess *o = u->sessions; o; o = o->next_res)
                if (o != s && (o->flags & DJ_F_AVAILABLE) && o->presence)
                    dj_sess_send(s, o->presence, strlen(o->presence));
            for (struct dj_rsess *r = u->remote; r; r = r->next)
                if (r->avail && r->presence)
                    dj_sess_send(s, r->presence, strlen(r->presence));
            /* subscription requests still waiting for an answer */
            for (int i = 0; i < u->nitems; i++)
                if (u->items[i].sub & DJ_SUB_PENDING_IN) {
                    struct evbuffer *e = evbuffer_new();
                    evbuffer_add_printf(e, "<presence type='subscribe'");
                    attr_out(e, "from", u->items[i].jid);
                    evbuffer_add_printf(e, "/>");
                    dj_sess_send_buf(s, e);
                    evbuffer_free(e);
                }
            /* messages kept while offline (XEP-0160), with their delay
             * stamps; after those still on their way into storage */
            dj_offline_fetch_for(s);
        }
    } else if (u && !b->available) {
        /* the session is gone: its unavailable still goes to the contacts */
        for (int i = 0; i < u->nitems; i++) {
            struct dj_user *cu = (u->items[i].sub & DJ_SUB_FROM) ? dj_user_get(u->items[i].jid, false) : NULL;
            if (cu)
                send_raw_to_available(cu, b->xml, b->len);
            else if ((u->items[i].sub & DJ_SUB_FROM) && dj_is_remote(u->items[i].jid))
                dj_s2s_send_raw_to(b->xml, b->len, u->items[i].jid);
        }
        send_raw_to_available(u, b->xml, b->len);
    }
    if (u)
        dj_user_maybe_free(u);
    dj_sess_put(s);
    free(b->xml);
    free(b);
}

static void broadcast(struct dj_sess *s, const char *xml, size_t len, bool initial, bool available)
{
    struct bcast *b = calloc(1, sizeof *b);
    if (!b)
        return;
    b->s = s;
    dj_sess_hold(s);
    b->xml = strndup(xml, len);
    b->len = len;
    b->initial = initial;
    b->available = available;
    char bare[2 * DJ_JID_MAX + 2];
    dj_roster_with(dj_sess_bare(s, bare, sizeof bare), broadcast_with_roster, b);
}

static char *node_to_string(const struct dj_node *n, size_t *len)
{
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, n);
    *len = evbuffer_get_length(b);
    char *x = malloc(*len + 1);
    if (x) {
        evbuffer_remove(b, x, *len);
        x[*len] = 0;
    }
    evbuffer_free(b);
    return x;
}

static void presence_alter(struct dj_sess *s, struct dj_stanza *st);

static void handle_presence(struct dj_sess *s, struct dj_stanza *st, const char *to)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    if (type && (!strcmp(type, "subscribe") || !strcmp(type, "subscribed") || !strcmp(type, "unsubscribe") ||
                 !strcmp(type, "unsubscribed"))) {
        struct dj_jid j;
        char tb[2 * DJ_JID_MAX + 2];
        if (!to || dj_jid_parse(to, &j) < 0 || !j.node[0]) {
            dj_cmd_error(s, st, "modify", "jid-malformed");
        } else
            dj_roster_subscription_out(s, st, type, dj_jid_bare(&j, tb, sizeof tb));
        dj_stanza_free(st);
        return;
    }
    if (type && !strcmp(type, "probe")) {
        dj_stanza_free(st);
        return;
    }
    if (type && strcmp(type, "unavailable") && strcmp(type, "error")) {
        dj_cmd_error(s, st, "modify", "bad-request");
        dj_stanza_free(st);
        return;
    }
    if (to) {
        dj_route(st, to); /* directed presence */
        return;
    }
    if (type && !strcmp(type, "error")) {
        dj_stanza_free(st);
        return;
    }
    presence_alter(s, st);
}

/* Broadcast presence goes through the AlterPresence chain one at a time per
 * session (a plugin may answer later), so presences are never reordered. */
struct dj_pres_wait {
    struct dj_stanza *st;
    struct dj_pres_wait *next;
};

static void presence_apply(struct dj_sess *s, struct dj_stanza *st);

static void presence_alter_done(struct dj_hook_call *call)
{
    struct dj_hook_iq *h = (struct dj_hook_iq *)call;
    struct dj_sess *s = h->sess;
    s->pres_busy = false;
    if (call->status != DJ_REJECT && dj_sess_alive(s) && s->user)
        presence_apply(s, h->st);
    else
        dj_stanza_free(h->st);
    free(h);
    /* the next one that waited */
    struct dj_pres_wait *w = s->pres_wait;
    if (w && dj_sess_alive(s)) {
        s->pres_wait = w->next;
        struct dj_stanza *next = w->st;
        free(w);
        presence_alter(s, next);
    }
    dj_sess_put(s);
}

static void presence_alter(struct dj_sess *s, struct dj_stanza *st)
{
    if (s->pres_busy) {
        struct dj_pres_wait *w = calloc(1, sizeof *w), **pp = &s->pres_wait;
        int n = 0;
        while (*pp) {
            pp = &(*pp)->next;
            n++;
        }
        if (!w || n >= 16) { /* a client flooding presence loses the oldest-pending excess */
            free(w);
            dj_stanza_free(st);
            return;
        }
        w->st = st;
        *pp = w;
        return;
    }
    struct dj_hook_iq *h = calloc(1, sizeof *h);
    if (!h) {
        dj_stanza_free(st);
        return;
    }
    h->sess = s;
    h->st = st;
    s->pres_busy = true;
    dj_sess_hold(s);
    dj_hook_run(DJ_HOOK_ALTER_PRESENCE, &h->call, presence_alter_done);
}

void dj_cmd_presence_drop(struct dj_sess *s)
{
    while (s->pres_wait) {
        struct dj_pres_wait *w = s->pres_wait;
        s->pres_wait = w->next;
        dj_stanza_free(w->st);
        free(w);
    }
}

static void presence_apply(struct dj_sess *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    bool available = !type;
    struct dj_node *pr = dj_node_child(n, "priority", NULL);
    if (pr) {
        int p = atoi(dj_node_text_of(st, pr, NULL));
        s->prio = (int8_t)(p < -128 ? -128 : p > 127 ? 127 : p);
    }
    size_t len;
    char *xml = node_to_string(n, &len);
    dj_stanza_free(st);
    if (!xml)
        return;
    bool initial = available && !(s->flags & DJ_F_AVAILABLE);
    free(s->presence);
    s->presence = NULL;
    if (available) {
        s->presence = xml;
        s->flags |= DJ_F_AVAILABLE;
    } else if (!(s->flags & DJ_F_AVAILABLE)) {
        free(xml);
        return;
    } else {
        s->flags &= (uint8_t)~DJ_F_AVAILABLE;
    }
    dj_cluster_announce(s, false);
    broadcast(s, xml, len, initial, true);
    if (!available)
        free(xml);
}

void dj_cmd_session_gone(struct dj_sess *s)
{
    struct dj_user *u = s->user;
    if (!u)
        return;
    bool was_available = s->flags & DJ_F_AVAILABLE;
    s->flags &= (uint8_t)~DJ_F_AVAILABLE;
    for (struct dj_sess **pp = &u->sessions; *pp; pp = &(*pp)->next_res)
        if (*pp == s) {
            *pp = s->next_res;
            break;
        }
    s->next_res = NULL;
    s->user = NULL;
    dj_cluster_announce(s, true);
    dj.nbound--;
    dj.per_vhost[s->vhost]--;
    if (was_available) {
        char full[3 * DJ_JID_MAX + 3];
        struct evbuffer *e = evbuffer_new();
        evbuffer_add_printf(e, "<presence type='unavailable'");
        attr_out(e, "from", dj_sess_jid(s, full, sizeof full));
        evbuffer_add_printf(e, "/>");
        size_t len = evbuffer_get_length(e);
        char *xml = malloc(len + 1);
        evbuffer_remove(e, xml, len);
        xml[len] = 0;
        evbuffer_free(e);
        s->state = DJ_S_CLOSED; /* the broadcast must not write to this session */
        u->pending++;           /* the broadcast may finish at once and drop u */
        broadcast(s, xml, len, false, false);
        u->pending--;
        free(xml);
    }
    dj_user_maybe_free(u);
}

/* ---- the stanza switch ------------------------------------------------------------------------------- */

void dj_cmd_stanza(struct dj_sess *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    char full[3 * DJ_JID_MAX + 3];
    dj_node_set_attr(st, n, "from", dj_sess_jid(s, full, sizeof full));
    const char *to = dj_node_attr(n, "to");
    if (to && !*to)
        to = NULL;
    if (log_command_enabled()) { /* -vv: the stanza's kind and addressing, never its payload */
        char cmd[3 * DJ_JID_MAX + 200];
        const char *ty = dj_node_attr(n, "type"), *id = dj_node_attr(n, "id"), *ns = NULL;
        if (!strcmp(n->name, "iq"))
            dj_iq_payload(st, &ns);
        int k = snprintf(cmd, sizeof cmd, "%s type=%s id=%.64s to=%s%s%s", n->name, ty ? ty : "-", id ? id : "-",
                         to ? to : "-", ns ? " ns=" : "", ns ? ns : "");
        log_command(full, cmd, k > 0 ? (size_t)k : 0, false, to && dj_is_remote(to) ? "remote" : "local",
                    to && dj_is_remote(to) ? 6 : 5);
    }
    if (!strcmp(n->name, "iq")) {
        handle_iq(s, st, to);
    } else if (!strcmp(n->name, "message")) {
        char bare[2 * DJ_JID_MAX + 2];
        if (!to)
            to = dj_sess_bare(s, bare, sizeof bare);
        struct dj_jid j;
        if (dj_jid_parse(to, &j) == 0 && !j.node[0] && dj_vhost_find(j.domain) >= 0) {
            dj_stanza_free(st); /* to the server itself: nothing answers messages */
            return;
        }
        char *t = strdup(to);
        dj_route(st, t);
        free(t);
    } else if (!strcmp(n->name, "presence")) {
        handle_presence(s, st, to);
    } else {
        dj_sess_stream_error(s, "unsupported-stanza-type", NULL);
        dj_stanza_free(st);
    }
}

/* ---- helpers for the plugins ---------------------------------------------------------------------------- */

struct dj_node *dj_iq_payload(struct dj_stanza *st, const char **ns)
{
    for (struct dj_node *c = st->root->child; c; c = c->next)
        if (c->name) {
            *ns = dj_node_ns(c);
            return c;
        }
    *ns = NULL;
    return NULL;
}

void dj_iq_result(struct dj_sess *s, struct dj_stanza *st, const char *payload)
{
    struct evbuffer *b = evbuffer_new();
    iq_open(b, st, "result");
    if (payload)
        evbuffer_add_printf(b, ">%s</iq>", payload);
    else
        evbuffer_add(b, "/>", 2);
    dj_sess_send_buf(s, b);
    evbuffer_free(b);
}
