/* roster: the accounts held in memory (online ones, and ones whose roster a
 * subscription is changing), their rosters, roster IQs with versioning
 * (RFC 6121 2.6) and the presence-subscription state machine (RFC 6121 3,
 * Appendix A).
 *
 * A roster is loaded once through the RosterGet chain and then changed in
 * memory; every change is written through the RosterSetItem chain, and the
 * client's IQ result and the roster pushes go out only after the store said
 * it is durable. An account leaves memory when it has no session and no
 * store in flight. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/hash.h"
#include "common/log.h"

#define NS_ROSTER "jabber:iq:roster"

struct dj_roster_wait {
    void (*fn)(void *arg, struct dj_user *u);
    void *arg;
    struct dj_roster_wait *next;
};

/* ---- the account table --------------------------------------------------------------- */

static size_t bucket_of(const char *bare) { return (size_t)(hash64(bare, strlen(bare), 0x6a62) & (dj.nbuckets - 1)); }

static void grow(void)
{
    size_t nb = dj.nbuckets ? dj.nbuckets * 2 : 1024;
    struct dj_user **t = calloc(nb, sizeof *t);
    if (!t)
        return;
    size_t old = dj.nbuckets;
    struct dj_user **ot = dj.users;
    dj.users = t;
    dj.nbuckets = nb;
    for (size_t i = 0; i < old; i++)
        for (struct dj_user *u = ot[i], *nx; u; u = nx) {
            nx = u->hnext;
            size_t b = bucket_of(u->bare);
            u->hnext = t[b];
            t[b] = u;
        }
    free(ot);
}

struct dj_user *dj_user_get(const char *bare, bool create)
{
    if (dj.nbuckets == 0) {
        if (!create)
            return NULL;
        grow();
        if (!dj.nbuckets)
            return NULL;
    }
    for (struct dj_user *u = dj.users[bucket_of(bare)]; u; u = u->hnext)
        if (!strcmp(u->bare, bare))
            return u;
    if (!create)
        return NULL;
    if (dj.nusers >= dj.nbuckets)
        grow();
    struct dj_user *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->bare = strdup(bare);
    size_t b = bucket_of(bare);
    u->hnext = dj.users[b];
    dj.users[b] = u;
    dj.nusers++;
    return u;
}

void dj_roster_free_items(struct dj_user *u)
{
    for (int i = 0; i < u->nitems; i++) {
        free(u->items[i].jid);
        free(u->items[i].name);
        free(u->items[i].groups);
    }
    free(u->items);
    u->items = NULL;
    u->nitems = u->capitems = 0;
}

void dj_user_maybe_free(struct dj_user *u)
{
    if (u->sessions || u->pending || u->waiters || u->roster_state == DJ_ROSTER_LOADING)
        return;
    if (u->remote) {
        /* online on another node only: that node owns the roster; ours
         * would go stale, so it is dropped and reloaded when needed */
        dj_roster_free_items(u);
        u->roster_state = DJ_ROSTER_NONE;
        return;
    }
    struct dj_user **pp = &dj.users[bucket_of(u->bare)];
    while (*pp && *pp != u)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = u->hnext;
    dj.nusers--;
    dj_roster_free_items(u);
    free(u->bare);
    free(u);
}

/* ---- items ---------------------------------------------------------------------------- */

struct dj_roster_item *dj_roster_find(struct dj_user *u, const char *jid)
{
    for (int i = 0; i < u->nitems; i++)
        if (!strcmp(u->items[i].jid, jid))
            return &u->items[i];
    return NULL;
}

static struct dj_roster_item *item_add(struct dj_user *u, const char *jid)
{
    if (u->nitems >= dj.cfg.max_roster)
        return NULL;
    if (u->nitems == u->capitems) {
        int nc = u->capitems ? u->capitems * 2 : 8;
        struct dj_roster_item *n = realloc(u->items, sizeof *n * (size_t)nc);
        if (!n)
            return NULL;
        u->items = n;
        u->capitems = nc;
    }
    struct dj_roster_item *it = &u->items[u->nitems++];
    memset(it, 0, sizeof *it);
    it->jid = strdup(jid);
    it->hidden = true;
    return it;
}

