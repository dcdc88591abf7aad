/* proto_mysql: MySQL client/server protocol parsers and encoders; see
 * proto_mysql.h. Pure functions over (buffer, length): no I/O, no globals.
 * Every read is bounds-checked against the given length. */
#include "userdb/proto_mysql.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* ---- framing --------------------------------------------------------------- */

int ud_pkt_header(const uint8_t *buf, size_t len, uint32_t *payload_len, uint8_t *seq)
{
    if (len < UD_HDR)
        return 0;
    *payload_len = (uint32_t)buf[0] | (uint32_t)buf[1] << 8 | (uint32_t)buf[2] << 16;
    *seq = buf[3];
    return 1;
}

void ud_put_header(uint8_t *out, uint32_t payload_len, uint8_t seq)
{
    out[0] = (uint8_t)payload_len;
    out[1] = (uint8_t)(payload_len >> 8);
    out[2] = (uint8_t)(payload_len >> 16);
    out[3] = seq;
}

int ud_lenenc_get(const uint8_t *p, size_t len, uint64_t *v)
{
    if (len < 1)
        return 0;
    if (p[0] < 0xfb) {
        *v = p[0];
        return 1;
    }
    size_t n = p[0] == 0xfc ? 2 : p[0] == 0xfd ? 3 : p[0] == 0xfe ? 8 : 0;
    if (n == 0)
        return -1;
    if (len < 1 + n)
        return 0;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x |= (uint64_t)p[1 + i] << (8 * i);
    *v = x;
    return (int)(1 + n);
}

size_t ud_lenenc_put(uint8_t *out, uint64_t v)
{
    if (v < 0xfb) {
        out[0] = (uint8_t)v;
        return 1;
    }
    size_t n;
    if (v < (1u << 16)) {
        out[0] = 0xfc;
        n = 2;
    } else if (v < (1u << 24)) {
        out[0] = 0xfd;
        n = 3;
    } else {
        out[0] = 0xfe;
        n = 8;
    }
    for (size_t i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * i));
    return 1 + n;
}

/* ---- authentication -------------------------------------------------------- */

void ud_native_scramble(const uint8_t salt[UD_SCRAMBLE_LEN], const char *password, uint8_t out[UD_SCRAMBLE_LEN])
{
    uint8_t h1[SHA_DIGEST_LENGTH], h2[SHA_DIGEST_LENGTH], h3[SHA_DIGEST_LENGTH];
    uint8_t buf[UD_SCRAMBLE_LEN + SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)password, strlen(password), h1);
    SHA1(h1, sizeof h1, h2);
    memcpy(buf, salt, UD_SCRAMBLE_LEN);
    memcpy(buf + UD_SCRAMBLE_LEN, h2, sizeof h2);
    SHA1(buf, sizeof buf, h3);
    for (int i = 0; i < UD_SCRAMBLE_LEN; i++)
        out[i] = h1[i] ^ h3[i];
}

bool ud_native_check(const uint8_t salt[UD_SCRAMBLE_LEN], const char *password, const uint8_t *response, size_t len)
{
    if (!password || !*password)
        return len == 0;
    if (len != UD_SCRAMBLE_LEN)
        return false;
    uint8_t want[UD_SCRAMBLE_LEN];
    ud_native_scramble(salt, password, want);
    uint8_t diff = 0;
    for (int i = 0; i < UD_SCRAMBLE_LEN; i++)
        diff |= (uint8_t)(want[i] ^ response[i]);
    return diff == 0;
}

/* ---- server side: handshake ------------------------------------------------ */

static const char native_plugin[] = "mysql_native_password";

size_t ud_enc_handshake(uint8_t *out, size_t cap, const char *version, uint32_t conn_id,
                        const uint8_t salt[UD_SCRAMBLE_LEN], uint32_t caps, uint8_t charset, uint16_t status)
{
    size_t vlen = strlen(version);
    size_t need = 1 + vlen + 1 + 4 + 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10 + 13 + sizeof native_plugin;
    if (cap < need)
        return 0;
    uint8_t *p = out;
    *p++ = 10;
    memcpy(p, version, vlen + 1);
    p += vlen + 1;
    put32(p, conn_id);
    p += 4;
    memcpy(p, salt, 8);
    p += 8;
    *p++ = 0;
    put16(p, (uint16_t)caps);
    p += 2;
    *p++ = charset;
    put16(p, status);
    p += 2;
    put16(p, (uint16_t)(caps >> 16));
    p += 2;
    *p++ = UD_SCRAMBLE_LEN + 1;
    memset(p, 0, 10);
    p += 10;
    memcpy(p, salt + 8, 12);
    p += 12;
    *p++ = 0;
    memcpy(p, native_plugin, sizeof native_plugin);
    p += sizeof native_plugin;
    return (size_t)(p - out);
}

