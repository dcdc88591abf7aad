/* proto.h: the pure parsers of the three memcached protocols.
 *
 * Each parser looks at (buf, len) only: no socket, no store, no globals.
 * They return MC_PARSE_OK with what they parsed and how many bytes it took,
 * MC_PARSE_NEED_MORE when the request is not all there yet, or
 * MC_PARSE_ERROR with the protocol's error text; pointers in the results
 * point into buf. */
#ifndef MC_PROTO_H
#define MC_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mc_parse { MC_PARSE_OK = 0, MC_PARSE_NEED_MORE = 1, MC_PARSE_ERROR = -1 };

#define MC_MAX_LINE (256 * 1024) /* longest request line (a big multi-get) */
#define MC_KEY_MAX_LEN 250

/* ---------------- text protocol ---------------- */
enum mc_text_cmd {
    MC_TXT_NONE = 0,
    MC_TXT_GET,
    MC_TXT_GETS,
    MC_TXT_GAT,
    MC_TXT_GATS,
    MC_TXT_SET,
    MC_TXT_ADD,
    MC_TXT_REPLACE,
    MC_TXT_APPEND,
    MC_TXT_PREPEND,
    MC_TXT_CAS,
    MC_TXT_INCR,
    MC_TXT_DECR,
    MC_TXT_DELETE,
    MC_TXT_TOUCH,
    MC_TXT_FLUSH_ALL,
    MC_TXT_VERSION,
    MC_TXT_VERBOSITY,
    MC_TXT_QUIT,
    MC_TXT_STATS,
    MC_TXT_SHUTDOWN,
    MC_TXT_CACHE_MEMLIMIT,
    MC_TXT_META,
    MC_TXT_LRU_CRAWLER,
    MC_TXT_SLABS,
    MC_TXT_LRU,
    MC_TXT_MISC_OK,
    MC_TXT_REFRESH_CERTS,
    MC_TXT_EXTSTORE, /* extstore <setting> <value> (args) */
    MC_TXT_WATCH,    /* delta: the MC_WATCH_* kinds asked for */
};

struct mc_text_req {
    enum mc_text_cmd cmd;
    const char *line; /* the line, without its terminator */
    size_t line_len;
    size_t consumed; /* line + terminator */
    const char *key; /* single-key commands */
    size_t nkey;
    const char *keys; /* get family: the key list (space separated) */
    size_t keys_len;
    uint32_t flags;
    int64_t exptime;
    int64_t bytes; /* data block length for storage commands */
    uint64_t cas;
    uint64_t delta; /* incr/decr, verbosity level, flush delay, memlimit */
    bool has_delay; /* flush_all with a delay */
    bool noreply;
    const char *args; /* stats / shutdown / misc: text after the command */
    size_t args_len;
    const char *error; /* on MC_PARSE_ERROR: the full reply line, no CRLF */
    bool close;        /* on error: close the connection after replying */
    int64_t swallow;   /* on error: data bytes to skip (bad storage line), -1 none */
};

/* Parse one request line at buf. Storage commands return OK once the line
 * is complete (the data block is the caller's to read: bytes + 2). */
enum mc_parse mc_text_parse(const char *buf, size_t len, struct mc_text_req *r);

/* Iterate the keys of a get line: returns false when none left. */
bool mc_text_next_key(const char **p, const char *end, const char **key, size_t *nkey);

/* Strict numbers as memcached accepts them. */
bool mc_parse_u32(const char *s, size_t n, uint32_t *out);
bool mc_parse_u64(const char *s, size_t n, uint64_t *out);
bool mc_parse_i32(const char *s, size_t n, int64_t *out);
bool mc_parse_i64(const char *s, size_t n, int64_t *out);
/* Writes the decimal of v at p; returns the length (at most 20). */
size_t mc_u64toa(uint64_t v, char *p);

