/* proto_xml: XMPP's restricted XML stream on expat, bounded; the stanza
 * tree and its serialiser. Pure: no sockets, no globals except the
 * per-thread parser pool. See proto_xml.h for the contract. */
#include "djabberd/proto_xml.h"

#include <stdlib.h>
#include <string.h>

#include <expat.h>
#include <event2/buffer.h>

#define DJ_XML_FEED_CHUNK 4096
#define DJ_XML_POOL_MAX 64

static const char dj_synthetic_header[] =
    "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'>";

struct dj_xml {
    XML_Parser p; /* NULL while idle (given back to the pool) */
    struct dj_xml_limits lim;
    const struct dj_xml_cbs *cbs;
    void *arg;
    enum dj_xml_error err;
    int depth;         /* 0 before the header, 1 between stanzas */
    bool synthetic;    /* the header being parsed is our priming one */
    bool stopped;      /* on_stanza asked to stop this feed */
    uint64_t fed;      /* bytes given to the current expat parser */
    uint64_t last_end; /* end of the last complete event at depth <= 1 */
    uint64_t stanza_start;
    uint64_t feed_base; /* parser offset where the caller's current buffer starts */
    struct dj_stanza *cur;
    struct dj_node *node; /* innermost open element of cur */
};

/* ---- arena ------------------------------------------------------------------ */

struct dj_arena_chunk {
    struct dj_arena_chunk *next;
    size_t used, cap;
    /* data follows, 16-aligned */
};

#define DJ_CHUNK_HDR ((sizeof(struct dj_arena_chunk) + 15) & ~(size_t)15)

struct dj_stanza *dj_stanza_new(void) { return calloc(1, sizeof(struct dj_stanza)); }

void dj_stanza_free(struct dj_stanza *st)
{
    if (!st)
        return;
    struct dj_arena_chunk *c = st->chunks;
    while (c) {
        struct dj_arena_chunk *n = c->next;
        free(c);
        c = n;
    }
    free(st);
}

void *dj_stanza_alloc(struct dj_stanza *st, size_t n)
{
    n = (n + 7) & ~(size_t)7;
    struct dj_arena_chunk *c = st->chunks;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 2048 ? n : 2048;
        c = malloc(DJ_CHUNK_HDR + cap);
        if (!c)
            abort(); /* out of memory on a bounded allocation: nothing sane to do */
        c->cap = cap;
        c->used = 0;
        c->next = st->chunks;
        st->chunks = c;
    }
    void *p = (char *)c + DJ_CHUNK_HDR + c->used;
    c->used += n;
    return p;
}