/* A NUL-ended string at p (within end): its length, or -1 if no NUL. */
static long nul_len(const uint8_t *p, const uint8_t *end)
{
    const uint8_t *z = memchr(p, 0, (size_t)(end - p));
    return z ? (long)(z - p) : -1;
}

int ud_parse_hs_response(const uint8_t *p, size_t len, struct ud_hs_response *out)
{
    memset(out, 0, sizeof *out);
    if (len < 4)
        return -1;
    out->caps = get32(p);
    if (!(out->caps & UD_CLIENT_PROTOCOL_41))
        return -1;
    if (len < 32)
        return -1;
    out->max_packet = get32(p + 4);
    out->charset = p[8];
    if (len == 32) {
        if (out->caps & UD_CLIENT_SSL) {
            out->ssl_request = true;
            return 0;
        }
        return -1;
    }
    const uint8_t *q = p + 32, *end = p + len;
    long n = nul_len(q, end);
    if (n < 0)
        return -1;
    out->user = (const char *)q;
    out->user_len = (size_t)n;
    q += n + 1;
    if (out->caps & UD_CLIENT_PLUGIN_AUTH_LENENC) {
        uint64_t alen;
        int k = ud_lenenc_get(q, (size_t)(end - q), &alen);
        if (k <= 0 || alen > (uint64_t)(end - q - k))
            return -1;
        q += k;
        out->auth = q;
        out->auth_len = (size_t)alen;
        q += alen;
    } else if (out->caps & UD_CLIENT_SECURE_CONNECTION) {
        if (q >= end)
            return -1;
        size_t alen = *q++;
        if (alen > (size_t)(end - q))
            return -1;
        out->auth = q;
        out->auth_len = alen;
        q += alen;
    } else {
        n = nul_len(q, end);
        if (n < 0)
            return -1;
        out->auth = q;
        out->auth_len = (size_t)n;
        q += n + 1;
    }
    if ((out->caps & UD_CLIENT_CONNECT_WITH_DB) && q < end) {
        n = nul_len(q, end);
        if (n < 0)
            return -1;
        out->db = (const char *)q;
        out->db_len = (size_t)n;
        q += n + 1;
    }
    if ((out->caps & UD_CLIENT_PLUGIN_AUTH) && q < end) {
        n = nul_len(q, end);
        if (n < 0) /* some clients leave it unterminated at the very end */
            n = end - q;
        out->plugin = (const char *)q;
        out->plugin_len = (size_t)n;
    }
    return 0;
}

/* ---- client side ----------------------------------------------------------- */

int ud_parse_server_hs(const uint8_t *p, size_t len, struct ud_server_hs *out)
{
    memset(out, 0, sizeof *out);
    if (len < 1 || p[0] != 10)
        return -1;
    const uint8_t *q = p + 1, *end = p + len;
    long n = nul_len(q, end);
    if (n < 0)
        return -1;
    snprintf(out->version, sizeof out->version, "%.*s", (int)n, (const char *)q);
    q += n + 1;
    if (end - q < 4 + 8 + 1 + 2)
        return -1;
    out->conn_id = get32(q);
    q += 4;
    memcpy(out->salt, q, 8);
    q += 8;
    q++; /* filler */
    out->caps = get16(q);
    q += 2;
    if (end - q >= 5 + 1 + 10) {
        out->charset = *q++;
        out->status = get16(q);
        q += 2;
        out->caps |= (uint32_t)get16(q) << 16;
        q += 2;
        uint8_t alen = *q++;
        q += 10;
        if (!(out->caps & UD_CLIENT_SECURE_CONNECTION))
            return -1;
        size_t part2 = alen > 8 ? (size_t)alen - 8 : 13;
        if (part2 < 13)
            part2 = 13;
        if ((size_t)(end - q) < part2)
            return -1;
        memcpy(out->salt + 8, q, 12);
        q += part2;
        if (out->caps & UD_CLIENT_PLUGIN_AUTH) {
            n = nul_len(q, end);
            if (n < 0)
                n = end - q;
            snprintf(out->plugin, sizeof out->plugin, "%.*s", (int)n, (const char *)q);
        }
        return 0;
    }
    return -1;
}

