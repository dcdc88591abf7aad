/* proto_text: the memcached text protocol request parser (pure).
 *
 * One call parses one line: it finds the terminator (LF, optionally after
 * CR) within MC_MAX_LINE, splits on spaces and validates the arguments with
 * memcached 1.6's rules and error strings. Executing the command is
 * session.c's business. */
#include "memcached/proto.h"

#include "common/num.h"

#include <string.h>

/* memcached's numbers are the core's strict ones (common/num): digits
 * only, the whole token, no overflow; these fix the widths. */
bool mc_parse_u64(const char *s, size_t n, uint64_t *out) { return parse_u64(s, n, 0, UINT64_MAX, out) == NUM_OK; }

bool mc_parse_u32(const char *s, size_t n, uint32_t *out)
{
    uint64_t v;
    if (parse_u64(s, n, 0, UINT32_MAX, &v) != NUM_OK)
        return false;
    *out = (uint32_t)v;
    return true;
}

bool mc_parse_i64(const char *s, size_t n, int64_t *out)
{
    return parse_i64(s, n, INT64_MIN, INT64_MAX, out) == NUM_OK;
}

bool mc_parse_i32(const char *s, size_t n, int64_t *out)
{
    return parse_i64(s, n, INT32_MIN, INT32_MAX, out) == NUM_OK;
}

size_t mc_u64toa(uint64_t v, char *p)
{
    static const char pairs[201] = "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
                                   "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
                                   "8081828384858687888990919293949596979899";
    if (v < 10) { /* flags 0, small counts: the common case */
        *p = (char)('0' + v);
        return 1;
    }
    size_t n = 2;
    for (uint64_t t = v / 100; t; t /= 10)
        n++;
    char *q = p + n;
    while (v >= 100) {
        size_t d = (size_t)(v % 100) * 2;
        v /= 100;
        q -= 2;
        q[0] = pairs[d];
        q[1] = pairs[d + 1];
    }
    if (v >= 10) {
        q[-2] = pairs[v * 2];
        q[-1] = pairs[v * 2 + 1];
    } else {
        q[-1] = (char)('0' + v);
    }
    return n;
}

bool mc_text_next_key(const char **pp, const char *end, const char **key, size_t *nkey)
{
    const char *p = *pp;
    while (p < end && *p == ' ')
        p++;
    if (p >= end) {
        *pp = p;
        return false;
    }
    const char *k = p;
    p = memchr(p, ' ', (size_t)(end - p));
    if (!p)
        p = end;
    *key = k;
    *nkey = (size_t)(p - k);
    *pp = p;
    return true;
}

#define MAX_TOKENS 8

struct tok {
    const char *s;
    size_t n;
};

/* Split on spaces; returns token count, or MAX_TOKENS + 1 if there are more. */
static int split(const char *s, size_t n, struct tok *t)
{
    int nt = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] == ' ')
            i++;
        if (i >= n)
            break;
        size_t st = i;
        const char *sp = memchr(s + i, ' ', n - i);
        i = sp ? (size_t)(sp - s) : n;
        if (nt == MAX_TOKENS)
            return MAX_TOKENS + 1;
        t[nt].s = s + st;
        t[nt].n = i - st;
        nt++;
    }
    return nt;
}

static bool tok_is(const struct tok *t, const char *lit)
{
    size_t n = strlen(lit);
    return t->n == n && memcmp(t->s, lit, n) == 0;
}

static enum mc_parse fail(struct mc_text_req *r, const char *msg)
{
    r->error = msg;
    return MC_PARSE_ERROR;
}

#define BAD_FORMAT "CLIENT_ERROR bad command line format"

static bool key_ok(const struct tok *t) { return t->n > 0 && t->n <= MC_KEY_MAX_LEN; }

