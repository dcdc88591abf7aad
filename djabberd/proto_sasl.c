/* proto_sasl: PLAIN and SCRAM-SHA-1/-256 server side, pure (OpenSSL for the
 * hashes and the random nonce). */
#include "djabberd/proto_sasl.h"

#include "common/base64.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

enum dj_sasl_mech dj_sasl_mech_parse(const char *name)
{
    if (!name)
        return DJ_SASL_NONE;
    if (!strcmp(name, "PLAIN"))
        return DJ_SASL_PLAIN;
    if (!strcmp(name, "SCRAM-SHA-1"))
        return DJ_SASL_SCRAM_SHA1;
    if (!strcmp(name, "SCRAM-SHA-256"))
        return DJ_SASL_SCRAM_SHA256;
    if (!strcmp(name, "SCRAM-SHA-1-PLUS"))
        return DJ_SASL_SCRAM_SHA1_PLUS;
    if (!strcmp(name, "SCRAM-SHA-256-PLUS"))
        return DJ_SASL_SCRAM_SHA256_PLUS;
    return DJ_SASL_NONE;
}

const char *dj_sasl_mech_name(enum dj_sasl_mech m)
{
    switch (m) {
    case DJ_SASL_PLAIN: return "PLAIN";
    case DJ_SASL_SCRAM_SHA1: return "SCRAM-SHA-1";
    case DJ_SASL_SCRAM_SHA256: return "SCRAM-SHA-256";
    case DJ_SASL_SCRAM_SHA1_PLUS: return "SCRAM-SHA-1-PLUS";
    case DJ_SASL_SCRAM_SHA256_PLUS: return "SCRAM-SHA-256-PLUS";
    default: return "";
    }
}

bool dj_sasl_mech_plus(enum dj_sasl_mech m) { return m == DJ_SASL_SCRAM_SHA1_PLUS || m == DJ_SASL_SCRAM_SHA256_PLUS; }

static bool mech_sha1(enum dj_sasl_mech m) { return m == DJ_SASL_SCRAM_SHA1 || m == DJ_SASL_SCRAM_SHA1_PLUS; }

static const EVP_MD *mech_md(enum dj_sasl_mech m, size_t *len)
{
    if (mech_sha1(m)) {
        *len = 20;
        return EVP_sha1();
    }
    *len = 32;
    return EVP_sha256();
}

static const struct dj_scram_keys *mech_keys(const struct dj_creds *c, enum dj_sasl_mech m)
{
    return mech_sha1(m) ? &c->sha1 : &c->sha256;
}

static int derive(enum dj_sasl_mech m, const char *pw, size_t pwlen, const unsigned char *salt, int iter,
                  struct dj_scram_keys *k)
{
    size_t hl;
    const EVP_MD *md = mech_md(m, &hl);
    unsigned char salted[DJ_SCRAM_MAXKEY], client_key[DJ_SCRAM_MAXKEY];
    unsigned int ol;
    if (!PKCS5_PBKDF2_HMAC(pw, (int)pwlen, salt, DJ_SCRAM_SALT, iter, md, (int)hl, salted))
        return -1;
    if (!HMAC(md, salted, (int)hl, (const unsigned char *)"Client Key", 10, client_key, &ol))
        return -1;
    if (!EVP_Digest(client_key, hl, k->stored_key, &ol, md, NULL))
        return -1;
    if (!HMAC(md, salted, (int)hl, (const unsigned char *)"Server Key", 10, k->server_key, &ol))
        return -1;
    OPENSSL_cleanse(salted, sizeof salted);
    return 0;
}

int dj_creds_make(struct dj_creds *c, const char *password, size_t pwlen, int iter)
{
    unsigned char salt[DJ_SCRAM_SALT];
    if (RAND_bytes(salt, DJ_SCRAM_SALT) != 1)
        return -1;
    return dj_creds_derive(c, password, pwlen, salt, iter);
}