size_t ud_enc_hs_response(uint8_t *out, size_t cap, uint32_t caps, uint8_t charset, const char *user,
                          const char *password, const uint8_t salt[UD_SCRAMBLE_LEN], const char *db)
{
    size_t ulen = strlen(user), dlen = db ? strlen(db) : 0;
    size_t need = 32 + ulen + 1 + 1 + UD_SCRAMBLE_LEN + dlen + 1 + sizeof native_plugin;
    if (cap < need)
        return 0;
    if (db && *db)
        caps |= UD_CLIENT_CONNECT_WITH_DB;
    else
        caps &= ~UD_CLIENT_CONNECT_WITH_DB;
    caps &= ~(UD_CLIENT_PLUGIN_AUTH_LENENC | UD_CLIENT_CONNECT_ATTRS);
    uint8_t *p = out;
    put32(p, caps);
    p += 4;
    put32(p, UD_MAX_PAYLOAD);
    p += 4;
    *p++ = charset;
    memset(p, 0, 23);
    p += 23;
    memcpy(p, user, ulen + 1);
    p += ulen + 1;
    if (password && *password) {
        *p++ = UD_SCRAMBLE_LEN;
        ud_native_scramble(salt, password, p);
        p += UD_SCRAMBLE_LEN;
    } else {
        *p++ = 0;
    }
    if (caps & UD_CLIENT_CONNECT_WITH_DB) {
        memcpy(p, db, dlen + 1);
        p += dlen + 1;
    }
    memcpy(p, native_plugin, sizeof native_plugin);
    p += sizeof native_plugin;
    return (size_t)(p - out);
}

int ud_parse_auth_switch(const uint8_t *p, size_t len, char *plugin, size_t plugin_cap, uint8_t salt[UD_SCRAMBLE_LEN])
{
    if (len < 2 || p[0] != 0xfe)
        return -1;
    const uint8_t *q = p + 1, *end = p + len;
    long n = nul_len(q, end);
    if (n < 0)
        return -1;
    snprintf(plugin, plugin_cap, "%.*s", (int)n, (const char *)q);
    q += n + 1;
    size_t rest = (size_t)(end - q);
    if (rest > 0 && q[rest - 1] == 0)
        rest--;
    if (rest < UD_SCRAMBLE_LEN)
        return -1;
    memcpy(salt, q, UD_SCRAMBLE_LEN);
    return 0;
}

/* ---- replies -------------------------------------------------------------- */

size_t ud_enc_ok(uint8_t *out, size_t cap, uint8_t seq, uint64_t affected, uint64_t insert_id, uint16_t status,
                 uint16_t warnings)
{
    if (cap < UD_HDR + 1 + 9 + 9 + 4)
        return 0;
    uint8_t *p = out + UD_HDR;
    *p++ = 0;
    p += ud_lenenc_put(p, affected);
    p += ud_lenenc_put(p, insert_id);
    put16(p, status);
    p += 2;
    put16(p, warnings);
    p += 2;
    size_t n = (size_t)(p - out - UD_HDR);
    ud_put_header(out, (uint32_t)n, seq);
    return n + UD_HDR;
}

size_t ud_enc_err(uint8_t *out, size_t cap, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg)
{
    size_t mlen = strlen(msg);
    if (cap < UD_HDR + 9 + 1)
        return 0;
    if (mlen > cap - UD_HDR - 9)
        mlen = cap - UD_HDR - 9;
    if (mlen > 512)
        mlen = 512;
    uint8_t *p = out + UD_HDR;
    *p++ = 0xff;
    put16(p, code);
    p += 2;
    *p++ = '#';
    memcpy(p, sqlstate && strlen(sqlstate) == 5 ? sqlstate : "HY000", 5);
    p += 5;
    memcpy(p, msg, mlen);
    p += mlen;
    size_t n = (size_t)(p - out - UD_HDR);
    ud_put_header(out, (uint32_t)n, seq);
    return n + UD_HDR;
}

size_t ud_enc_eof(uint8_t *out, size_t cap, uint8_t seq, uint16_t status, uint16_t warnings)
{
    if (cap < UD_HDR + 5)
        return 0;
    uint8_t *p = out + UD_HDR;
    p[0] = 0xfe;
    put16(p + 1, warnings);
    put16(p + 3, status);
    ud_put_header(out, 5, seq);
    return UD_HDR + 5;
}

static uint8_t *put_lenstr(uint8_t *p, const char *s, size_t n)
{
    p += ud_lenenc_put(p, n);
    memcpy(p, s, n);
    return p + n;
}

