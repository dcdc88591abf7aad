/* proto_meta: the memcached meta protocol parser (mg ms md ma mn me), pure.
 *
 * Input is one request line (the caller found its terminator with the text
 * parser). Flags are single letters, some followed by a token; P and L are
 * proxy hints and are ignored. Error strings are memcached 1.6's. */
#include "memcached/proto.h"

#include <string.h>

#include "common/base64.h"

/* base64 keys (the 'b' flag): common/base64, strict. */
int mc_base64_decode(const char *in, size_t n, char *out, size_t outcap) { return b64_decode(in, n, out, outcap, 0); }

int mc_base64_encode(const char *in, size_t n, char *out, size_t outcap) { return b64_encode(in, n, out, outcap); }

static enum mc_parse fail(struct mc_meta_req *r, const char *msg)
{
    r->error = msg;
    return MC_PARSE_ERROR;
}

static bool next_tok(const char **pp, const char *end, const char **t, size_t *n)
{
    const char *p = *pp;
    while (p < end && *p == ' ')
        p++;
    if (p >= end) {
        *pp = p;
        return false;
    }
    *t = p;
    while (p < end && *p != ' ')
        p++;
    *n = (size_t)(p - *t);
    *pp = p;
    return true;
}

/* The flags each command takes (memcached 1.6.18's sets, plus md's x). */
static bool known_flag(enum mc_meta_cmd cmd, char c)
{
    static const char *const sets[] = {
        [MC_META_GET] = "bcfhklOqstuvNRTPL",
        [MC_META_SET] = "bcCEFIkOqsTMNPL",
        [MC_META_DELETE] = "bCEIkOqTxPL",
        [MC_META_ARITH] = "bCENJDTMOqtcvkPL",
        [MC_META_DEBUG] = "b",
    };
    const char *set = cmd < sizeof sets / sizeof sets[0] ? sets[cmd] : NULL;
    return c && set && strchr(set, c) != NULL;
}

enum mc_parse mc_meta_parse(const char *line, size_t line_len, size_t consumed, struct mc_meta_req *r)
{
    memset(r, 0, sizeof *r);
    r->swallow = -1;
    r->consumed = consumed;
    const char *p = line, *end = line + line_len, *t;
    size_t n;
    if (!next_tok(&p, end, &t, &n) || n != 2 || t[0] != 'm')
        return fail(r, "ERROR");
    switch (t[1]) {
    case 'g': r->cmd = MC_META_GET; break;
    case 's': r->cmd = MC_META_SET; break;
    case 'd': r->cmd = MC_META_DELETE; break;
    case 'a': r->cmd = MC_META_ARITH; break;
    case 'n': r->cmd = MC_META_NOOP; return MC_PARSE_OK;
    case 'e': r->cmd = MC_META_DEBUG; break;
    default: return fail(r, "ERROR");
    }
    if (!next_tok(&p, end, &t, &n))
        return fail(r, r->cmd == MC_META_DEBUG ? "CLIENT_ERROR bad command line format" : "ERROR");
    r->key = t;
    r->nkey = n;
    /* A key too long is refused before the data length is read, so (as in
     * memcached) an ms data block is then not skipped. */
    if (r->nkey > MC_KEY_MAX_LEN)
        return fail(r, "CLIENT_ERROR bad command line format");
    if (r->cmd == MC_META_SET) {
        const char *d;
        size_t dn;
        if (!next_tok(&p, end, &d, &dn) || !mc_parse_i32(d, dn, &r->datalen) || r->datalen < 0)
            return fail(r, "CLIENT_ERROR bad command line format");
        r->swallow = r->datalen + 2;
    }
    while (next_tok(&p, end, &t, &n)) {
        char f = t[0];
        if (!((f >= 'A' && f <= 'Z') || (f >= 'a' && f <= 'z')) || !known_flag(r->cmd, f))
            return fail(r, "CLIENT_ERROR invalid flag");
        uint64_t bit = MC_MF(f);
        if ((r->flags & bit) && f != 'P' && f != 'L')
            return fail(r, "CLIENT_ERROR duplicate flag");
        r->flags |= bit;
        if (f == 'k' && !(r->flags & MC_MF('O')))
            r->key_first = true;
        const char *v = t + 1;
        size_t vn = n - 1;
        bool ok = true;
        switch (f) {
        case 'O':
            if (vn > 32)
                return fail(r, "CLIENT_ERROR opaque token too long");
            r->opaque = v;
            r->nopaque = vn;
            break;
        case 'C': ok = mc_parse_u64(v, vn, &r->C_cas); break;
        case 'E': ok = mc_parse_u64(v, vn, &r->E_cas); break;
        case 'N': ok = mc_parse_i32(v, vn, &r->N_ttl); break;
        case 'R': ok = mc_parse_i32(v, vn, &r->R_ttl); break;
        case 'T': ok = mc_parse_i32(v, vn, &r->T_ttl); break;
        case 'F': ok = mc_parse_u32(v, vn, &r->F_flags); break;
        case 'D': ok = mc_parse_u64(v, vn, &r->delta); break;
        case 'J': ok = mc_parse_u64(v, vn, &r->initial); break;
        case 'M':
            if (vn != 1)
                return fail(r, "CLIENT_ERROR incorrect length for M token");
            else
                r->mode = v[0];
            break;
        default: break;
        }
        if (!ok)
            return fail(r, "CLIENT_ERROR bad token in command line format");
    }
    if (r->flags & MC_MF('M')) {
        char m = r->mode;
        if (r->cmd == MC_META_SET && !strchr("EeAaPpRrSs", m))
            return fail(r, "CLIENT_ERROR invalid mode for ms M token");
        if (r->cmd == MC_META_ARITH && !strchr("Ii+Dd-", m))
            return fail(r, "CLIENT_ERROR invalid mode for ma M token");
    }
    if (r->flags & MC_MF('b')) {
        int dn = mc_base64_decode(r->key, r->nkey, r->keybuf, MC_KEY_MAX_LEN);
        if (dn <= 0)
            return fail(r, "CLIENT_ERROR error decoding key");
        r->rkey = r->keybuf;
        r->nrkey = (size_t)dn;
    } else {
        if (r->nkey > MC_KEY_MAX_LEN)
            return fail(r, "CLIENT_ERROR bad command line format");
        r->rkey = r->key;
        r->nrkey = r->nkey;
    }
    if (r->nrkey == 0)
        return fail(r, "CLIENT_ERROR bad command line format");
    return MC_PARSE_OK;
}