static void item_remove(struct dj_user *u, const char *jid)
{
    for (int i = 0; i < u->nitems; i++)
        if (!strcmp(u->items[i].jid, jid)) {
            free(u->items[i].jid);
            free(u->items[i].name);
            free(u->items[i].groups);
            u->items[i] = u->items[--u->nitems];
            return;
        }
}

static const char *sub_name(uint8_t sub)
{
    switch (sub & (DJ_SUB_TO | DJ_SUB_FROM)) {
    case DJ_SUB_TO: return "to";
    case DJ_SUB_FROM: return "from";
    case DJ_SUB_TO | DJ_SUB_FROM: return "both";
    default: return "none";
    }
}

void dj_roster_item_xml(struct evbuffer *out, const struct dj_roster_item *it, const char *jid_if_removed)
{
    evbuffer_add_printf(out, "<item jid='");
    const char *jid = it ? it->jid : jid_if_removed;
    dj_xml_escape(out, jid, strlen(jid));
    evbuffer_add_printf(out, "'");
    if (!it) {
        evbuffer_add_printf(out, " subscription='remove'/>");
        return;
    }
    if (it->name) {
        evbuffer_add_printf(out, " name='");
        dj_xml_escape(out, it->name, strlen(it->name));
        evbuffer_add_printf(out, "'");
    }
    evbuffer_add_printf(out, " subscription='%s'", sub_name(it->sub));
    if (it->sub & DJ_SUB_ASK)
        evbuffer_add_printf(out, " ask='subscribe'");
    if (!it->groups) {
        evbuffer_add_printf(out, "/>");
        return;
    }
    evbuffer_add_printf(out, ">");
    const char *g = it->groups;
    while (*g) {
        const char *e = strchr(g, '\n');
        size_t l = e ? (size_t)(e - g) : strlen(g);
        evbuffer_add_printf(out, "<group>");
        dj_xml_escape(out, g, l);
        evbuffer_add_printf(out, "</group>");
        g += l;
        if (*g == '\n')
            g++;
    }
    evbuffer_add_printf(out, "</item>");
}

/* ---- loading -------------------------------------------------------------------------------- */

struct load_call {
    struct dj_hook_roster h;
    struct dj_user *u;
};

static void load_done(struct dj_hook_call *call)
{
    struct load_call *lc = (struct load_call *)call;
    struct dj_user *u = lc->u;
    if (call->status == DJ_OK || call->status == DJ_DECLINED) {
        dj_roster_free_items(u);
        for (int i = 0; i < lc->h.nrows; i++) {
            struct dj_roster_row *r = &lc->h.rows[i];
            struct dj_roster_item *it = item_add(u, r->jid);
            if (it) {
                it->name = r->name;
                it->groups = r->groups;
                it->sub = (uint8_t)r->sub;
                it->hidden =
                    (r->sub & ~DJ_SUB_PENDING_IN) == 0 && !r->name && !r->groups && (r->sub & DJ_SUB_PENDING_IN);
                r->name = r->groups = NULL;
            }
        }
        u->ver = lc->h.ver;
        u->roster_state = DJ_ROSTER_LOADED;
    } else {
        u->roster_state = DJ_ROSTER_FAILED;
        log_warn("djabberd: roster of %s could not be loaded", u->bare);
    }
    for (int i = 0; i < lc->h.nrows; i++) {
        free(lc->h.rows[i].jid);
        free(lc->h.rows[i].name);
        free(lc->h.rows[i].groups);
    }
    free(lc->h.rows);
    free(lc->h.bare);
    free(lc);
    struct dj_roster_wait *w = u->waiters;
    u->waiters = NULL;
    bool ok = u->roster_state == DJ_ROSTER_LOADED;
    u->pending++; /* keep u while the waiters run */
    while (w) {
        struct dj_roster_wait *n = w->next;
        if (w->fn)
            w->fn(w->arg, ok ? u : NULL);
        free(w);
        w = n;
    }
    if (u->reload_after_load) {
        /* a peer node asked for a reload while this load ran: it may have
         * read the database before that node's change */
        u->reload_after_load = false;
        dj_roster_reload(u);
    }
    u->pending--;
    dj_user_maybe_free(u);
}