size_t ud_enc_result(uint8_t *out, size_t cap, uint8_t seq, const char *colname, const char *const *values,
                     size_t nvalues, uint16_t status)
{
    size_t clen = strlen(colname);
    if (clen > 250)
        clen = 250;
    size_t need = UD_HDR + 1 + UD_HDR + 32 + clen + 2 * (UD_HDR + 5);
    for (size_t i = 0; i < nvalues; i++)
        need += UD_HDR + 9 + (values[i] ? strlen(values[i]) : 0);
    if (cap < need)
        return 0;
    uint8_t *p = out, *start;
    /* column count */
    ud_put_header(p, 1, seq++);
    p[UD_HDR] = 1;
    p += UD_HDR + 1;
    /* column definition: a BIGINT UNSIGNED NOT NULL column */
    start = p;
    p += UD_HDR;
    p = put_lenstr(p, "def", 3);
    p = put_lenstr(p, "", 0);
    p = put_lenstr(p, "", 0);
    p = put_lenstr(p, "", 0);
    p = put_lenstr(p, colname, clen);
    p = put_lenstr(p, "", 0);
    *p++ = 0x0c;
    put16(p, 63);
    p += 2; /* binary */
    put32(p, 20);
    p += 4;      /* display length */
    *p++ = 0x08; /* MYSQL_TYPE_LONGLONG */
    put16(p, 0x0001 | 0x0020 | 0x0080);
    p += 2;   /* NOT_NULL | UNSIGNED | BINARY */
    *p++ = 0; /* decimals */
    *p++ = 0;
    *p++ = 0;
    ud_put_header(start, (uint32_t)(p - start - UD_HDR), seq++);
    p += ud_enc_eof(p, UD_HDR + 5, seq++, status, 0);
    for (size_t i = 0; i < nvalues; i++) {
        start = p;
        p += UD_HDR;
        if (values[i])
            p = put_lenstr(p, values[i], strlen(values[i]));
        else
            *p++ = 0xfb;
        ud_put_header(start, (uint32_t)(p - start - UD_HDR), seq++);
    }
    p += ud_enc_eof(p, UD_HDR + 5, seq++, status, 0);
    return (size_t)(p - out);
}

size_t ud_enc_auth_switch(uint8_t *out, size_t cap, uint8_t seq, const uint8_t salt[UD_SCRAMBLE_LEN])
{
    size_t n = 1 + sizeof native_plugin + UD_SCRAMBLE_LEN + 1;
    if (cap < UD_HDR + n)
        return 0;
    uint8_t *p = out + UD_HDR;
    *p++ = 0xfe;
    memcpy(p, native_plugin, sizeof native_plugin);
    p += sizeof native_plugin;
    memcpy(p, salt, UD_SCRAMBLE_LEN);
    p += UD_SCRAMBLE_LEN;
    *p++ = 0;
    ud_put_header(out, (uint32_t)n, seq);
    return UD_HDR + n;
}

int ud_parse_ok(const uint8_t *p, size_t len, struct ud_ok *out)
{
    memset(out, 0, sizeof *out);
    if (len < 1 || (p[0] != 0x00 && p[0] != 0xfe))
        return -1;
    size_t off = 1;
    int k = ud_lenenc_get(p + off, len - off, &out->affected);
    if (k <= 0)
        return -1;
    off += (size_t)k;
    k = ud_lenenc_get(p + off, len - off, &out->insert_id);
    if (k <= 0)
        return -1;
    off += (size_t)k;
    if (len - off < 4)
        return len - off >= 2 ? (out->status = get16(p + off), 0) : -1;
    out->status = get16(p + off);
    out->warnings = get16(p + off + 2);
    return 0;
}

int ud_parse_err(const uint8_t *p, size_t len, uint16_t *code, char *msg, size_t cap)
{
    if (len < 3 || p[0] != 0xff)
        return -1;
    *code = get16(p + 1);
    size_t off = 3;
    if (len >= 9 && p[3] == '#')
        off = 9;
    if (cap)
        snprintf(msg, cap, "%.*s", (int)(len - off), (const char *)p + off);
    return 0;
}

/* ---- reply framing ----------------------------------------------------------- */

enum {
    RS_FIRST = 0,
    RS_COLDEFS,
    RS_META_EOF,
    RS_ROWS,
    RS_PARAMS,
    RS_PARAM_EOF,
    RS_PCOLS,
    RS_PCOL_EOF,
    RS_FIELDS,
};

void ud_resp_start(struct ud_resp *r, enum ud_resp_kind kind)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->state = kind == UD_RESP_FETCH ? RS_ROWS : kind == UD_RESP_FIELDS ? RS_FIELDS : RS_FIRST;
}