static enum mc_parse parse_storage(struct mc_text_req *r, struct tok *t, int nt, bool is_cas)
{
    int need = is_cas ? 6 : 5;
    if (nt != need && nt != need + 1)
        return fail(r, "ERROR");
    /* As memcached: a last token "noreply" silences the reply, errors
     * included, even when the line is otherwise bad. */
    r->noreply = tok_is(&t[nt - 1], "noreply");
    if (!key_ok(&t[1]))
        return fail(r, BAD_FORMAT);
    r->key = t[1].s;
    r->nkey = t[1].n;
    if (!mc_parse_u32(t[2].s, t[2].n, &r->flags) || !mc_parse_i32(t[3].s, t[3].n, &r->exptime) ||
        !mc_parse_i32(t[4].s, t[4].n, &r->bytes))
        return fail(r, BAD_FORMAT);
    if (is_cas && !mc_parse_u64(t[5].s, t[5].n, &r->cas))
        return fail(r, BAD_FORMAT);
    if (r->bytes < 0 || r->bytes > INT32_MAX - 2) /* bytes + CRLF must fit an int, as in memcached */
        return fail(r, BAD_FORMAT);
    return MC_PARSE_OK;
}

/* incr/decr/delete/touch: the key is the second token, a trailing
 * "noreply" the last. False if the key is not a valid key. */
static bool take_key(struct mc_text_req *r, const struct tok *t, int nt)
{
    r->noreply = tok_is(&t[nt - 1], "noreply");
    if (!key_ok(&t[1]))
        return false;
    r->key = t[1].s;
    r->nkey = t[1].n;
    return true;
}

/* "watch [kind ...]": memcached 1.6.18's words (its LOG_* bits, as in
 * memcached/watch.h); none means fetchers. An unknown word is ERROR (and
 * nothing at all with a trailing noreply, as memcached). At most 24
 * words are looked at, as memcached's tokenizer does. */
/* An admin command's arguments: the rest of the line, leading spaces off,
 * left to the command to read. */
static enum mc_parse take_args(struct mc_text_req *r, const char *rest, size_t rest_len)
{
    while (rest_len && *rest == ' ') {
        rest++;
        rest_len--;
    }
    r->args = rest;
    r->args_len = rest_len;
    return MC_PARSE_OK;
}

static enum mc_parse parse_watch(struct mc_text_req *r, const char *p, const char *end)
{
    static const struct {
        const char *name;
        uint32_t bit;
    } kinds[] = {
        { "rawcmds", 1u << 9 },    { "evictions", 1u << 6 },    { "fetchers", 1u << 2 },
        { "mutations", 1u << 3 },  { "sysevents", 1u << 1 },    { "connevents", 1u << 5 },
        { "proxyreqs", 1u << 10 }, { "proxyevents", 1u << 11 }, { "proxyuser", 1u << 12 },
    };
    r->cmd = MC_TXT_WATCH;
    const char *w;
    size_t n, words = 0;
    uint32_t f = 0;
    const char *q = p, *last = NULL;
    size_t nlast = 0;
    while (mc_text_next_key(&q, end, &w, &n)) {
        last = w;
        nlast = n;
    }
    r->noreply = last && nlast == 7 && memcmp(last, "noreply", 7) == 0;
    while (words < 23 && mc_text_next_key(&p, end, &w, &n)) {
        words++;
        size_t i = 0;
        while (i < sizeof kinds / sizeof kinds[0] && !(strlen(kinds[i].name) == n && memcmp(kinds[i].name, w, n) == 0))
            i++;
        if (i == sizeof kinds / sizeof kinds[0])
            return fail(r, "ERROR");
        f |= kinds[i].bit;
    }
    r->delta = words ? f : 1u << 2;
    return MC_PARSE_OK;
}

enum mc_parse mc_text_parse(const char *buf, size_t len, struct mc_text_req *r)
{
    memset(r, 0, sizeof *r);
    r->swallow = -1;
    size_t scan = len < MC_MAX_LINE + 2 ? len : MC_MAX_LINE + 2;
    const char *nl = memchr(buf, '\n', scan);
    if (!nl) {
        if (len > MC_MAX_LINE) {
            r->close = true;
            return fail(r, "CLIENT_ERROR line too long");
        }
        return MC_PARSE_NEED_MORE;
    }
    size_t ll = (size_t)(nl - buf);
    r->consumed = ll + 1;
    if (ll > 0 && buf[ll - 1] == '\r')
        ll--;
    r->line = buf;
    r->line_len = ll;