/* ---- reloading (another cluster node changed the stored roster) ----------------------------------- */

struct reload_call {
    struct dj_hook_roster h;
    struct dj_user *u;
    uint32_t commits; /* u->commits when the read was asked */
};

static void push(struct dj_user *u, const struct dj_roster_item *it, const char *jid);
static void deliver_sub(struct dj_user *u, const char *type, const char *from);

static bool str_eq(const char *a, const char *b) { return a == b || (a && b && !strcmp(a, b)); }

static void reload_apply(struct dj_user *u, struct dj_roster_row *rows, int n, int64_t ver)
{
    bool any = false;
    /* items gone from the store */
    for (int i = 0; i < u->nitems;) {
        bool kept = false;
        for (int k = 0; k < n && !kept; k++)
            kept = !strcmp(rows[k].jid, u->items[i].jid);
        if (kept) {
            i++;
            continue;
        }
        char *jid = strdup(u->items[i].jid);
        bool hidden = u->items[i].hidden;
        item_remove(u, jid);
        if (!any)
            u->ver = ver > u->ver ? ver : u->ver + 1;
        any = true;
        if (!hidden && jid)
            push(u, NULL, jid);
        free(jid);
    }
    for (int k = 0; k < n; k++) {
        struct dj_roster_row *r = &rows[k];
        bool hidden = (r->sub & ~DJ_SUB_PENDING_IN) == 0 && !r->name && !r->groups && (r->sub & DJ_SUB_PENDING_IN);
        struct dj_roster_item *it = dj_roster_find(u, r->jid);
        bool was_pending = it && (it->sub & DJ_SUB_PENDING_IN);
        if (it && it->sub == (uint8_t)r->sub && it->hidden == hidden && str_eq(it->name, r->name) &&
            str_eq(it->groups, r->groups))
            continue;
        if (!it && !(it = item_add(u, r->jid)))
            continue; /* max_roster */
        free(it->name);
        free(it->groups);
        it->name = r->name;
        it->groups = r->groups;
        r->name = r->groups = NULL;
        it->sub = (uint8_t)r->sub;
        it->hidden = hidden;
        if (!any)
            u->ver = ver > u->ver ? ver : u->ver + 1;
        any = true;
        if (!hidden)
            push(u, it, NULL);
        if ((it->sub & DJ_SUB_PENDING_IN) && !was_pending)
            deliver_sub(u, "subscribe", it->jid);
    }
}

static void reload_done(struct dj_hook_call *call)
{
    struct reload_call *rc = (struct reload_call *)call;
    struct dj_user *u = rc->u;
    bool ok = call->status == DJ_OK || call->status == DJ_DECLINED;
    bool again = false;
    if (ok && u->roster_state == DJ_ROSTER_LOADED) {
        if (u->commits != rc->commits)
            again = true; /* a change of ours went in after the read was asked: read again */
        else
            reload_apply(u, rc->h.rows, rc->h.nrows, rc->h.ver);
    } else if (!ok)
        log_warn("djabberd: roster of %s could not be reloaded", u->bare);
    for (int i = 0; i < rc->h.nrows; i++) {
        free(rc->h.rows[i].jid);
        free(rc->h.rows[i].name);
        free(rc->h.rows[i].groups);
    }
    free(rc->h.rows);
    free(rc->h.bare);
    free(rc);
    if (again)
        dj_roster_reload(u);
    u->pending--;
    dj_user_maybe_free(u);
}

void dj_roster_reload(struct dj_user *u)
{
    if (u->roster_state == DJ_ROSTER_LOADING) {
        u->reload_after_load = true;
        return;
    }
    if (u->roster_state != DJ_ROSTER_LOADED)
        return; /* the next load reads the store anyway */
    struct reload_call *rc = calloc(1, sizeof *rc);
    if (!rc)
        return;
    rc->u = u;
    rc->commits = u->commits;
    rc->h.bare = strdup(u->bare);
    u->pending++;
    dj_hook_run(DJ_HOOK_ROSTER_LOAD, &rc->h.call, reload_done);
}