/* ---------------- meta protocol ---------------- */
enum mc_meta_cmd { MC_META_GET = 1, MC_META_SET, MC_META_DELETE, MC_META_ARITH, MC_META_NOOP, MC_META_DEBUG };

#define MC_MF(c) (1ull << ((c) - 'A')) /* flag bit for letter c ('A'..'z') */

struct mc_meta_req {
    enum mc_meta_cmd cmd;
    size_t consumed;
    const char *key; /* as sent (base64 text when b) */
    size_t nkey;
    char keybuf[MC_KEY_MAX_LEN + 1]; /* decoded key when b */
    const char *rkey;                /* the key to use (decoded when b) */
    size_t nrkey;
    int64_t datalen;    /* ms */
    uint64_t flags;     /* MC_MF bits present */
    const char *opaque; /* O token */
    size_t nopaque;
    uint64_t C_cas, E_cas;
    int64_t N_ttl, R_ttl, T_ttl;
    uint32_t F_flags;
    char mode;               /* M token (ms: E A P R S, ma: I + D -) */
    bool key_first;          /* k came before O (replies keep the order) */
    uint64_t delta, initial; /* ma D, J */
    const char *error;
    bool close;
    int64_t swallow;
};

enum mc_parse mc_meta_parse(const char *line, size_t line_len, size_t consumed, struct mc_meta_req *r);
/* Base64 (RFC 4648) for meta's b flag. Return bytes written or -1. */
int mc_base64_decode(const char *in, size_t n, char *out, size_t outcap);
int mc_base64_encode(const char *in, size_t n, char *out, size_t outcap);

/* ---------------- binary protocol ---------------- */
#define MC_BIN_REQ 0x80
#define MC_BIN_RES 0x81
#define MC_BIN_HDR 24

enum mc_bin_op {
    MC_BIN_GET = 0x00,
    MC_BIN_SET = 0x01,
    MC_BIN_ADD = 0x02,
    MC_BIN_REPLACE = 0x03,
    MC_BIN_DELETE = 0x04,
    MC_BIN_INCR = 0x05,
    MC_BIN_DECR = 0x06,
    MC_BIN_QUIT = 0x07,
    MC_BIN_FLUSH = 0x08,
    MC_BIN_GETQ = 0x09,
    MC_BIN_NOOP = 0x0a,
    MC_BIN_VERSION = 0x0b,
    MC_BIN_GETK = 0x0c,
    MC_BIN_GETKQ = 0x0d,
    MC_BIN_APPEND = 0x0e,
    MC_BIN_PREPEND = 0x0f,
    MC_BIN_STAT = 0x10,
    MC_BIN_SETQ = 0x11,
    MC_BIN_ADDQ = 0x12,
    MC_BIN_REPLACEQ = 0x13,
    MC_BIN_DELETEQ = 0x14,
    MC_BIN_INCRQ = 0x15,
    MC_BIN_DECRQ = 0x16,
    MC_BIN_QUITQ = 0x17,
    MC_BIN_FLUSHQ = 0x18,
    MC_BIN_APPENDQ = 0x19,
    MC_BIN_PREPENDQ = 0x1a,
    MC_BIN_VERBOSITY = 0x1b,
    MC_BIN_TOUCH = 0x1c,
    MC_BIN_GAT = 0x1d,
    MC_BIN_GATQ = 0x1e,
    MC_BIN_SASL_LIST = 0x20,
    MC_BIN_SASL_AUTH = 0x21,
    MC_BIN_SASL_STEP = 0x22,
    MC_BIN_GATK = 0x23,
    MC_BIN_GATKQ = 0x24,
};

enum mc_bin_status {
    MC_BIN_OK = 0x00,
    MC_BIN_KEY_ENOENT = 0x01,
    MC_BIN_KEY_EEXISTS = 0x02,
    MC_BIN_E2BIG = 0x03,
    MC_BIN_EINVAL = 0x04,
    MC_BIN_NOT_STORED = 0x05,
    MC_BIN_DELTA_BADVAL = 0x06,
    MC_BIN_AUTH_ERROR = 0x20,
    MC_BIN_AUTH_CONTINUE = 0x21,
    MC_BIN_UNKNOWN_COMMAND = 0x81,
    MC_BIN_ENOMEM = 0x82,
};

