/* proto_tracker: the MogileFS tracker line protocol, pure.
 *
 * A request is "<cmd> <k=v&k=v...>" with application/x-www-form-urlencoded
 * pairs; a reply is "OK <pairs>" or "ERR <code> <text>". This file parses
 * and encodes those and the fid path layout; it never touches a socket, the
 * database or a global. */
#include "mogilefs/mogilefs.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t mog_url_decode(const char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '+') {
            out[o++] = ' ';
        } else if (c == '%' && i + 2 < len && hexval((unsigned char)in[i + 1]) >= 0 &&
                   hexval((unsigned char)in[i + 2]) >= 0) {
            out[o++] = (char)(hexval((unsigned char)in[i + 1]) * 16 + hexval((unsigned char)in[i + 2]));
            i += 2;
        } else {
            out[o++] = c;
        }
    }
    return o;
}

/* MogileFS's eurl leaves [A-Za-z0-9_,-./\: ] alone and turns space into '+'. */
static bool url_safe(unsigned char c)
{
    return isalnum(c) || c == '_' || c == ',' || c == '-' || c == '.' || c == '/' || c == '\\' || c == ':';
}

size_t mog_url_encode(const char *in, size_t len, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c == ' ') {
            out[o++] = '+';
        } else if (url_safe(c)) {
            out[o++] = (char)c;
        } else {
            out[o++] = '%';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 15];
        }
    }
    out[o] = '\0';
    return o;
}

void mog_url_encode_buf(struct evbuffer *out, const char *s, size_t len)
{
    char tmp[768];
    while (len > 0) {
        size_t n = len > 255 ? 255 : len;
        size_t m = mog_url_encode(s, n, tmp);
        evbuffer_add(out, tmp, m);
        s += n;
        len -= n;
    }
}

void mog_req_free(struct mog_req *req)
{
    free(req->buf);
    req->buf = NULL;
    req->nargs = 0;
}

enum mog_parse_status mog_parse_request(const char *line, size_t len, struct mog_req *req)
{
    memset(req, 0, sizeof *req);
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    while (len > i && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    if (i == len)
        return MOG_PARSE_EMPTY;
    /* Command word: \w+ (a leading '!' marks the admin commands). */
    size_t n = 0;
    if (line[i] == '!') {
        req->cmd[n++] = '!';
        i++;
    }
    while (i < len && line[i] != ' ' && line[i] != '\t') {
        unsigned char ch = (unsigned char)line[i];
        if (!(isalnum(ch) || ch == '_') || n >= sizeof req->cmd - 1)
            return MOG_PARSE_BAD;
        req->cmd[n++] = (char)tolower(ch);
        i++;
    }
    req->cmd[n] = '\0';
    if (n == 0)
        return MOG_PARSE_BAD;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    size_t alen = len - i;
    req->buf = malloc(alen + 1);
    if (!req->buf)
        return MOG_PARSE_BAD;
    memcpy(req->buf, line + i, alen);
    req->buf[alen] = '\0';
    /* Split on '&'; empty pairs are ignored; decode key and value in place. */
    char *p = req->buf, *end = req->buf + alen;
    while (p < end) {
        char *amp = memchr(p, '&', (size_t)(end - p));
        char *pe = amp ? amp : end;
        *pe = '\0';
        if (pe > p) {
            if (req->nargs >= MOG_MAX_ARGS) {
                mog_req_free(req);
                return MOG_PARSE_TOO_MANY;
            }
            char *eq = memchr(p, '=', (size_t)(pe - p));
            char *k = p, *v = NULL;
            size_t klen = eq ? (size_t)(eq - p) : (size_t)(pe - p), vlen = 0;
            if (eq) {
                v = eq + 1;
                vlen = mog_url_decode(v, (size_t)(pe - v), v);
                v[vlen] = '\0';
            }
            klen = mog_url_decode(k, klen, k);
            k[klen] = '\0';
            req->key[req->nargs] = k;
            req->val[req->nargs] = v;
            req->val_len[req->nargs] = vlen;
            req->nargs++;
        }
        p = pe + 1;
    }
    return MOG_PARSE_OK;
}

const char *mog_arg_len(const struct mog_req *req, const char *key, size_t *len)
{
    for (int i = req->nargs - 1; i >= 0; i--)
        if (!strcmp(req->key[i], key)) {
            if (len)
                *len = req->val_len[i];
            return req->val[i];
        }
    if (len)
        *len = 0;
    return NULL;
}

const char *mog_arg(const struct mog_req *req, const char *key) { return mog_arg_len(req, key, NULL); }

/* ---- replies ---------------------------------------------------------------- */

void mog_reply_init(struct mog_reply *r, struct evbuffer *out, const char *callid)
{
    r->out = out;
    r->nargs = 0;
    r->done = false;
    r->callid = callid;
    r->start = evbuffer_get_length(out);
    evbuffer_add(out, "OK ", 3);
}

void mog_reply_kvn(struct mog_reply *r, const char *key, const char *val, size_t len)
{
    if (r->done)
        return;
    if (r->nargs++)
        evbuffer_add(r->out, "&", 1);
    mog_url_encode_buf(r->out, key, strlen(key));
    evbuffer_add(r->out, "=", 1);
    if (val)
        mog_url_encode_buf(r->out, val, len);
}

void mog_reply_kv(struct mog_reply *r, const char *key, const char *val)
{
    mog_reply_kvn(r, key, val, val ? strlen(val) : 0);
}

void mog_reply_kvi(struct mog_reply *r, const char *key, int64_t v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    mog_reply_kvn(r, key, buf, (size_t)n);
}

void mog_reply_kvf(struct mog_reply *r, const char *val, const char *keyfmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, keyfmt);
    vsnprintf(key, sizeof key, keyfmt, ap);
    va_end(ap);
    mog_reply_kv(r, key, val);
}