void dj_roster_with(const char *bare, void (*fn)(void *arg, struct dj_user *u), void *arg)
{
    struct dj_user *u = dj_user_get(bare, true);
    if (!u) {
        if (fn)
            fn(arg, NULL);
        return;
    }
    if (u->roster_state == DJ_ROSTER_LOADED) {
        if (fn)
            fn(arg, u);
        else
            dj_user_maybe_free(u);
        return;
    }
    struct dj_roster_wait *w = calloc(1, sizeof *w);
    if (!w) {
        if (fn)
            fn(arg, NULL);
        return;
    }
    w->fn = fn;
    w->arg = arg;
    w->next = u->waiters;
    u->waiters = w;
    if (u->roster_state == DJ_ROSTER_LOADING)
        return;
    u->roster_state = DJ_ROSTER_LOADING;
    struct load_call *lc = calloc(1, sizeof *lc);
    if (!lc) {
        u->roster_state = DJ_ROSTER_FAILED;
        return;
    }
    lc->u = u;
    lc->h.bare = strdup(bare);
    dj_hook_run(DJ_HOOK_ROSTER_LOAD, &lc->h.call, load_done);
}

/* ---- storing + pushing ---------------------------------------------------------------------------- */

struct commit_call {
    struct dj_hook_roster_item h;
    struct dj_user *u;
    struct dj_inflight w; /* a cluster peer's sync waits for it (dj_after_writes) */
};

static void push(struct dj_user *u, const struct dj_roster_item *it, const char *jid)
{
    static unsigned push_id;
    for (struct dj_sess *o = u->sessions; o; o = o->next_res) {
        if (!(o->flags & DJ_F_INTERESTED))
            continue;
        char full[3 * DJ_JID_MAX + 3];
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "<iq type='set' id='push%u' to='", ++push_id);
        dj_sess_jid(o, full, sizeof full);
        dj_xml_escape(b, full, strlen(full));
        evbuffer_add_printf(b, "'><query xmlns='" NS_ROSTER "' ver='%lld'>", (long long)u->ver);
        dj_roster_item_xml(b, it, jid);
        evbuffer_add_printf(b, "</query></iq>");
        dj_sess_send_buf(o, b);
        evbuffer_free(b);
    }
}

static void commit_done(struct dj_hook_call *call)
{
    struct commit_call *cc = (struct commit_call *)call;
    struct dj_user *u = cc->u;
    bool ok = call->status == DJ_OK || call->status == DJ_DECLINED;
    if (ok) {
        struct dj_roster_item *it = cc->h.removed ? NULL : dj_roster_find(u, cc->h.row.jid);
        if (!it || !it->hidden)
            push(u, it, cc->h.row.jid);
    }
    if (cc->h.user_done)
        cc->h.user_done(cc->h.user_arg, ok);
    u->pending--;
    free(cc->h.bare);
    free(cc->h.row.jid);
    free(cc->h.row.name);
    free(cc->h.row.groups);
    u->pending++; /* the waiters dj_inflight_end runs must not find u freed */
    dj_inflight_end(&cc->w);
    free(cc);
    u->pending--;
    dj_user_maybe_free(u);
}

void dj_roster_commit(struct dj_user *u, const char *jid, bool removed, void (*done)(void *arg, bool ok), void *arg)
{
    struct commit_call *cc = calloc(1, sizeof *cc);
    if (!cc) {
        if (done)
            done(arg, false);
        return;
    }
    struct dj_roster_item *it = removed ? NULL : dj_roster_find(u, jid);
    if (!removed && !it)
        removed = true;
    if (removed)
        item_remove(u, jid);
    u->ver++;
    cc->u = u;
    cc->h.bare = strdup(u->bare);
    cc->h.row.jid = strdup(jid);
    if (it) {
        cc->h.row.name = it->name ? strdup(it->name) : NULL;
        cc->h.row.groups = it->groups ? strdup(it->groups) : NULL;
        cc->h.row.sub = it->sub;
    }
    cc->h.removed = removed;
    cc->h.ver = u->ver;
    cc->h.user_done = done;
    cc->h.user_arg = arg;
    u->pending++;
    u->commits++;
    dj_inflight_begin(&cc->w);
    dj_hook_run(DJ_HOOK_ROSTER_STORE, &cc->h.call, commit_done);
}