int dj_creds_derive(struct dj_creds *c, const char *password, size_t pwlen, const unsigned char *salt, int iter)
{
    memset(c, 0, sizeof *c);
    c->iter = iter > 0 ? iter : DJ_SCRAM_ITER;
    memcpy(c->salt, salt, DJ_SCRAM_SALT);
    if (derive(DJ_SASL_SCRAM_SHA1, password, pwlen, c->salt, c->iter, &c->sha1) < 0)
        return -1;
    return derive(DJ_SASL_SCRAM_SHA256, password, pwlen, c->salt, c->iter, &c->sha256);
}

bool dj_creds_check(const struct dj_creds *c, const char *password, size_t pwlen)
{
    struct dj_scram_keys k;
    if (derive(DJ_SASL_SCRAM_SHA256, password, pwlen, c->salt, c->iter, &k) < 0)
        return false;
    return CRYPTO_memcmp(k.stored_key, c->sha256.stored_key, 32) == 0;
}

static void hex(char *out, const unsigned char *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
    out[2 * n] = 0;
}

static int unhex(unsigned char *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int v = 0;
        for (int j = 0; j < 2; j++) {
            char ch = in[2 * i + j];
            int x = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
            if (x < 0)
                return -1;
            v = v * 16 + x;
        }
        out[i] = (unsigned char)v;
    }
    return 0;
}

size_t dj_creds_format(const struct dj_creds *c, char *out, size_t cap)
{
    char s[33], a[41], b[41], d[65], e[65];
    hex(s, c->salt, 16);
    hex(a, c->sha1.stored_key, 20);
    hex(b, c->sha1.server_key, 20);
    hex(d, c->sha256.stored_key, 32);
    hex(e, c->sha256.server_key, 32);
    int n = snprintf(out, cap, "%d$%s$%s$%s$%s$%s", c->iter, s, a, b, d, e);
    return n < 0 ? 0 : (size_t)n;
}

int dj_creds_parse(struct dj_creds *c, const char *s, size_t len)
{
    memset(c, 0, sizeof *c);
    char buf[300];
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *parts[6];
    char *p = buf;
    for (int i = 0; i < 6; i++) {
        parts[i] = p;
        char *d = strchr(p, '$');
        if (i < 5) {
            if (!d)
                return -1;
            *d = 0;
            p = d + 1;
        } else if (d)
            return -1;
    }
    char *end;
    long it = strtol(parts[0], &end, 10);
    if (*end || it < 1 || it > 1000000)
        return -1;
    c->iter = (int)it;
    static const size_t lens[5] = { 16, 20, 20, 32, 32 };
    unsigned char *dst[5] = { c->salt, c->sha1.stored_key, c->sha1.server_key, c->sha256.stored_key,
                              c->sha256.server_key };
    for (int i = 0; i < 5; i++)
        if (strlen(parts[i + 1]) != lens[i] * 2 || unhex(dst[i], parts[i + 1], lens[i]) < 0)
            return -1;
    return 0;
}

/* ---- base64 (common/base64; SASL payloads decoded leniently) ---- */

int dj_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap)
{
    int n = cap > 0 ? b64_encode(in, len, out, cap - 1) : -1;
    if (n >= 0)
        out[n] = 0;
    return n;
}

int dj_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    return b64_decode(in, len, out, cap, B64_LENIENT);
}

int dj_sasl_plain_parse(const char *msg, size_t len, const char **authzid, size_t *authzid_len, const char **authcid,
                        size_t *authcid_len, const char **pw, size_t *pw_len)
{
    const char *z1 = memchr(msg, 0, len);
    if (!z1)
        return -1;
    const char *z2 = memchr(z1 + 1, 0, len - (size_t)(z1 + 1 - msg));
    if (!z2)
        return -1;
    *authzid = msg;
    *authzid_len = (size_t)(z1 - msg);
    *authcid = z1 + 1;
    *authcid_len = (size_t)(z2 - z1 - 1);
    *pw = z2 + 1;
    *pw_len = len - (size_t)(z2 + 1 - msg);
    if (*authcid_len == 0 || memchr(*pw, 0, *pw_len))
        return -1;
    return 0;
}

