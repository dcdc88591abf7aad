/* proto_xml: the bounded, restricted XML stream parser of XMPP (on expat)
 * and the tiny stanza tree it hands out.
 *
 * Pure: it never touches a socket, a global or a store. The caller feeds
 * bytes; the parser calls back once for the stream header (depth 0 start)
 * and once per complete top-level child (a stanza, as a tree), and reports
 * errors as XMPP stream-error conditions.
 *
 * Restricted XML (RFC 6120 11.1): a DOCTYPE, an entity declaration, a
 * processing instruction or a comment stop the stream (restricted-xml), so
 * no entity is ever expanded and nothing external is ever read. Bad UTF-8
 * and every other syntax error are not-well-formed. Bounds: bytes per stanza
 * (policy-violation), nesting depth and attributes per element.
 *
 * Idle streams give their expat parser back (dj_xml_release): between
 * stanzas nothing of the parse needs keeping, so a later burst takes a
 * parser from a per-thread pool and primes it with a synthetic stream
 * header. That keeps an idle session free of expat's ~8 KiB. */
#ifndef DJ_PROTO_XML_H
#define DJ_PROTO_XML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;

/* One element of a stanza. Text children have name == NULL. Strings live in
 * the stanza's arena and die with it. */
struct dj_node {
    const char *name;   /* as written, prefix included ("stream:error") */
    const char **attrs; /* name, value, ..., NULL */
    int nattrs;
    struct dj_node *child, *last, *next, *up;
    const char *text; /* text nodes: the characters (unescaped) */
    size_t textlen;
};

struct dj_arena_chunk;
struct dj_stanza {
    struct dj_node *root;
    size_t bytes; /* size on the wire */
    struct dj_arena_chunk *chunks;
};

enum dj_xml_error {
    DJ_XML_OK = 0,
    DJ_XML_NOT_WELL_FORMED,
    DJ_XML_RESTRICTED, /* DTD, entity, PI, comment */
    DJ_XML_POLICY,     /* a stanza over the byte bound, too deep, too many attributes */
    DJ_XML_CLOSED,     /* the peer ended the stream (</stream:stream>) */
    DJ_XML_NOMEM,
};

struct dj_xml_limits {
    size_t max_stanza; /* bytes of one stanza (and of the stream header) */
    int max_depth;     /* element nesting inside a stanza */
    int max_attrs;     /* attributes per element */
};

struct dj_xml_cbs {
    /* The stream header; attrs as in dj_node. Return 0 to go on. */
    int (*on_stream)(void *arg, const char *name, const char **attrs);
    /* A complete stanza; the callee owns it (dj_stanza_free). Return 0 to
     * go on, -1 to stop parsing (the rest of the input is left unparsed). */
    int (*on_stanza)(void *arg, struct dj_stanza *st);
};

struct dj_xml;

struct dj_xml *dj_xml_new(const struct dj_xml_limits *lim, const struct dj_xml_cbs *cbs, void *arg);
void dj_xml_free(struct dj_xml *x);
/* Feed bytes. Returns DJ_XML_OK or the error that stopped the stream; after
 * an error the parser only returns that error again. */
enum dj_xml_error dj_xml_feed(struct dj_xml *x, const char *buf, size_t len);
/* Bytes of the buffer given to the dj_xml_feed() now running (or last run)
 * that lie before the end of the last complete stanza: what a caller must
 * consume when it switches the byte stream (STARTTLS) after that stanza. */
size_t dj_xml_feed_used(const struct dj_xml *x);
/* Start a new stream on the same object (after SASL success, STARTTLS). */
void dj_xml_restart(struct dj_xml *x);
/* Give the expat parser back to the pool if nothing is half-parsed.
 * Returns true if it was released. */
bool dj_xml_release(struct dj_xml *x);
bool dj_xml_has_parser(const struct dj_xml *x);
/* Stream-error condition name for an error ("not-well-formed" ...). */
const char *dj_xml_error_condition(enum dj_xml_error e);
/* Parsers kept in this thread's pool (stats); drop the pool. */
size_t dj_xml_pool_size(void);
void dj_xml_pool_clear(void);

/* ---- the stanza tree ---- */
struct dj_stanza *dj_stanza_new(void);
void dj_stanza_free(struct dj_stanza *st);
void *dj_stanza_alloc(struct dj_stanza *st, size_t n);
char *dj_stanza_strdup(struct dj_stanza *st, const char *s, size_t n);
struct dj_node *dj_node_new(struct dj_stanza *st, struct dj_node *parent, const char *name);
void dj_node_text(struct dj_stanza *st, struct dj_node *parent, const char *text, size_t len);
const char *dj_node_attr(const struct dj_node *n, const char *name);
/* Set (or with value NULL remove) an attribute. */
void dj_node_set_attr(struct dj_stanza *st, struct dj_node *n, const char *name, const char *value);
/* First element child with this local name (and, if ns is not NULL, this
 * xmlns). NULL name matches any element. */
struct dj_node *dj_node_child(const struct dj_node *n, const char *name, const char *ns);
/* Namespace of an element: its own xmlns or NULL (inherited). */
const char *dj_node_ns(const struct dj_node *n);
/* Local name (after a prefix). */
const char *dj_node_local(const struct dj_node *n);
/* Concatenated text of the direct text children (in the arena). */
const char *dj_node_text_of(struct dj_stanza *st, const struct dj_node *n, size_t *len);

/* Serialise a node and its children, escaped. */
void dj_xml_write(struct evbuffer *out, const struct dj_node *n);
/* Append s escaped for text or attribute values. */
void dj_xml_escape(struct evbuffer *out, const char *s, size_t len);
/* Escape into a fixed buffer; returns the length needed. */
size_t dj_xml_escape_buf(char *dst, size_t cap, const char *s, size_t len);

#endif