/* ---- roster IQs -------------------------------------------------------------------------------------- */

struct iq_ctx {
    struct dj_sess *s;
    char *id;
    char *xml_get_ver; /* get: the client's ver */
    bool is_get, has_ver;
    /* set */
    char *jid, *name, *groups;
    bool remove;
};

static void iq_ctx_free(struct iq_ctx *x)
{
    dj_sess_put(x->s);
    free(x->id);
    free(x->xml_get_ver);
    free(x->jid);
    free(x->name);
    free(x->groups);
    free(x);
}

static void iq_reply_simple(struct iq_ctx *x, const char *type, const char *cond)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<iq type='%s' id='", type);
    dj_xml_escape(b, x->id, strlen(x->id));
    if (cond)
        evbuffer_add_printf(b, "'><error type='%s'><%s xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>",
                            !strcmp(cond, "internal-server-error") ? "wait" : "modify", cond);
    else
        evbuffer_add_printf(b, "'/>");
    dj_sess_send_buf(x->s, b);
    evbuffer_free(b);
}

static void set_done(void *arg, bool ok)
{
    struct iq_ctx *x = arg;
    if (dj_sess_alive(x->s))
        iq_reply_simple(x, ok ? "result" : "error", ok ? NULL : "internal-server-error");
    iq_ctx_free(x);
}

static void send_sub(const char *type, const char *from, const char *to);

static void iq_with_roster(void *arg, struct dj_user *u)
{
    struct iq_ctx *x = arg;
    if (!dj_sess_alive(x->s)) {
        iq_ctx_free(x);
        if (u)
            dj_user_maybe_free(u);
        return;
    }
    if (!u) {
        iq_reply_simple(x, "error", "internal-server-error");
        iq_ctx_free(x);
        return;
    }
    if (x->is_get) {
        x->s->flags |= DJ_F_INTERESTED;
        char ver[32];
        snprintf(ver, sizeof ver, "%lld", (long long)u->ver);
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "<iq type='result' id='");
        dj_xml_escape(b, x->id, strlen(x->id));
        if (x->has_ver && x->xml_get_ver && !strcmp(x->xml_get_ver, ver)) {
            /* unchanged since the client's copy: empty result, pushes follow */
            evbuffer_add_printf(b, "'/>");
        } else {
            evbuffer_add_printf(b, "'><query xmlns='" NS_ROSTER "' ver='%s'>", ver);
            for (int i = 0; i < u->nitems; i++)
                if (!u->items[i].hidden)
                    dj_roster_item_xml(b, &u->items[i], NULL);
            evbuffer_add_printf(b, "</query></iq>");
        }
        dj_sess_send_buf(x->s, b);
        evbuffer_free(b);
        iq_ctx_free(x);
        return;
    }
    struct dj_roster_item *it = dj_roster_find(u, x->jid);
    if (x->remove) {
        if (!it || it->hidden) {
            iq_reply_simple(x, "error", "item-not-found");
            iq_ctx_free(x);
            return;
        }
        /* cancel both directions (RFC 6121 2.5.2) */
        if (it->sub & (DJ_SUB_TO | DJ_SUB_ASK))
            send_sub("unsubscribe", u->bare, x->jid);
        if (it->sub & (DJ_SUB_FROM | DJ_SUB_PENDING_IN))
            send_sub("unsubscribed", u->bare, x->jid);
        it = dj_roster_find(u, x->jid); /* the sends may have changed the array */
        dj_roster_commit(u, x->jid, true, set_done, x);
        return;
    }
    if (!it)
        it = item_add(u, x->jid);
    if (!it) {
        iq_reply_simple(x, "error", "not-allowed"); /* max_roster reached */
        iq_ctx_free(x);
        return;
    }
    free(it->name);
    free(it->groups);
    it->name = x->name;
    it->groups = x->groups;
    x->name = x->groups = NULL;
    it->hidden = false;
    dj_roster_commit(u, x->jid, false, set_done, x);
}