/* ---- SCRAM ---- */

/* Unescape a saslname (=2C -> ',', =3D -> '='). */
static int saslname(const char *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c == '=') {
            if (len - i < 3)
                return -1;
            if (!strncmp(in + i, "=2C", 3))
                c = ',';
            else if (!strncmp(in + i, "=3D", 3))
                c = '=';
            else
                return -1;
            i += 2;
        } else if (c == ',' || c == 0)
            return -1;
        if (o + 1 >= cap)
            return -1;
        out[o++] = c;
    }
    out[o] = 0;
    return o > 0 ? 0 : -1;
}

int dj_scram_client_first(struct dj_scram *s, enum dj_sasl_mech m, const unsigned char *cb, size_t cblen,
                          const char *msg, size_t len, const char **cond)
{
    memset(s, 0, sizeof *s);
    s->mech = m;
    *cond = "malformed-request";
    if (cb && cblen > 0 && cblen <= sizeof s->cb) {
        memcpy(s->cb, cb, cblen);
        s->cblen = cblen;
    }
    /* gs2-header: gs2-cbind-flag "," [authzid] "," */
    if (len < 3)
        return -1;
    size_t flag_len;
    if (msg[0] == 'p') {
        static const char tu[] = "p=tls-unique,";
        if (!dj_sasl_mech_plus(m) || !s->cblen || len < sizeof tu - 1 || memcmp(msg, tu, sizeof tu - 1)) {
            /* binding asked for without -PLUS, without TLS, or of a type we lack */
            *cond = s->cblen ? "malformed-request" : "encryption-required";
            return -1;
        }
        flag_len = sizeof tu - 2;
    } else if ((msg[0] == 'n' || msg[0] == 'y') && msg[1] == ',') {
        if (dj_sasl_mech_plus(m))
            return -1; /* -PLUS without binding */
        if (msg[0] == 'y' && s->cblen) {
            /* the client could bind and thinks we cannot: we offered -PLUS, so
             * someone removed it on the way (RFC 5802 6) */
            *cond = "not-authorized";
            return -1;
        }
        flag_len = 1;
    } else
        return -1;
    if (msg[flag_len] != ',')
        return -1;
    const char *c2 = memchr(msg + flag_len + 1, ',', len - flag_len - 1);
    if (!c2)
        return -1;
    size_t gl = (size_t)(c2 + 1 - msg);
    if (gl >= sizeof s->gs2)
        return -1;
    memcpy(s->gs2, msg, gl);
    s->gs2[gl] = 0;
    const char *bare = c2 + 1;
    size_t blen = len - gl;
    if (blen >= sizeof s->client_first_bare || blen < 5)
        return -1;
    memcpy(s->client_first_bare, bare, blen);
    s->client_first_bare[blen] = 0;
    /* n=user,r=nonce[,extensions] */
    if (strncmp(bare, "n=", 2))
        return -1;
    const char *comma = memchr(bare, ',', blen);
    if (!comma)
        return -1;
    if (saslname(bare + 2, (size_t)(comma - bare - 2), s->user, sizeof s->user) < 0)
        return -1;
    const char *r = comma + 1;
    size_t rl = blen - (size_t)(r - bare);
    if (rl < 3 || strncmp(r, "r=", 2))
        return -1;
    const char *rend = memchr(r, ',', rl);
    size_t nl = (rend ? (size_t)(rend - r) : rl) - 2;
    if (nl == 0 || nl > 64)
        return -1;
    for (size_t i = 0; i < nl; i++)
        if (r[2 + i] < 0x21 || r[2 + i] > 0x7e || r[2 + i] == ',')
            return -1;
    unsigned char rnd[18];
    char sn[32];
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return -1;
    dj_b64_encode(rnd, sizeof rnd, sn, sizeof sn);
    memcpy(s->nonce, r + 2, nl);
    memcpy(s->nonce + nl, sn, strlen(sn) + 1);
    return 0;
}