char *dj_stanza_strdup(struct dj_stanza *st, const char *s, size_t n)
{
    char *d = dj_stanza_alloc(st, n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

struct dj_node *dj_node_new(struct dj_stanza *st, struct dj_node *parent, const char *name)
{
    struct dj_node *n = dj_stanza_alloc(st, sizeof *n);
    memset(n, 0, sizeof *n);
    n->name = name ? dj_stanza_strdup(st, name, strlen(name)) : NULL;
    static const char *no_attrs[1] = { NULL };
    n->attrs = no_attrs;
    n->up = parent;
    if (parent) {
        if (parent->last)
            parent->last->next = n;
        else
            parent->child = n;
        parent->last = n;
    } else if (!st->root)
        st->root = n;
    return n;
}

void dj_node_text(struct dj_stanza *st, struct dj_node *parent, const char *text, size_t len)
{
    struct dj_node *last = parent->last;
    if (last && !last->name) {
        /* merge with the previous text chunk */
        char *d = dj_stanza_alloc(st, last->textlen + len + 1);
        memcpy(d, last->text, last->textlen);
        memcpy(d + last->textlen, text, len);
        d[last->textlen + len] = 0;
        last->text = d;
        last->textlen += len;
        return;
    }
    struct dj_node *n = dj_stanza_alloc(st, sizeof *n);
    memset(n, 0, sizeof *n);
    n->text = dj_stanza_strdup(st, text, len);
    n->textlen = len;
    if (last)
        last->next = n;
    else
        parent->child = n;
    parent->last = n;
}

const char *dj_node_attr(const struct dj_node *n, const char *name)
{
    if (!n || !n->name)
        return NULL;
    for (int i = 0; n->attrs[i]; i += 2)
        if (!strcmp(n->attrs[i], name))
            return n->attrs[i + 1];
    return NULL;
}

void dj_node_set_attr(struct dj_stanza *st, struct dj_node *n, const char *name, const char *value)
{
    int count = 0;
    while (n->attrs[count])
        count += 2;
    const char **a = dj_stanza_alloc(st, sizeof(char *) * (size_t)(count + 3));
    int j = 0;
    bool done = false;
    for (int i = 0; i < count; i += 2) {
        if (!strcmp(n->attrs[i], name)) {
            done = true;
            if (!value)
                continue;
            a[j++] = n->attrs[i];
            a[j++] = dj_stanza_strdup(st, value, strlen(value));
            continue;
        }
        a[j++] = n->attrs[i];
        a[j++] = n->attrs[i + 1];
    }
    if (!done && value) {
        a[j++] = dj_stanza_strdup(st, name, strlen(name));
        a[j++] = dj_stanza_strdup(st, value, strlen(value));
    }
    a[j] = NULL;
    n->attrs = a;
    n->nattrs = j / 2;
}

const char *dj_node_local(const struct dj_node *n)
{
    const char *c = strchr(n->name, ':');
    return c ? c + 1 : n->name;
}

const char *dj_node_ns(const struct dj_node *n) { return dj_node_attr(n, "xmlns"); }

struct dj_node *dj_node_child(const struct dj_node *n, const char *name, const char *ns)
{
    if (!n)
        return NULL;
    for (struct dj_node *c = n->child; c; c = c->next) {
        if (!c->name)
            continue;
        if (name && strcmp(dj_node_local(c), name))
            continue;
        if (ns) {
            const char *cns = dj_node_ns(c);
            if (!cns || strcmp(cns, ns))
                continue;
        }
        return c;
    }
    return NULL;
}

const char *dj_node_text_of(struct dj_stanza *st, const struct dj_node *n, size_t *len)
{
    size_t total = 0;
    const struct dj_node *only = NULL;
    int count = 0;
    for (const struct dj_node *c = n ? n->child : NULL; c; c = c->next)
        if (!c->name) {
            total += c->textlen;
            only = c;
            count++;
        }
    if (len)
        *len = total;
    if (count == 0)
        return "";
    if (count == 1)
        return only->text;
    char *d = dj_stanza_alloc(st, total + 1), *p = d;
    for (const struct dj_node *c = n->child; c; c = c->next)
        if (!c->name) {
            memcpy(p, c->text, c->textlen);
            p += c->textlen;
        }
    *p = 0;
    return d;
}

/* ---- serialiser --------------------------------------------------------------- */

size_t dj_xml_escape_buf(char *dst, size_t cap, const char *s, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep = NULL;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        default: break;
        }
        if (rep) {
            size_t rl = strlen(rep);
            if (o + rl <= cap)
                memcpy(dst + o, rep, rl);
            o += rl;
        } else {
            if (o < cap)
                dst[o] = s[i];
            o++;
        }
    }
    return o;
}

void dj_xml_escape(struct evbuffer *out, const char *s, size_t len)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep;
        switch (s[i]) {
        case '&': rep = "&amp;"; break;
        case '<': rep = "&lt;"; break;
        case '>': rep = "&gt;"; break;
        case '"': rep = "&quot;"; break;
        case '\'': rep = "&apos;"; break;
        default: continue;
        }
        if (i > start)
            evbuffer_add(out, s + start, i - start);
        evbuffer_add(out, rep, strlen(rep));
        start = i + 1;
    }
    if (len > start)
        evbuffer_add(out, s + start, len - start);
}

void dj_xml_write(struct evbuffer *out, const struct dj_node *n)
{
    if (!n->name) {
        dj_xml_escape(out, n->text, n->textlen);
        return;
    }
    evbuffer_add(out, "<", 1);
    evbuffer_add(out, n->name, strlen(n->name));
    for (int i = 0; n->attrs[i]; i += 2) {
        evbuffer_add(out, " ", 1);
        evbuffer_add(out, n->attrs[i], strlen(n->attrs[i]));
        evbuffer_add(out, "='", 2);
        dj_xml_escape(out, n->attrs[i + 1], strlen(n->attrs[i + 1]));
        evbuffer_add(out, "'", 1);
    }
    if (!n->child) {
        evbuffer_add(out, "/>", 2);
        return;
    }
    evbuffer_add(out, ">", 1);
    for (const struct dj_node *c = n->child; c; c = c->next)
        dj_xml_write(out, c);
    evbuffer_add(out, "</", 2);
    evbuffer_add(out, n->name, strlen(n->name));
    evbuffer_add(out, ">", 1);
}

/* ---- the parser pool ----------------------------------------------------------- */

static __thread XML_Parser dj_pool[DJ_XML_POOL_MAX];
static __thread size_t dj_pool_n;

size_t dj_xml_pool_size(void) { return dj_pool_n; }

void dj_xml_pool_clear(void)
{
    while (dj_pool_n > 0)
        XML_ParserFree(dj_pool[--dj_pool_n]);
}

