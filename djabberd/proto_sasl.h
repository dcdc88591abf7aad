/* proto_sasl: SASL mechanisms of the c2s stream, as pure functions: PLAIN
 * message parsing, SCRAM-SHA-1 / SCRAM-SHA-256 (RFC 5802, RFC 7677) server
 * side without channel binding, key derivation, base64.
 *
 * Credentials are stored as SCRAM keys (salt, iterations, StoredKey,
 * ServerKey), never as the password: PLAIN is checked by deriving the
 * StoredKey from the offered password. */
#ifndef DJ_PROTO_SASL_H
#define DJ_PROTO_SASL_H

#include <stdbool.h>
#include <stddef.h>

enum dj_sasl_mech {
    DJ_SASL_NONE = 0,
    DJ_SASL_PLAIN,
    DJ_SASL_SCRAM_SHA1,
    DJ_SASL_SCRAM_SHA256,
    DJ_SASL_SCRAM_SHA1_PLUS, /* with tls-unique channel binding */
    DJ_SASL_SCRAM_SHA256_PLUS,
};

#define DJ_SCRAM_SALT 16
#define DJ_SCRAM_MAXKEY 32
#define DJ_SCRAM_ITER 4096

/* One hash's keys. */
struct dj_scram_keys {
    unsigned char stored_key[DJ_SCRAM_MAXKEY];
    unsigned char server_key[DJ_SCRAM_MAXKEY];
};

/* What an account stores: one salt and iteration count, keys for both
 * hashes. */
struct dj_creds {
    unsigned char salt[DJ_SCRAM_SALT];
    int iter;
    struct dj_scram_keys sha1, sha256;
};

enum dj_sasl_mech dj_sasl_mech_parse(const char *name);
const char *dj_sasl_mech_name(enum dj_sasl_mech m);

/* Fill creds from a password with a fresh random salt (iter 0 = default).
 * PBKDF2: CPU-heavy by design (about a millisecond per hash). */
int dj_creds_make(struct dj_creds *c, const char *password, size_t pwlen, int iter);
/* The same with a given salt (tests, imports). */
int dj_creds_derive(struct dj_creds *c, const char *password, size_t pwlen, const unsigned char *salt, int iter);
/* Does the password match? (constant-time compare of the derived key) */
bool dj_creds_check(const struct dj_creds *c, const char *password, size_t pwlen);
/* Hex text form for storage ("iter$salthex$sk1$svk1$sk256$svk256"); parse back. */
size_t dj_creds_format(const struct dj_creds *c, char *out, size_t cap);
int dj_creds_parse(struct dj_creds *c, const char *s, size_t len);

/* base64 (RFC 4648, with padding). Return length, or -1 on bad input / no room. */
int dj_b64_encode(const unsigned char *in, size_t len, char *out, size_t cap);
int dj_b64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* PLAIN: "[authzid]\0authcid\0passwd" (already base64-decoded). Pointers
 * into msg; returns 0 or -1 (malformed). */
int dj_sasl_plain_parse(const char *msg, size_t len, const char **authzid, size_t *authzid_len, const char **authcid,
                        size_t *authcid_len, const char **pw, size_t *pw_len);

/* The SCRAM exchange state (lives only while authenticating). */
struct dj_scram {
    enum dj_sasl_mech mech;
    char user[256];
    char gs2[64];         /* "n,,", "y,," or "p=tls-unique,," */
    unsigned char cb[64]; /* the TLS channel-binding data (tls-unique) */
    size_t cblen;         /* 0: none (no TLS) */
    char client_first_bare[512];
    char server_first[256];
    char nonce[128]; /* client nonce + server nonce */
};

/* client-first-message; on success the user name (unescaped) is in s->user.
 * cb/cblen: the stream's tls-unique data, or NULL/0 without TLS; with it the
 * server offers the -PLUS mechanisms, so a client that says "y" (it could
 * bind but thinks we cannot) is refused as a downgrade (RFC 5802 6).
 * Returns 0, or -1 with a SASL condition name in *cond. */
int dj_scram_client_first(struct dj_scram *s, enum dj_sasl_mech m, const unsigned char *cb, size_t cblen,
                          const char *msg, size_t len, const char **cond);
bool dj_sasl_mech_plus(enum dj_sasl_mech m);
/* Build the server-first-message into s->server_first. */
int dj_scram_server_first(struct dj_scram *s, const struct dj_creds *c);
/* client-final-message: verify; on success writes server-final ("v=...")
 * into out. Returns 0, or -1 with *cond ("not-authorized", "malformed-request"). */
int dj_scram_client_final(struct dj_scram *s, const struct dj_creds *c, const char *msg, size_t len, char *out,
                          size_t cap, const char **cond);

#endif