int dj_scram_server_first(struct dj_scram *s, const struct dj_creds *c)
{
    char salt[32];
    dj_b64_encode(c->salt, DJ_SCRAM_SALT, salt, sizeof salt);
    int n = snprintf(s->server_first, sizeof s->server_first, "r=%s,s=%s,i=%d", s->nonce, salt, c->iter);
    return n > 0 && (size_t)n < sizeof s->server_first ? 0 : -1;
}

int dj_scram_client_final(struct dj_scram *s, const struct dj_creds *c, const char *msg, size_t len, char *out,
                          size_t cap, const char **cond)
{
    *cond = "malformed-request";
    /* c=<b64 gs2>,r=<nonce>[,ext],p=<proof> */
    const char *p = NULL;
    for (size_t i = len; i-- > 2;)
        if (msg[i - 2] == ',' && msg[i - 1] == 'p' && msg[i] == '=') {
            p = msg + i - 2;
            break;
        }
    if (!p || len < 4 || strncmp(msg, "c=", 2))
        return -1;
    const char *cend = memchr(msg, ',', len);
    if (!cend)
        return -1;
    /* c= is base64(gs2-header [+ channel-binding data]) */
    unsigned char cbind[64 + 64];
    size_t gl = strlen(s->gs2), cbl = gl;
    memcpy(cbind, s->gs2, gl);
    if (s->gs2[0] == 'p') {
        memcpy(cbind + gl, s->cb, s->cblen);
        cbl += s->cblen;
    }
    char gs2b64[200];
    if (dj_b64_encode(cbind, cbl, gs2b64, sizeof gs2b64) < 0)
        return -1;
    if ((size_t)(cend - msg - 2) != strlen(gs2b64) || strncmp(msg + 2, gs2b64, strlen(gs2b64))) {
        *cond = "not-authorized";
        return -1;
    }
    const char *r = cend + 1;
    size_t nl = strlen(s->nonce);
    if (r + 2 + nl > p || strncmp(r, "r=", 2) || strncmp(r + 2, s->nonce, nl) || (r[2 + nl] != ',')) {
        *cond = "not-authorized";
        return -1;
    }
    size_t wo_len = (size_t)(p - msg); /* client-final-message-without-proof */
    unsigned char proof[64];
    int pl = dj_b64_decode(p + 3, len - wo_len - 3, proof, sizeof proof);
    size_t hl;
    const EVP_MD *md = mech_md(s->mech, &hl);
    if (pl != (int)hl)
        return -1;
    /* AuthMessage = client-first-bare "," server-first "," without-proof */
    size_t al = strlen(s->client_first_bare) + 1 + strlen(s->server_first) + 1 + wo_len;
    char *auth = malloc(al + 1);
    if (!auth)
        return -1;
    snprintf(auth, al + 1, "%s,%s,", s->client_first_bare, s->server_first);
    memcpy(auth + al - wo_len, msg, wo_len);
    const struct dj_scram_keys *k = mech_keys(c, s->mech);
    unsigned char sig[DJ_SCRAM_MAXKEY], ck[DJ_SCRAM_MAXKEY], sk2[DJ_SCRAM_MAXKEY], ssig[DJ_SCRAM_MAXKEY];
    unsigned int ol;
    HMAC(md, k->stored_key, (int)hl, (unsigned char *)auth, al, sig, &ol);
    for (size_t i = 0; i < hl; i++)
        ck[i] = proof[i] ^ sig[i];
    EVP_Digest(ck, hl, sk2, &ol, md, NULL);
    if (CRYPTO_memcmp(sk2, k->stored_key, hl) != 0) {
        free(auth);
        *cond = "not-authorized";
        return -1;
    }
    HMAC(md, k->server_key, (int)hl, (unsigned char *)auth, al, ssig, &ol);
    free(auth);
    char sb[64];
    dj_b64_encode(ssig, hl, sb, sizeof sb);
    int n = snprintf(out, cap, "v=%s", sb);
    return n > 0 && (size_t)n < cap ? 0 : -1;
}