enum ud_resp_kind ud_resp_kind_for(uint8_t command)
{
    switch (command) {
    case UD_COM_QUERY: return UD_RESP_QUERY;
    case UD_COM_STMT_EXECUTE: return UD_RESP_EXECUTE;
    case UD_COM_STMT_FETCH: return UD_RESP_FETCH;
    case UD_COM_STMT_PREPARE: return UD_RESP_PREPARE;
    case UD_COM_FIELD_LIST: return UD_RESP_FIELDS;
    case UD_COM_STMT_CLOSE:
    case UD_COM_STMT_SEND_LONG_DATA:
    case UD_COM_QUIT: return UD_RESP_NONE;
    default: return UD_RESP_SIMPLE;
    }
}

static bool is_eof(const uint8_t *p, size_t avail, uint32_t plen) { return avail >= 1 && p[0] == 0xfe && plen < 9; }

static uint16_t eof_status(const uint8_t *p, size_t avail) { return avail >= 5 ? get16(p + 3) : 0; }

int ud_resp_feed(struct ud_resp *r, const uint8_t *p, size_t avail, uint32_t plen)
{
    if (avail > plen)
        avail = plen;
    if (r->cont) { /* the rest of a 16 MiB packet: opaque */
        r->cont = plen == UD_MAX_PAYLOAD;
        return 0;
    }
    if (plen == 0 || avail == 0)
        return -1;
    bool big = plen == UD_MAX_PAYLOAD;
    switch (r->state) {
    case RS_FIRST:
        if (r->kind == UD_RESP_SIMPLE) {
            r->error = p[0] == 0xff;
            if (p[0] == 0x00) {
                struct ud_ok ok;
                if (ud_parse_ok(p, avail, &ok) == 0)
                    r->status = ok.status;
            }
            return big ? -1 : 1;
        }
        if (r->kind == UD_RESP_PREPARE) {
            if (p[0] == 0xff) {
                r->error = true;
                return 1;
            }
            if (p[0] != 0x00 || avail < 9)
                return -1;
            uint16_t cols = get16(p + 5), params = get16(p + 7);
            r->cols_after = cols;
            if (params) {
                r->left = params;
                r->state = RS_PARAMS;
                return 0;
            }
            if (cols) {
                r->left = cols;
                r->state = RS_PCOLS;
                return 0;
            }
            return 1;
        }
        if (p[0] == 0x00) {
            struct ud_ok ok;
            if (ud_parse_ok(p, avail, &ok) < 0)
                return -1;
            r->status = ok.status;
            return (ok.status & UD_STATUS_MORE_RESULTS) ? 0 : 1;
        }
        if (p[0] == 0xff) {
            r->error = true;
            return 1;
        }
        if (p[0] == 0xfb || big)
            return -1; /* LOCAL INFILE request: never offered */
        {
            uint64_t n;
            if (ud_lenenc_get(p, avail, &n) <= 0 || n == 0 || n > 65535)
                return -1;
            r->left = n;
            r->state = RS_COLDEFS;
        }
        return 0;
    case RS_COLDEFS:
        if (big)
            return -1;
        if (--r->left == 0)
            r->state = RS_META_EOF;
        return 0;
    case RS_META_EOF:
        if (!is_eof(p, avail, plen))
            return -1;
        r->status = eof_status(p, avail);
        if (r->kind == UD_RESP_EXECUTE && (r->status & UD_STATUS_CURSOR_EXISTS))
            return 1;
        r->state = RS_ROWS;
        return 0;
    case RS_ROWS:
        if (big) {
            r->cont = true;
            return 0;
        }
        if (is_eof(p, avail, plen)) {
            r->status = eof_status(p, avail);
            if ((r->status & UD_STATUS_MORE_RESULTS) && r->kind != UD_RESP_FETCH) {
                r->state = RS_FIRST;
                return 0;
            }
            return 1;
        }
        if (p[0] == 0xff) {
            r->error = true;
            return 1;
        }
        return 0;
    case RS_PARAMS:
    case RS_PCOLS:
        if (big)
            return -1;
        if (--r->left == 0)
            r->state = r->state == RS_PARAMS ? RS_PARAM_EOF : RS_PCOL_EOF;
        return 0;
    case RS_PARAM_EOF:
        if (!is_eof(p, avail, plen))
            return -1;
        if (r->cols_after) {
            r->left = r->cols_after;
            r->state = RS_PCOLS;
            return 0;
        }
        return 1;
    case RS_PCOL_EOF: return is_eof(p, avail, plen) ? 1 : -1;
    case RS_FIELDS:
        if (big)
            return -1;
        if (p[0] == 0xff) {
            r->error = true;
            return 1;
        }
        return is_eof(p, avail, plen) ? 1 : 0;
    }
    return -1;
}

/* ---- statements ------------------------------------------------------------- */