    /* Command word. */
    const char *p = buf, *end = buf + ll;
    while (p < end && *p == ' ')
        p++;
    const char *cw = p;
    while (p < end && *p != ' ')
        p++;
    size_t cn = (size_t)(p - cw);
    const char *rest = p;
    size_t rest_len = (size_t)(end - p);

    /* The get family takes any number of keys: no token limit. */
    if ((cn == 3 && memcmp(cw, "get", 3) == 0) || (cn == 4 && memcmp(cw, "gets", 4) == 0)) {
        r->cmd = cn == 3 ? MC_TXT_GET : MC_TXT_GETS;
        r->keys = rest;
        r->keys_len = rest_len;
        const char *q = rest, *k;
        size_t nk, count = 0;
        while (mc_text_next_key(&q, end, &k, &nk)) {
            if (nk > MC_KEY_MAX_LEN)
                return fail(r, BAD_FORMAT);
            count++;
        }
        if (count == 0)
            return fail(r, "ERROR");
        return MC_PARSE_OK;
    }
    if ((cn == 3 && memcmp(cw, "gat", 3) == 0) || (cn == 4 && memcmp(cw, "gats", 4) == 0)) {
        r->cmd = cn == 3 ? MC_TXT_GAT : MC_TXT_GATS;
        const char *q = rest, *k;
        size_t nk;
        if (!mc_text_next_key(&q, end, &k, &nk))
            return fail(r, "ERROR");
        if (!mc_parse_i32(k, nk, &r->exptime))
            return fail(r, "CLIENT_ERROR invalid exptime argument");
        r->keys = q;
        r->keys_len = (size_t)(end - q);
        /* "gat <exptime>" with no key answers END, as memcached does. */
        while (mc_text_next_key(&q, end, &k, &nk)) {
            if (nk > MC_KEY_MAX_LEN)
                return fail(r, BAD_FORMAT);
        }
        return MC_PARSE_OK;
    }
    if (cn == 2 && cw[0] == 'm') {
        r->cmd = MC_TXT_META;
        return MC_PARSE_OK;
    }
    if (cn == 8 && memcmp(cw, "extstore", 8) == 0) {
        r->cmd = MC_TXT_EXTSTORE;
        r->noreply = rest_len >= 7 && memcmp(rest + rest_len - 7, "noreply", 7) == 0;
        return take_args(r, rest, rest_len);
    }
    if (cn == 13 && memcmp(cw, "refresh_certs", 13) == 0) {
        r->cmd = MC_TXT_REFRESH_CERTS;
        r->noreply = rest_len >= 7 && memcmp(rest + rest_len - 7, "noreply", 7) == 0;
        return MC_PARSE_OK;
    }
    if (cn == 5 && memcmp(cw, "watch", 5) == 0)
        return parse_watch(r, rest, end);
    if ((cn == 5 && memcmp(cw, "stats", 5) == 0) || (cn == 8 && memcmp(cw, "shutdown", 8) == 0) ||
        (cn == 11 && memcmp(cw, "lru_crawler", 11) == 0) || (cn == 5 && memcmp(cw, "slabs", 5) == 0) ||
        (cn == 3 && memcmp(cw, "lru", 3) == 0)) {
        r->cmd = cw[0] == 's' ? (cw[1] == 't' ? MC_TXT_STATS : (cw[1] == 'h' ? MC_TXT_SHUTDOWN : MC_TXT_SLABS))
                              : (cn == 3 ? MC_TXT_LRU : MC_TXT_LRU_CRAWLER);
        return take_args(r, rest, rest_len);
    }

    struct tok t[MAX_TOKENS];
    int nt = split(buf, ll, t);
    if (nt == 0)
        return fail(r, "ERROR");
    if (nt > MAX_TOKENS)
        return fail(r, "ERROR");