void dj_roster_iq(struct dj_sess *s, struct dj_stanza *st)
{
    struct dj_node *n = st->root;
    const char *type = dj_node_attr(n, "type");
    struct dj_node *q = dj_node_child(n, "query", NS_ROSTER);
    struct iq_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return;
    x->s = s;
    dj_sess_hold(s);
    x->id = strdup(dj_node_attr(n, "id"));
    if (!strcmp(type, "get")) {
        x->is_get = true;
        const char *v = dj_node_attr(q, "ver");
        x->has_ver = v != NULL;
        x->xml_get_ver = v ? strdup(v) : NULL;
    } else if (!strcmp(type, "set")) {
        struct dj_node *item = dj_node_child(q, "item", NULL);
        int nitems = 0;
        for (struct dj_node *c = q ? q->child : NULL; c; c = c->next)
            if (c->name)
                nitems++;
        struct dj_jid j;
        char bare[3 * DJ_JID_MAX + 3];
        const char *jid = dj_node_attr(item, "jid");
        if (nitems != 1 || !jid || dj_jid_parse(jid, &j) < 0) {
            iq_reply_simple(x, "error", "bad-request");
            iq_ctx_free(x);
            return;
        }
        x->jid = strdup(dj_jid_full(&j, bare, sizeof bare));
        const char *subs = dj_node_attr(item, "subscription");
        x->remove = subs && !strcmp(subs, "remove");
        const char *name = dj_node_attr(item, "name");
        x->name = name && *name ? strdup(name) : NULL;
        struct evbuffer *g = evbuffer_new();
        for (struct dj_node *c = item->child; c; c = c->next)
            if (c->name && !strcmp(c->name, "group")) {
                size_t gl;
                const char *gt = dj_node_text_of(st, c, &gl);
                if (gl == 0 || memchr(gt, '\n', gl))
                    continue;
                if (evbuffer_get_length(g))
                    evbuffer_add(g, "\n", 1);
                evbuffer_add(g, gt, gl);
            }
        size_t gl = evbuffer_get_length(g);
        if (gl) {
            x->groups = malloc(gl + 1);
            evbuffer_remove(g, x->groups, gl);
            x->groups[gl] = 0;
        }
        evbuffer_free(g);
        char mine[2 * DJ_JID_MAX + 2];
        if (!strcmp(x->jid, dj_sess_bare(s, mine, sizeof mine)) && !x->remove) {
            /* RFC 6121 2.3.2: the server MAY refuse the user's own JID; we store it */
        }
    } else {
        iq_ctx_free(x);
        return;
    }
    char bare[2 * DJ_JID_MAX + 2];
    dj_roster_with(dj_sess_bare(s, bare, sizeof bare), iq_with_roster, x);
}

/* ---- subscriptions -------------------------------------------------------------------------------------- */

struct sub_ctx {
    char *type, *from, *to; /* bare JIDs */
    bool inbound;
    bool tracked;         /* an inbound change to a local roster: in flight until stored */
    struct dj_inflight w; /* (a cluster peer's sync waits for it: dj_after_writes) */
};

static void sub_ctx_free(struct sub_ctx *x)
{
    if (x->tracked)
        dj_inflight_end(&x->w);
    free(x->type);
    free(x->from);
    free(x->to);
    free(x);
}

/* Presence of every available resource of `from` to every available
 * resource of `to` (after a subscription is approved), or unavailable. */
static void presence_between(const char *from, const char *to, bool available)
{
    struct dj_user *fu = dj_user_get(from, false), *tu = dj_user_get(to, false);
    if (!fu || !tu)
        return;
    for (struct dj_sess *f = fu->sessions; f; f = f->next_res) {
        if (!(f->flags & DJ_F_AVAILABLE))
            continue;
        if (available) {
            if (f->presence)
                dj_send_to_available(tu, f->presence, strlen(f->presence));
            continue;
        }
        char full[3 * DJ_JID_MAX + 3];
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "<presence type='unavailable' from='");
        dj_sess_jid(f, full, sizeof full);
        dj_xml_escape(b, full, strlen(full));
        evbuffer_add_printf(b, "'/>");
        size_t len = evbuffer_get_length(b);
        dj_send_to_available(tu, (const char *)evbuffer_pullup(b, (ev_ssize_t)len), len);
        evbuffer_free(b);
    }
    if (available)
        for (struct dj_rsess *r = fu->remote; r; r = r->next)
            if (r->avail && r->presence)
                dj_send_to_available(tu, r->presence, strlen(r->presence));
}