/* Skip blanks and comments from p; a comment whose text starts with
 * "user=" sets the hint (the first one wins). */
static const char *skip_comments(const char *p, const char *end, struct ud_query *q, int *bad)
{
    for (;;) {
        while (p < end && isspace((unsigned char)*p))
            p++;
        if (end - p >= 2 && p[0] == '/' && p[1] == '*') {
            const char *c = p + 2;
            const char *close = NULL;
            for (const char *s = c; s + 1 < end; s++)
                if (s[0] == '*' && s[1] == '/') {
                    close = s;
                    break;
                }
            if (!close)
                return p; /* unterminated: the server will say so */
            const char *t = c;
            while (t < close && isspace((unsigned char)*t))
                t++;
            if (q->hint == UD_HINT_NONE && close - t >= 5 && strncasecmp(t, "user=", 5) == 0) {
                t += 5;
                const char *v = t;
                while (t < close && !isspace((unsigned char)*t))
                    t++;
                const char *ve = t;
                while (t < close && isspace((unsigned char)*t))
                    t++;
                if (t != close) {
                    *bad = 1;
                } else if (ve - v == 3 && strncasecmp(v, "new", 3) == 0) {
                    q->hint = UD_HINT_NEW;
                } else {
                    uint64_t id = 0;
                    int digits = 0;
                    for (const char *d = v; d < ve; d++) {
                        if (!isdigit((unsigned char)*d) || digits >= 10) {
                            *bad = 1;
                            break;
                        }
                        id = id * 10 + (uint64_t)(*d - '0');
                        digits++;
                    }
                    if (!*bad && (digits == 0 || id == 0 || id > 0xffffffffu))
                        *bad = 1;
                    if (!*bad) {
                        q->hint = UD_HINT_USER;
                        q->user_id = id;
                    }
                }
            }
            p = close + 2;
            continue;
        }
        if ((end - p >= 3 && p[0] == '-' && p[1] == '-' && isspace((unsigned char)p[2])) || (p < end && *p == '#')) {
            while (p < end && *p != '\n')
                p++;
            continue;
        }
        return p;
    }
}

static bool word_is(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(end - p) < n || strncasecmp(p, w, n) != 0)
        return false;
    return (size_t)(end - p) == n || !(isalnum((unsigned char)p[n]) || p[n] == '_');
}

static const char *next_word(const char *p, const char *end)
{
    while (p < end && (isalnum((unsigned char)*p) || *p == '_' || *p == '@'))
        p++;
    while (p < end && isspace((unsigned char)*p))
        p++;
    return p;
}

/* Case-insensitive search for w in [p, end). */
static bool contains(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    int lo = tolower((unsigned char)w[0]), up = toupper((unsigned char)w[0]);
    for (; (size_t)(end - p) >= n; p++)
        if ((*p == lo || *p == up) && strncasecmp(p, w, n) == 0)
            return true;
    return false;
}

/* What makes a SELECT a write or a pin, found in one pass over the text
 * (a point select is the statement the router sees most). */
#define UD_MARK_WRITE 1u /* FOR UPDATE, LOCK IN SHARE MODE, GET_LOCK, " INTO " */
#define UD_MARK_PIN 2u   /* GET_LOCK, ":=" */
static unsigned select_marks(const char *p, const char *end)
{
    static const struct {
        const char *w;
        size_t n;
        unsigned mark;
    } needles[] = {
        { "FOR UPDATE", 10, UD_MARK_WRITE },
        { "LOCK IN SHARE MODE", 18, UD_MARK_WRITE },
        { "GET_LOCK", 8, UD_MARK_WRITE | UD_MARK_PIN },
        { " INTO ", 6, UD_MARK_WRITE },
        { ":=", 2, UD_MARK_PIN },
    };
    unsigned marks = 0;
    for (; p < end; p++) {
        int c = *p & ~0x20; /* letters to upper case; ' ' and ':' map to 0 and 0x1a */
        if (c != 'F' && c != 'L' && c != 'G' && c != 0 && c != 0x1a)
            continue;
        for (size_t i = 0; i < sizeof needles / sizeof needles[0]; i++)
            if ((size_t)(end - p) >= needles[i].n && (needles[i].w[0] & ~0x20) == c &&
                strncasecmp(p, needles[i].w, needles[i].n) == 0)
                marks |= needles[i].mark;
        if (marks == (UD_MARK_WRITE | UD_MARK_PIN))
            break;
    }
    return marks;
}