void mog_reply_kvif(struct mog_reply *r, int64_t v, const char *keyfmt, ...)
{
    char key[256];
    va_list ap;
    va_start(ap, keyfmt);
    vsnprintf(key, sizeof key, keyfmt, ap);
    va_end(ap);
    mog_reply_kvi(r, key, v);
}

int mog_ok(struct mog_reply *r)
{
    if (r->done)
        return 0;
    if (r->callid)
        mog_reply_kv(r, "callid", r->callid);
    evbuffer_add(r->out, "\r\n", 2);
    r->done = true;
    return 0;
}

static const struct {
    const char *code, *text;
} canned[] = {
    { "dup", "Duplicate name/number used." },
    { "after_mismatch", "Pattern does not match the after-value?" },
    { "bad_params", "Invalid parameters to command; please see documentation" },
    { "class_exists", "That class already exists in that domain" },
    { "class_has_files", "Class still has files, unable to delete" },
    { "class_not_found", "Class not found" },
    { "db", "Database error" },
    { "domain_has_files", "Domain still has files, unable to delete" },
    { "domain_exists", "That domain already exists" },
    { "domain_not_empty", "Domain still has classes, unable to delete" },
    { "domain_not_found", "Domain not found" },
    { "failure", "Operation failed" },
    { "host_exists", "That host already exists" },
    { "host_mismatch", "The device specified doesn't belong to the host specified" },
    { "host_not_empty", "Unable to delete host; it contains devices still" },
    { "host_not_found", "Host not found" },
    { "invalid_checker_level", "Checker level invalid.  Please see documentation on this command." },
    { "invalid_mindevcount", "The mindevcount must be at least 1" },
    { "key_exists", "Target key name already exists; can't overwrite." },
    { "no_class", "No class provided" },
    { "no_devices", "No devices found to store file" },
    { "no_device", "Device not found" },
    { "no_domain", "No domain provided" },
    { "no_host", "No host provided" },
    { "no_ip", "IP required to create host" },
    { "no_port", "Port required to create host" },
    { "no_temp_file", "No tempfile or file already closed" },
    { "none_match", "No keys match that pattern and after-value (if any)." },
    { "plugin_aborted", "Action aborted by plugin" },
    { "state_too_high", "Status cannot go from dead to alive; must use down" },
    { "unknown_command", "Unknown server command" },
    { "unknown_host", "Host not found" },
    { "unknown_state", "Invalid/unknown state" },
    { "unreg_domain", "Domain name invalid/not found" },
    { "rebal_not_started", "Rebalance not running" },
    { "no_rebal_state", "No available rebalance status" },
    { "no_rebal_policy", "No rebalance policy available" },
    { "nodel_default_class", "Cannot delete the default class" },
};