    static const struct {
        const char *name;
        enum mc_text_cmd cmd;
        bool cas;
    } storage[] = {
        { "set", MC_TXT_SET, false },       { "add", MC_TXT_ADD, false },         { "replace", MC_TXT_REPLACE, false },
        { "append", MC_TXT_APPEND, false }, { "prepend", MC_TXT_PREPEND, false }, { "cas", MC_TXT_CAS, true },
    };
    for (size_t i = 0; i < sizeof(storage) / sizeof(storage[0]); i++)
        if (tok_is(&t[0], storage[i].name)) {
            r->cmd = storage[i].cmd;
            return parse_storage(r, t, nt, storage[i].cas);
        }
    if (tok_is(&t[0], "incr") || tok_is(&t[0], "decr")) {
        r->cmd = t[0].s[0] == 'i' ? MC_TXT_INCR : MC_TXT_DECR;
        if (nt != 3 && nt != 4)
            return fail(r, "ERROR");
        if (!take_key(r, t, nt))
            return fail(r, BAD_FORMAT);
        if (!mc_parse_u64(t[2].s, t[2].n, &r->delta))
            return fail(r, "CLIENT_ERROR invalid numeric delta argument");
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "delete")) {
        r->cmd = MC_TXT_DELETE;
        if (nt < 2 || nt > 4)
            return fail(r, "ERROR");
        if (!take_key(r, t, nt))
            return fail(r, BAD_FORMAT);
        /* "delete <key> 0" is still accepted; any other extra is refused. */
        int extra = nt - 2 - (r->noreply ? 1 : 0);
        if (extra > 1 || (extra == 1 && !tok_is(&t[2], "0")))
            return fail(r, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]");
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "touch")) {
        r->cmd = MC_TXT_TOUCH;
        if (nt != 3 && nt != 4)
            return fail(r, "ERROR");
        if (!take_key(r, t, nt))
            return fail(r, BAD_FORMAT);
        if (!mc_parse_i32(t[2].s, t[2].n, &r->exptime))
            return fail(r, "CLIENT_ERROR invalid exptime argument");
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "flush_all")) {
        r->cmd = MC_TXT_FLUSH_ALL;
        if (nt > 3)
            return fail(r, "ERROR");
        r->noreply = tok_is(&t[nt - 1], "noreply");
        int nargs = nt - 1 - (r->noreply ? 1 : 0);
        if (nargs == 1) {
            int64_t d;
            if (!mc_parse_i32(t[1].s, t[1].n, &d))
                return fail(r, "CLIENT_ERROR invalid exptime argument");
            r->exptime = d;
            r->has_delay = true;
        }
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "version")) {
        r->cmd = MC_TXT_VERSION;
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "quit")) {
        r->cmd = MC_TXT_QUIT;
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "verbosity")) {
        r->cmd = MC_TXT_VERBOSITY;
        if (nt < 2 || nt > 3)
            return fail(r, "ERROR");
        r->noreply = tok_is(&t[nt - 1], "noreply");
        uint32_t lvl = 0;
        if (!(r->noreply && nt == 2) && !mc_parse_u32(t[1].s, t[1].n, &lvl))
            return fail(r, BAD_FORMAT);
        r->delta = lvl;
        return MC_PARSE_OK;
    }
    if (tok_is(&t[0], "cache_memlimit")) {
        r->cmd = MC_TXT_CACHE_MEMLIMIT;
        if (nt < 2 || nt > 3)
            return fail(r, "ERROR");
        if (nt == 3)
            r->noreply = tok_is(&t[2], "noreply");
        if (!mc_parse_u64(t[1].s, t[1].n, &r->delta))
            return fail(r, "ERROR"); /* what memcached answers a non-number here */
        return MC_PARSE_OK;
    }
    /* A request line ending in HTTP/x.y: someone pointed a browser or a
     * proxy at us; memcached closes such connections. */
    if (nt >= 2 && t[nt - 1].n >= 5 && memcmp(t[nt - 1].s, "HTTP/", 5) == 0) {
        r->close = true;
        r->noreply = true; /* memcached hangs up without a word */
        return fail(r, "ERROR");
    }
    return fail(r, "ERROR");
}