/* "name ( 'arg' ) [;]" at p: the unescaped argument into q->argbuf. */
static int parse_special_call(const char *p, const char *end, const char *name, struct ud_query *q)
{
    size_t n = strlen(name);
    if ((size_t)(end - p) < n || strncasecmp(p, name, n) != 0)
        return 0;
    p += n;
    while (p < end && isspace((unsigned char)*p))
        p++;
    if (p >= end || *p != '(')
        return 0;
    p++;
    while (p < end && isspace((unsigned char)*p))
        p++;
    if (p >= end || (*p != '\'' && *p != '"'))
        return -1;
    char quote = *p++;
    size_t o = 0;
    for (;;) {
        if (p >= end)
            return -1;
        char c = *p++;
        if (c == '\\') {
            if (p >= end)
                return -1;
            c = *p++;
        } else if (c == quote) {
            if (p < end && *p == quote)
                p++;
            else
                break;
        }
        if (o + 1 >= sizeof q->argbuf)
            return -1;
        q->argbuf[o++] = c;
    }
    q->argbuf[o] = '\0';
    q->arg = q->argbuf;
    q->arg_len = o;
    while (p < end && isspace((unsigned char)*p))
        p++;
    if (p >= end || *p != ')')
        return -1;
    p++;
    while (p < end && (isspace((unsigned char)*p) || *p == ';'))
        p++;
    return p == end ? 1 : -1;
}

int ud_query_classify(const char *q, size_t len, struct ud_query *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->autocommit = -1;
    const char *end = q + len, *p;
    int bad = 0;
    p = skip_comments(q, end, out, &bad);
    out->keyword_at = p;
    if (bad) {
        out->hint = UD_HINT_BAD;
        snprintf(err, errlen, "userdb: bad routing hint: use /* user=ID */ or /* user=new */");
        return -1;
    }
    if (word_is(p, end, "SELECT")) {
        const char *a = next_word(p, end);
        int r = parse_special_call(a, end, "userdb_create_user", out);
        if (r == 0)
            r = parse_special_call(a, end, "userdb_counter", out) * 2;
        else
            out->special = UD_SPECIAL_CREATE_USER;
        if (r == 2 || r == -2)
            out->special = UD_SPECIAL_COUNTER;
        if (r < 0) {
            snprintf(err, errlen, "userdb: %s takes one quoted string argument",
                     out->special == UD_SPECIAL_COUNTER ? "userdb_counter" : "userdb_create_user");
            return -1;
        }
        if (out->special)
            return 0;
        unsigned marks = select_marks(p, end);
        out->is_read = !(marks & UD_MARK_WRITE);
        out->pins = (marks & UD_MARK_PIN) != 0;
        return 0;
    }
    if (word_is(p, end, "SHOW") || word_is(p, end, "DESCRIBE") || word_is(p, end, "DESC") ||
        word_is(p, end, "EXPLAIN") || word_is(p, end, "HELP")) {
        out->is_read = true;
        return 0;
    }
    if (word_is(p, end, "KILL")) {
        /* KILL [CONNECTION | QUERY] <id>: the id is one userdbd handed out. */
        const char *a = next_word(p, end);
        int kind = 1;
        if (word_is(a, end, "CONNECTION")) {
            a = next_word(a, end);
        } else if (word_is(a, end, "QUERY")) {
            kind = 2;
            a = next_word(a, end);
        }
        uint64_t id = 0;
        int digits = 0;
        while (a < end && isdigit((unsigned char)*a) && digits < 10) {
            id = id * 10 + (uint64_t)(*a++ - '0');
            digits++;
        }
        while (a < end && (isspace((unsigned char)*a) || *a == ';'))
            a++;
        if (digits && a == end && id <= 0xffffffffu) {
            out->kill = kind;
            out->kill_id = id;
        }
        return 0;
    }
    if (word_is(p, end, "COMMIT") || (word_is(p, end, "ROLLBACK") && !contains(p, end, " TO "))) {
        out->ends_trans = !contains(p, end, "CHAIN") || contains(p, end, "NO CHAIN");
        return 0;
    }
    if (word_is(p, end, "SET")) {
        /* SET [SESSION|@@session.|@@] autocommit = value */
        const char *a = next_word(p, end);
        if (word_is(a, end, "SESSION"))
            a = next_word(a, end);
        if (end - a >= 10 && strncasecmp(a, "@@session.", 10) == 0)
            a += 10;
        else if (end - a >= 2 && a[0] == '@' && a[1] == '@')
            a += 2;
        if (word_is(a, end, "autocommit")) {
            a += 10;
            while (a < end && isspace((unsigned char)*a))
                a++;
            if (a < end && *a == '=') {
                a++;
                while (a < end && isspace((unsigned char)*a))
                    a++;
                const char *v = a;
                while (a < end && isalnum((unsigned char)*a))
                    a++;
                const char *ve = a;
                while (a < end && (isspace((unsigned char)*a) || *a == ';'))
                    a++;
                if (a == end) {
                    size_t vl = (size_t)(ve - v);
                    if ((vl == 1 && *v == '1') || (vl == 2 && !strncasecmp(v, "on", 2)) ||
                        (vl == 4 && !strncasecmp(v, "true", 4))) {
                        out->autocommit = 1;
                        return 0;
                    }
                    if ((vl == 1 && *v == '0') || (vl == 3 && !strncasecmp(v, "off", 3)) ||
                        (vl == 5 && !strncasecmp(v, "false", 5))) {
                        out->autocommit = 0;
                        return 0;
                    }
                }
            }
        }
        out->pins = true;
        return 0;
    }
    if (word_is(p, end, "USE") || word_is(p, end, "PREPARE") || word_is(p, end, "EXECUTE") ||
        word_is(p, end, "DEALLOCATE") || word_is(p, end, "LOCK") || word_is(p, end, "HANDLER") ||
        (word_is(p, end, "CREATE") && word_is(next_word(p, end), end, "TEMPORARY"))) {
        out->pins = true;
        return 0;
    }
    return 0;
}