static void pool_put(XML_Parser p)
{
    if (dj_pool_n < DJ_XML_POOL_MAX && XML_ParserReset(p, "UTF-8"))
        dj_pool[dj_pool_n++] = p;
    else
        XML_ParserFree(p);
}

/* ---- handlers ----------------------------------------------------------------- */

static void fail(struct dj_xml *x, enum dj_xml_error e)
{
    if (x->err == DJ_XML_OK)
        x->err = e;
    XML_StopParser(x->p, XML_FALSE);
}

static uint64_t event_end(struct dj_xml *x)
{
    return (uint64_t)XML_GetCurrentByteIndex(x->p) + (uint64_t)XML_GetCurrentByteCount(x->p);
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
    struct dj_xml *x = ud;
    if (x->err)
        return;
    int nat = 0;
    while (atts[nat])
        nat += 2;
    if (nat / 2 > x->lim.max_attrs) {
        fail(x, DJ_XML_POLICY);
        return;
    }
    if (x->depth == 0) {
        x->depth = 1;
        x->last_end = event_end(x);
        if (x->synthetic) {
            x->synthetic = false;
            return;
        }
        if (x->cbs->on_stream && x->cbs->on_stream(x->arg, name, atts) != 0)
            fail(x, DJ_XML_CLOSED);
        return;
    }
    if (x->depth == 1) {
        x->cur = dj_stanza_new();
        if (!x->cur) {
            fail(x, DJ_XML_NOMEM);
            return;
        }
        x->stanza_start = (uint64_t)XML_GetCurrentByteIndex(x->p);
        x->node = NULL;
    } else if (x->depth - 1 >= x->lim.max_depth) {
        fail(x, DJ_XML_POLICY);
        return;
    }
    struct dj_node *n = dj_node_new(x->cur, x->node, name);
    if (nat) {
        const char **a = dj_stanza_alloc(x->cur, sizeof(char *) * (size_t)(nat + 1));
        for (int i = 0; i < nat; i++)
            a[i] = dj_stanza_strdup(x->cur, atts[i], strlen(atts[i]));
        a[nat] = NULL;
        n->attrs = a;
        n->nattrs = nat / 2;
    }
    n->up = x->node;
    x->node = n;
    x->depth++;
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
    (void)name;
    struct dj_xml *x = ud;
    if (x->err)
        return;
    x->depth--;
    if (x->depth == 0) {
        x->last_end = event_end(x);
        fail(x, DJ_XML_CLOSED);
        return;
    }
    struct dj_node *n = x->node;
    x->node = n->up;
    if (x->depth > 1)
        return;
    struct dj_stanza *st = x->cur;
    x->cur = NULL;
    x->node = NULL;
    x->last_end = event_end(x);
    st->bytes = (size_t)(x->last_end - x->stanza_start);
    if (x->cbs->on_stanza(x->arg, st) != 0) {
        x->stopped = true;
        XML_StopParser(x->p, XML_FALSE);
    }
}