const char *mog_err_text(const char *code)
{
    for (size_t i = 0; i < sizeof canned / sizeof canned[0]; i++)
        if (!strcmp(canned[i].code, code))
            return canned[i].text;
    return code;
}

int mog_err(struct mog_reply *r, const char *code, const char *text)
{
    if (r->done)
        return -1;
    /* Drop the pairs added so far: the reply starts over as ERR. */
    size_t have = evbuffer_get_length(r->out);
    if (have > r->start) {
        struct evbuffer *keep = evbuffer_new();
        evbuffer_remove_buffer(r->out, keep, r->start);
        evbuffer_drain(r->out, evbuffer_get_length(r->out));
        evbuffer_add_buffer(r->out, keep);
        evbuffer_free(keep);
    }
    evbuffer_add(r->out, "ERR ", 4);
    evbuffer_add(r->out, code, strlen(code));
    evbuffer_add(r->out, " ", 1);
    const char *t = text ? text : mog_err_text(code);
    mog_url_encode_buf(r->out, t, strlen(t));
    if (r->callid) {
        evbuffer_add(r->out, " ", 1);
        mog_url_encode_buf(r->out, r->callid, strlen(r->callid));
    }
    evbuffer_add(r->out, "\r\n", 2);
    r->done = true;
    return -1;
}

/* ---- fid paths ------------------------------------------------------------------ */

int mog_fid_path(char *out, size_t len, int64_t devid, int64_t fid)
{
    char f[32];
    snprintf(f, sizeof f, "%010lld", (long long)fid);
    size_t fl = strlen(f);
    /* The first digit(s) beyond the last 9 form the top directory. */
    size_t top = fl - 9;
    return snprintf(out, len, "/dev%lld/%.*s/%.3s/%.3s/%s.fid", (long long)devid, (int)top, f, f + top, f + top + 3, f);
}

int64_t mog_path_devid(const char *path, size_t len)
{
    const char *p = path, *end = path + len;
    /* Accept a full URL: skip "http://host:port". */
    if (len > 7 && !strncmp(p, "http://", 7)) {
        p += 7;
        while (p < end && *p != '/')
            p++;
    }
    if (end - p < 5 || strncmp(p, "/dev", 4))
        return -1;
    p += 4;
    int64_t v = 0;
    int digits = 0;
    while (p < end && *p >= '0' && *p <= '9' && digits < 9) {
        v = v * 10 + (*p - '0');
        p++;
        digits++;
    }
    if (!digits || (p < end && *p != '/'))
        return -1;
    return v;
}

/* "A.B.C.D" or a prefix of it (at least one octet); *octets: how many. */
static int parse_quad(const char *s, size_t len, uint32_t *out, int *octets)
{
    uint32_t v = 0;
    int n = 0;
    size_t i = 0;
    while (i < len) {
        if (n == 4)
            return -1;
        unsigned o = 0;
        size_t start = i;
        while (i < len && s[i] >= '0' && s[i] <= '9' && i - start < 3)
            o = o * 10 + (unsigned)(s[i++] - '0');
        if (i == start || o > 255)
            return -1;
        v = (v << 8) | o;
        n++;
        if (i == len)
            break;
        if (s[i] != '.' || i + 1 == len)
            return -1;
        i++;
    }
    if (n == 0)
        return -1;
    *out = v << (8 * (4 - n));
    *octets = n;
    return 0;
}

/* A contiguous netmask (ones then zeros). */
static bool mask_ok(uint32_t m)
{
    uint32_t inv = ~m;
    return (inv & (inv + 1)) == 0;
}