static void deliver_sub(struct dj_user *u, const char *type, const char *from)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "<presence type='%s' from='", type);
    dj_xml_escape(b, from, strlen(from));
    evbuffer_add_printf(b, "' to='");
    dj_xml_escape(b, u->bare, strlen(u->bare));
    evbuffer_add_printf(b, "'/>");
    size_t len = evbuffer_get_length(b);
    const char *x = (const char *)evbuffer_pullup(b, (ev_ssize_t)len);
    for (struct dj_sess *o = u->sessions; o; o = o->next_res)
        if (o->flags & DJ_F_AVAILABLE)
            dj_sess_send(o, x, len);
    evbuffer_free(b);
}

static void sub_stored(void *arg, bool ok)
{
    (void)ok;
    sub_ctx_free(arg);
}

/* Inbound processing at the contact (to), whose roster is loaded. */
static void sub_in_with_roster(void *arg, struct dj_user *u)
{
    struct sub_ctx *x = arg;
    if (!u) {
        sub_ctx_free(x);
        return;
    }
    struct dj_roster_item *it = dj_roster_find(u, x->from);
    const char *t = x->type;
    bool changed = false;
    if (!strcmp(t, "subscribe")) {
        if (it && (it->sub & DJ_SUB_FROM)) {
            /* already approved: answer for the user (RFC 6121 3.1.3) */
            send_sub("subscribed", u->bare, x->from);
        } else {
            if (!it)
                it = item_add(u, x->from);
            if (it && !(it->sub & DJ_SUB_PENDING_IN)) {
                it->sub |= DJ_SUB_PENDING_IN;
                changed = true;
            }
            deliver_sub(u, t, x->from);
        }
    } else if (!strcmp(t, "subscribed")) {
        if (it && (it->sub & DJ_SUB_ASK)) {
            it->sub = (uint8_t)((it->sub & ~DJ_SUB_ASK) | DJ_SUB_TO);
            changed = true;
            deliver_sub(u, t, x->from);
            presence_between(x->from, u->bare, true);
        }
    } else if (!strcmp(t, "unsubscribe")) {
        if (it && (it->sub & (DJ_SUB_FROM | DJ_SUB_PENDING_IN))) {
            it->sub &= (uint8_t) ~(DJ_SUB_FROM | DJ_SUB_PENDING_IN);
            changed = true;
            deliver_sub(u, t, x->from);
        }
    } else if (!strcmp(t, "unsubscribed")) {
        if (it && (it->sub & (DJ_SUB_TO | DJ_SUB_ASK))) {
            it->sub &= (uint8_t) ~(DJ_SUB_TO | DJ_SUB_ASK);
            changed = true;
            deliver_sub(u, t, x->from);
            presence_between(x->from, u->bare, false);
        }
    }
    if (changed) {
        bool drop = it->hidden && it->sub == 0;
        dj_roster_commit(u, x->from, drop, sub_stored, x); /* x ends once the change is stored */
    }
    dj_user_maybe_free(u);
    if (!changed)
        sub_ctx_free(x);
}