struct mc_bin_req {
    uint8_t opcode;
    uint16_t keylen;
    uint8_t extlen;
    uint8_t datatype;
    uint16_t vbucket;
    uint32_t bodylen;
    uint32_t opaque;
    uint64_t cas;
    const uint8_t *extras;
    const uint8_t *key;
    const uint8_t *value;
    uint32_t vlen;
    size_t consumed; /* 24 + bodylen */
    const char *error;
};

/* Needs the whole packet in buf. max_body bounds bodylen (larger is an
 * error: the stream can't be trusted, the caller closes). */
enum mc_parse mc_bin_parse(const uint8_t *buf, size_t len, uint32_t max_body, struct mc_bin_req *r);
/* Header only (to learn how much to wait for). */
enum mc_parse mc_bin_parse_header(const uint8_t *buf, size_t len, uint32_t max_body, struct mc_bin_req *r);
void mc_bin_write_header(uint8_t *out, uint8_t opcode, uint16_t keylen, uint8_t extlen, uint16_t status,
                         uint32_t bodylen, uint32_t opaque, uint64_t cas);

/* What one binary request asks for, decoded from its opcode, extras, key
 * and value (mc_bin_decode). The command files act on this and never look
 * at the packet's bytes themselves. */
enum mc_bin_kind {
    MC_BINK_UNKNOWN = 0,
    MC_BINK_GET,   /* get, getq, getk, getkq, touch, gat, gatq, gatk, gatkq */
    MC_BINK_STORE, /* set, add, replace, append, prepend and their q forms */
    MC_BINK_DELETE,
    MC_BINK_ARITH, /* incr, decr and their q forms */
    MC_BINK_QUIT,
    MC_BINK_FLUSH,
    MC_BINK_NOOP,
    MC_BINK_VERSION,
    MC_BINK_VERBOSITY,
    MC_BINK_STAT,
    MC_BINK_SASL_LIST,
    MC_BINK_SASL_AUTH, /* auth and step */
};
enum mc_bin_store_mode { MC_BINS_SET = 0, MC_BINS_ADD, MC_BINS_REPLACE, MC_BINS_APPEND, MC_BINS_PREPEND };

struct mc_bin_cmd {
    enum mc_bin_kind kind;
    uint16_t status; /* MC_BIN_OK, or the error to answer (EINVAL, UNKNOWN_COMMAND) */
    bool quiet;      /* a "Q" opcode: no reply on success (get: on miss) */
    bool pre_auth;   /* allowed before SASL authentication */
    bool want_key;   /* getk/gatk: the key goes back */
    bool want_value; /* not for touch */
    bool touch;      /* touch/gat: exptime given */
    bool incr;       /* arith: incr (else decr) */
    enum mc_bin_store_mode store;
    uint32_t flags;          /* store: client flags */
    int64_t exptime;         /* store/touch: signed 32-bit from the wire */
    uint64_t delta, initial; /* arith */
    bool create;             /* arith: create with initial on a miss (exptime != 0xffffffff) */
    bool has_delay;          /* flush with its 4-byte delay */
    int64_t delay;
    uint32_t verbosity;
    /* SASL PLAIN ("[authzid] NUL user NUL pass"): plain_ok when the
     * mechanism is PLAIN and the value has that shape. */
    bool plain_ok;
    const char *user, *pass;
    size_t nuser, npass;
};

/* Decode a parsed request (mc_bin_parse). Always fills kind and status;
 * the other fields are valid when status is MC_BIN_OK. */
void mc_bin_decode(const struct mc_bin_req *r, struct mc_bin_cmd *out);
/* The text memcached sends as the value of an error reply. */
const char *mc_bin_status_text(uint16_t status);

#endif