int mog_netmask_parse(const char *mask, uint32_t *net, uint32_t *bits)
{
    if (!mask)
        return -1;
    size_t len = strlen(mask);
    while (len && mask[len - 1] == ' ')
        len--;
    while (len && *mask == ' ')
        mask++, len--;
    if ((len == 7 && !strncasecmp(mask, "default", 7)) || (len == 3 && !strncasecmp(mask, "any", 3))) {
        *net = *bits = 0;
        return 0;
    }
    uint32_t addr, q, m;
    int octets, qo;
    const char *dash = memchr(mask, '-', len);
    if (dash) {
        /* "A - B": a range that is exactly one block */
        size_t al = (size_t)(dash - mask), bl = len - al - 1;
        const char *bs = dash + 1;
        while (al && mask[al - 1] == ' ')
            al--;
        while (bl && *bs == ' ')
            bs++, bl--;
        if (parse_quad(mask, al, &addr, &octets) < 0 || octets != 4 || parse_quad(bs, bl, &q, &qo) < 0 || qo != 4 ||
            q < addr)
            return -1;
        m = ~(addr ^ q);
        if (!mask_ok(m) || (addr & ~m) != 0 || (q & m) != addr)
            return -1;
        *net = addr;
        *bits = m;
        return 0;
    }
    const char *sep = NULL;
    for (size_t i = 0; i < len; i++)
        if (mask[i] == '/' || mask[i] == ':' || mask[i] == '#') {
            sep = mask + i;
            break;
        }
    /* Net::Netmask 2 refuses the short forms ("10.20") by default. */
    if (parse_quad(mask, sep ? (size_t)(sep - mask) : len, &addr, &octets) < 0 || octets != 4)
        return -1;
    if (!sep) {
        m = 0xffffffffu;
    } else {
        const char *v = sep + 1;
        size_t vl = len - (size_t)(v - mask);
        if (*sep == '/' && vl >= 1 && vl <= 2 && strspn(v, "0123456789") >= vl) {
            unsigned b = (unsigned)atoi(v);
            if ((vl == 2 && v[0] == '0') || b > 32)
                return -1;
            m = b == 0 ? 0 : b == 32 ? 0xffffffffu : ~(0xffffffffu >> b);
        } else if (parse_quad(v, vl, &q, &qo) == 0 && qo == 4) {
            m = *sep == '#' ? ~q : q; /* '#': a host mask */
            if (!mask_ok(m))
                return -1;
        } else {
            return -1;
        }
    }
    *net = addr & m;
    *bits = m;
    return 0;
}

bool mog_netmask_match(const char *mask, const char *ip)
{
    uint32_t net, m, a;
    int octets;
    if (ip && !strncasecmp(ip, "::ffff:", 7))
        ip += 7; /* an IPv4 client on a dual-stack listener */
    if (!ip || mog_netmask_parse(mask, &net, &m) < 0 || parse_quad(ip, strlen(ip), &a, &octets) < 0 || octets != 4)
        return false;
    return (a & m) == net;
}

/* MogileFS-Network's "HostsPerNetwork(zone=N, ...)": N >= 1 for each
 * named zone. Pure (fuzzed). */
int mog_hpn_parse(const char *policy, struct mog_hpn *out)
{
    static const char name[] = "HostsPerNetwork(";
    memset(out, 0, sizeof *out);
    if (strncmp(policy, name, sizeof name - 1))
        return -1;
    const char *p = policy + sizeof name - 1, *close = strchr(p, ')');
    if (!close || close[1] != '\0')
        return -1;
    while (p < close) {
        while (p < close && (*p == ' ' || *p == ','))
            p++;
        if (p == close)
            break;
        const char *eq = memchr(p, '=', (size_t)(close - p));
        if (!eq || eq == p || out->n >= MOG_HPN_MAX)
            return -1;
        size_t zl = (size_t)(eq - p);
        while (zl > 0 && p[zl - 1] == ' ')
            zl--;
        if (zl == 0 || zl >= sizeof out->zone[0])
            return -1;
        memcpy(out->zone[out->n], p, zl);
        out->zone[out->n][zl] = '\0';
        const char *q = eq + 1;
        while (q < close && *q == ' ')
            q++;
        int v = 0, digits = 0;
        for (; q < close && *q >= '0' && *q <= '9' && digits < 4; q++, digits++)
            v = v * 10 + (*q - '0');
        while (q < close && *q == ' ')
            q++;
        if (!digits || v < 1 || (q < close && *q != ','))
            return -1;
        out->need[out->n++] = v;
        p = q;
    }
    return out->n > 0 ? 0 : -1;
}