void dj_roster_subscription_in(struct dj_stanza *st, const char *type, const char *to_bare, const char *from_bare)
{
    (void)st;
    struct dj_jid j;
    if (dj_jid_parse(to_bare, &j) < 0)
        return;
    struct dj_user *lu = dj_cluster_local_only ? NULL : dj_user_get(to_bare, false);
    if (lu && !lu->sessions && lu->remote) {
        /* online on another node: that node runs the inbound side */
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "<presence type='%s' from='", type);
        dj_xml_escape(b, from_bare, strlen(from_bare));
        evbuffer_add_printf(b, "' to='");
        dj_xml_escape(b, to_bare, strlen(to_bare));
        evbuffer_add_printf(b, "'/>");
        size_t len = evbuffer_get_length(b);
        dj_cluster_forward(lu->remote->node, to_bare, (const char *)evbuffer_pullup(b, (ev_ssize_t)len), len);
        evbuffer_free(b);
        return;
    }
    if (dj_vhost_find(j.domain) < 0) {
        /* a remote contact: its server runs the inbound side */
        struct dj_jid fj;
        if (dj_jid_parse(from_bare, &fj) < 0)
            return;
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "<presence type='%s' from='", type);
        dj_xml_escape(b, from_bare, strlen(from_bare));
        evbuffer_add_printf(b, "' to='");
        dj_xml_escape(b, to_bare, strlen(to_bare));
        evbuffer_add_printf(b, "'/>");
        dj_s2s_send_buf(fj.domain, j.domain, b);
        evbuffer_free(b);
        return;
    }
    struct sub_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return;
    x->type = strdup(type);
    x->from = strdup(from_bare);
    x->to = strdup(to_bare);
    x->inbound = true;
    x->tracked = true;
    dj_inflight_begin(&x->w);
    dj_roster_with(to_bare, sub_in_with_roster, x);
}

static void send_sub(const char *type, const char *from, const char *to)
{
    dj_roster_subscription_in(NULL, type, to, from);
}

/* Outbound processing at the user (from), whose roster is loaded. */
static void sub_out_with_roster(void *arg, struct dj_user *u)
{
    struct sub_ctx *x = arg;
    if (!u) {
        sub_ctx_free(x);
        return;
    }
    struct dj_roster_item *it = dj_roster_find(u, x->to);
    const char *t = x->type;
    bool changed = false, forward = true;
    if (!strcmp(t, "subscribe")) {
        if (!it)
            it = item_add(u, x->to);
        if (it && it->hidden) {
            it->hidden = false;
            changed = true;
        }
        if (it && !(it->sub & (DJ_SUB_TO | DJ_SUB_ASK))) {
            it->sub |= DJ_SUB_ASK;
            changed = true;
        }
        forward = it != NULL;
    } else if (!strcmp(t, "subscribed")) {
        if (it && (it->sub & DJ_SUB_PENDING_IN)) {
            it->sub = (uint8_t)((it->sub & ~DJ_SUB_PENDING_IN) | DJ_SUB_FROM);
            it->hidden = false;
            changed = true;
        } else
            forward = false; /* pre-approval (RFC 6121 3.4) is not offered */
    } else if (!strcmp(t, "unsubscribe")) {
        if (it && (it->sub & (DJ_SUB_TO | DJ_SUB_ASK))) {
            it->sub &= (uint8_t) ~(DJ_SUB_TO | DJ_SUB_ASK);
            changed = true;
        }
    } else if (!strcmp(t, "unsubscribed")) {
        if (it && (it->sub & (DJ_SUB_FROM | DJ_SUB_PENDING_IN))) {
            it->sub &= (uint8_t) ~(DJ_SUB_FROM | DJ_SUB_PENDING_IN);
            changed = true;
        }
    }
    if (changed)
        dj_roster_commit(u, x->to, false, NULL, NULL);
    /* the contact's side sends the presence that follows an approval; for
     * a remote contact that side is ours to play */
    if (forward) {
        send_sub(t, u->bare, x->to);
        if (!strcmp(t, "subscribed") && dj_is_remote(x->to))
            for (struct dj_sess *o = u->sessions; o; o = o->next_res)
                if ((o->flags & DJ_F_AVAILABLE) && o->presence)
                    dj_s2s_send_raw_to(o->presence, strlen(o->presence), x->to);
    }
    dj_user_maybe_free(u);
    sub_ctx_free(x);
}

void dj_roster_subscription_out(struct dj_sess *s, struct dj_stanza *st, const char *type, const char *to_bare)
{
    (void)st;
    char bare[2 * DJ_JID_MAX + 2];
    dj_sess_bare(s, bare, sizeof bare);
    if (!strcmp(bare, to_bare))
        return;
    struct sub_ctx *x = calloc(1, sizeof *x);
    if (!x)
        return;
    x->type = strdup(type);
    x->from = strdup(bare);
    x->to = strdup(to_bare);
    dj_roster_with(bare, sub_out_with_roster, x);
}