static bool all_space(const char *s, int len)
{
    for (int i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

static void XMLCALL on_chars(void *ud, const XML_Char *s, int len)
{
    struct dj_xml *x = ud;
    if (x->err)
        return;
    if (x->depth <= 1) {
        if (!all_space(s, len)) {
            fail(x, DJ_XML_NOT_WELL_FORMED);
            return;
        }
        x->last_end = event_end(x);
        return;
    }
    dj_node_text(x->cur, x->node, s, (size_t)len);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid, const XML_Char *pubid,
                               int has_internal)
{
    (void)name, (void)sysid, (void)pubid, (void)has_internal;
    fail(ud, DJ_XML_RESTRICTED);
}

static void XMLCALL on_entity(void *ud, const XML_Char *name, int pe, const XML_Char *value, int vlen,
                              const XML_Char *base, const XML_Char *sysid, const XML_Char *pubid,
                              const XML_Char *notation)
{
    (void)name, (void)pe, (void)value, (void)vlen, (void)base, (void)sysid, (void)pubid, (void)notation;
    fail(ud, DJ_XML_RESTRICTED);
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
    (void)target, (void)data;
    fail(ud, DJ_XML_RESTRICTED);
}

static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
    (void)data;
    fail(ud, DJ_XML_RESTRICTED);
}

/* Never read anything external: refuse every external entity reference. */
static int XMLCALL on_extref(XML_Parser p, const XML_Char *ctx, const XML_Char *base, const XML_Char *sysid,
                             const XML_Char *pubid)
{
    (void)p, (void)ctx, (void)base, (void)sysid, (void)pubid;
    return XML_STATUS_ERROR;
}

static bool take_parser(struct dj_xml *x)
{
    XML_Parser p = dj_pool_n > 0 ? dj_pool[--dj_pool_n] : XML_ParserCreate("UTF-8");
    if (!p)
        return false;
    x->p = p;
    XML_SetUserData(p, x);
    XML_SetElementHandler(p, on_start, on_end);
    XML_SetCharacterDataHandler(p, on_chars);
    XML_SetStartDoctypeDeclHandler(p, on_doctype);
    XML_SetEntityDeclHandler(p, on_entity);
    XML_SetProcessingInstructionHandler(p, on_pi);
    XML_SetCommentHandler(p, on_comment);
    XML_SetExternalEntityRefHandler(p, on_extref);
    XML_SetParamEntityParsing(p, XML_PARAM_ENTITY_PARSING_NEVER);
    x->fed = 0;
    x->last_end = 0;
    return true;
}

/* ---- the stream ------------------------------------------------------------------ */

struct dj_xml *dj_xml_new(const struct dj_xml_limits *lim, const struct dj_xml_cbs *cbs, void *arg)
{
    struct dj_xml *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->lim = *lim;
    if (x->lim.max_depth <= 0)
        x->lim.max_depth = 32;
    if (x->lim.max_attrs <= 0)
        x->lim.max_attrs = 64;
    if (x->lim.max_stanza == 0)
        x->lim.max_stanza = 256 * 1024;
    x->cbs = cbs;
    x->arg = arg;
    return x;
}

void dj_xml_free(struct dj_xml *x)
{
    if (!x)
        return;
    if (x->p) {
        if (x->err == DJ_XML_OK && !x->cur)
            pool_put(x->p);
        else
            XML_ParserFree(x->p);
    }
    dj_stanza_free(x->cur);
    free(x);
}

void dj_xml_restart(struct dj_xml *x)
{
    if (x->p)
        XML_ParserFree(x->p); /* mid-parse state: not reusable as is */
    x->p = NULL;
    dj_stanza_free(x->cur);
    x->cur = NULL;
    x->node = NULL;
    x->depth = 0;
    x->err = DJ_XML_OK;
    x->synthetic = false;
    x->stopped = false;
}

bool dj_xml_has_parser(const struct dj_xml *x) { return x->p != NULL; }

size_t dj_xml_feed_used(const struct dj_xml *x)
{
    return x->last_end > x->feed_base ? (size_t)(x->last_end - x->feed_base) : 0;
}

bool dj_xml_release(struct dj_xml *x)
{
    if (!x->p || x->err || x->depth != 1 || x->cur || x->last_end != x->fed)
        return false;
    pool_put(x->p);
    x->p = NULL;
    return true;
}

static enum dj_xml_error feed_chunk(struct dj_xml *x, const char *buf, size_t len, bool final)
{
    enum XML_Status s = XML_Parse(x->p, buf, (int)len, final);
    x->fed += len;
    if (x->err)
        return x->err;
    if (x->stopped)
        return DJ_XML_OK;
    if (s != XML_STATUS_OK) {
        enum XML_Error e = XML_GetErrorCode(x->p);
        x->err = e == XML_ERROR_NO_MEMORY ? DJ_XML_NOMEM : DJ_XML_NOT_WELL_FORMED;
        return x->err;
    }
    /* the bytes of the stanza (or header) in progress, bounded */
    if (x->fed - x->last_end > x->lim.max_stanza) {
        x->err = DJ_XML_POLICY;
        return x->err;
    }
    return DJ_XML_OK;
}

enum dj_xml_error dj_xml_feed(struct dj_xml *x, const char *buf, size_t len)
{
    if (x->err)
        return x->err;
    x->stopped = false;
    if (!x->p) {
        if (!take_parser(x))
            return x->err = DJ_XML_NOMEM;
        if (x->depth == 1) {
            /* prime a pooled parser: we are inside an open stream */
            x->depth = 0;
            x->synthetic = true;
            enum dj_xml_error e = feed_chunk(x, dj_synthetic_header, sizeof dj_synthetic_header - 1, false);
            if (e)
                return e;
        }
    }
    x->feed_base = x->fed;
    while (len > 0) {
        size_t n = len > DJ_XML_FEED_CHUNK ? DJ_XML_FEED_CHUNK : len;
        enum dj_xml_error e = feed_chunk(x, buf, n, false);
        if (e || x->stopped)
            return e;
        buf += n;
        len -= n;
    }
    return DJ_XML_OK;
}

const char *dj_xml_error_condition(enum dj_xml_error e)
{
    switch (e) {
    case DJ_XML_RESTRICTED: return "restricted-xml";
    case DJ_XML_POLICY: return "policy-violation";
    case DJ_XML_NOMEM: return "resource-constraint";
    case DJ_XML_CLOSED: return NULL;
    case DJ_XML_OK: return NULL;
    default: return "not-well-formed";
    }
}