int ud_parse_coldef_name(const uint8_t *p, size_t len, const char **name, size_t *name_len)
{
    size_t off = 0;
    for (int i = 0; i < 5; i++) { /* catalog, schema, table, org_table, name */
        uint64_t n;
        int k = ud_lenenc_get(p + off, len - off, &n);
        if (k <= 0 || n > len - off - (size_t)k)
            return -1;
        off += (size_t)k;
        if (i == 4) {
            *name = (const char *)p + off;
            *name_len = (size_t)n;
        }
        off += (size_t)n;
    }
    return 0;
}

int ud_text_row_cell(const uint8_t *p, size_t len, int i, const char **val, size_t *val_len)
{
    size_t off = 0;
    for (int c = 0;; c++) {
        if (off >= len)
            return -1;
        if (p[off] == 0xfb) {
            off++;
            if (c == i)
                return 0;
            continue;
        }
        uint64_t n;
        int k = ud_lenenc_get(p + off, len - off, &n);
        if (k <= 0 || n > len - off - (size_t)k)
            return -1;
        off += (size_t)k;
        if (c == i) {
            *val = (const char *)p + off;
            *val_len = (size_t)n;
            return 1;
        }
        off += (size_t)n;
    }
}

size_t ud_sql_quote(char *out, size_t cap, const char *s, size_t n)
{
    if (cap < 2 * n + 3)
        return 0;
    char *o = out;
    *o++ = '\'';
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        switch (c) {
        case '\0':
            *o++ = '\\';
            *o++ = '0';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\032':
            *o++ = '\\';
            *o++ = 'Z';
            break;
        case '\'':
        case '"':
        case '\\':
            *o++ = '\\';
            *o++ = c;
            break;
        default: *o++ = c;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return (size_t)(o - out);
}

int ud_parse_change_user(const uint8_t *p, size_t len, uint32_t caps, struct ud_hs_response *out)
{
    memset(out, 0, sizeof *out);
    out->caps = caps;
    const uint8_t *end = p + len;
    const uint8_t *nul = memchr(p, 0, len);
    if (!nul)
        return -1;
    out->user = (const char *)p;
    out->user_len = (size_t)(nul - p);
    p = nul + 1;
    if (caps & UD_CLIENT_SECURE_CONNECTION) {
        if (p >= end)
            return -1;
        size_t alen = *p++;
        if ((size_t)(end - p) < alen)
            return -1;
        out->auth = p;
        out->auth_len = alen;
        p += alen;
    } else {
        nul = memchr(p, 0, (size_t)(end - p));
        if (!nul)
            return -1;
        out->auth = p;
        out->auth_len = (size_t)(nul - p);
        p = nul + 1;
    }
    if (p >= end)
        return 0; /* old clients stop here */
    nul = memchr(p, 0, (size_t)(end - p));
    if (!nul)
        return -1;
    if (nul > p) {
        out->db = (const char *)p;
        out->db_len = (size_t)(nul - p);
    }
    p = nul + 1;
    if ((size_t)(end - p) >= 2) {
        out->charset = p[0];
        p += 2;
        if ((caps & UD_CLIENT_PLUGIN_AUTH) && p < end) {
            nul = memchr(p, 0, (size_t)(end - p));
            size_t pl = nul ? (size_t)(nul - p) : (size_t)(end - p);
            out->plugin = (const char *)p;
            out->plugin_len = pl;
        }
    }
    return 0;
}
