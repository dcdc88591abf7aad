/* proto_mysql: pure parsers and encoders of the MySQL client/server protocol
 * (the parts a router needs), both sides: the server side that applications
 * talk to, and the client side userdbd uses towards MariaDB.
 *
 * Nothing here touches a socket, a global or the event loop; every function
 * works on (buffer, length) and returns what it parsed, "need more", or an
 * error. Fuzzed by tests/fuzz/fuzz_ud_proto.c. */
#ifndef UD_PROTO_MYSQL_H
#define UD_PROTO_MYSQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define UD_HDR 4
#define UD_MAX_PAYLOAD 0xFFFFFFu
#define UD_SCRAMBLE_LEN 20

/* Capability flags. */
#define UD_CLIENT_LONG_PASSWORD 0x00000001u
#define UD_CLIENT_FOUND_ROWS 0x00000002u
#define UD_CLIENT_LONG_FLAG 0x00000004u
#define UD_CLIENT_CONNECT_WITH_DB 0x00000008u
#define UD_CLIENT_NO_SCHEMA 0x00000010u
#define UD_CLIENT_COMPRESS 0x00000020u
#define UD_CLIENT_ODBC 0x00000040u
#define UD_CLIENT_LOCAL_FILES 0x00000080u
#define UD_CLIENT_IGNORE_SPACE 0x00000100u
#define UD_CLIENT_PROTOCOL_41 0x00000200u
#define UD_CLIENT_INTERACTIVE 0x00000400u
#define UD_CLIENT_SSL 0x00000800u
#define UD_CLIENT_TRANSACTIONS 0x00002000u
#define UD_CLIENT_SECURE_CONNECTION 0x00008000u
#define UD_CLIENT_MULTI_STATEMENTS 0x00010000u
#define UD_CLIENT_MULTI_RESULTS 0x00020000u
#define UD_CLIENT_PS_MULTI_RESULTS 0x00040000u
#define UD_CLIENT_PLUGIN_AUTH 0x00080000u
#define UD_CLIENT_CONNECT_ATTRS 0x00100000u
#define UD_CLIENT_PLUGIN_AUTH_LENENC 0x00200000u
#define UD_CLIENT_SESSION_TRACK 0x00800000u
#define UD_CLIENT_DEPRECATE_EOF 0x01000000u

/* What userdbd offers applications and asks of backends: one fixed set, so
 * a backend connection's reply format suits every client it is lent to
 * (no DEPRECATE_EOF, no session tracking, no compression, no TLS, no LOCAL INFILE, no MariaDB extended capabilities,
 * nothing that changes how the server parses, such as IGNORE_SPACE or FOUND_ROWS). */
#define UD_ROUTER_CAPS                                                                                                 \
    (UD_CLIENT_LONG_PASSWORD | UD_CLIENT_LONG_FLAG | UD_CLIENT_CONNECT_WITH_DB | UD_CLIENT_PROTOCOL_41 |               \
     UD_CLIENT_TRANSACTIONS | UD_CLIENT_SECURE_CONNECTION | UD_CLIENT_MULTI_RESULTS | UD_CLIENT_PS_MULTI_RESULTS |     \
     UD_CLIENT_PLUGIN_AUTH | UD_CLIENT_CONNECT_ATTRS | UD_CLIENT_PLUGIN_AUTH_LENENC)
/* Offered to clients on top: multi-statements, replayed per session on
 * the backend with COM_SET_OPTION. */
#define UD_OFFERED_CAPS (UD_ROUTER_CAPS | UD_CLIENT_MULTI_STATEMENTS)
/* Bits of a client's answer that change the wire format of replies: it must
 * not set these unless we offered them (we offer none). */
#define UD_FORMAT_CAPS                                                                                                 \
    (UD_CLIENT_DEPRECATE_EOF | UD_CLIENT_SESSION_TRACK | UD_CLIENT_COMPRESS | UD_CLIENT_SSL | UD_CLIENT_LOCAL_FILES |  \
     UD_CLIENT_MULTI_STATEMENTS)

/* Server status flags. */
#define UD_STATUS_IN_TRANS 0x0001
#define UD_STATUS_AUTOCOMMIT 0x0002
#define UD_STATUS_MORE_RESULTS 0x0008
#define UD_STATUS_CURSOR_EXISTS 0x0040

/* Commands. */
enum {
    UD_COM_SLEEP = 0x00,
    UD_COM_QUIT = 0x01,
    UD_COM_INIT_DB = 0x02,
    UD_COM_QUERY = 0x03,
    UD_COM_FIELD_LIST = 0x04,
    UD_COM_STATISTICS = 0x09,
    UD_COM_PING = 0x0e,
    UD_COM_CHANGE_USER = 0x11,
    UD_COM_STMT_PREPARE = 0x16,
    UD_COM_STMT_EXECUTE = 0x17,
    UD_COM_STMT_SEND_LONG_DATA = 0x18,
    UD_COM_STMT_CLOSE = 0x19,
    UD_COM_STMT_RESET = 0x1a,
    UD_COM_SET_OPTION = 0x1b,
    UD_COM_STMT_FETCH = 0x1c,
    UD_COM_RESET_CONNECTION = 0x1f,
};

/* Error codes we send ourselves. */
#define UD_ER_ACCESS_DENIED 1045
#define UD_ER_UNKNOWN_COM 1047
#define UD_ER_HANDSHAKE 1043
#define UD_ER_NET_TOO_LARGE 1153
#define UD_ER_UNKNOWN 1105
#define UD_ER_READ_ONLY 1290
#define UD_ER_NO_USER 1449
#define UD_ER_TOO_MANY_CONN 1040
#define UD_ER_NOT_SUPPORTED 1235
#define UD_ER_CONN_ERROR 2013

/* ---- framing --------------------------------------------------------------- */

/* 1 and the payload length and sequence id when 4 header bytes are there,
 * 0 when fewer. */
int ud_pkt_header(const uint8_t *buf, size_t len, uint32_t *payload_len, uint8_t *seq);
void ud_put_header(uint8_t *out, uint32_t payload_len, uint8_t seq);

/* Length-encoded integers. Returns bytes used, 0 if truncated, -1 if the
 * first byte is not a length (0xfb NULL, 0xff). */
int ud_lenenc_get(const uint8_t *p, size_t len, uint64_t *v);
/* Writes v; returns bytes written (1, 3, 4 or 9). out needs 9 bytes. */
size_t ud_lenenc_put(uint8_t *out, uint64_t v);

/* ---- authentication -------------------------------------------------------- */

/* mysql_native_password: SHA1(pw) XOR SHA1(salt . SHA1(SHA1(pw))). */
void ud_native_scramble(const uint8_t salt[UD_SCRAMBLE_LEN], const char *password, uint8_t out[UD_SCRAMBLE_LEN]);
/* True if response (len bytes) is the right answer for password; an empty
 * password wants an empty response. Constant time over the 20 bytes. */
bool ud_native_check(const uint8_t salt[UD_SCRAMBLE_LEN], const char *password, const uint8_t *response, size_t len);

/* ---- server side: handshake ------------------------------------------------ */

/* The Initial Handshake Packet (v10) payload into out (needs 128 bytes +
 * version). Returns the payload length. */
size_t ud_enc_handshake(uint8_t *out, size_t cap, const char *version, uint32_t conn_id,
                        const uint8_t salt[UD_SCRAMBLE_LEN], uint32_t caps, uint8_t charset, uint16_t status);

struct ud_hs_response {
    uint32_t caps;
    uint32_t max_packet;
    uint8_t charset;
    bool ssl_request; /* only the 32-byte SSL request was sent */
    const char *user; /* pointers into the payload */
    size_t user_len;
    const uint8_t *auth;
    size_t auth_len;
    const char *db; /* NULL when not given */
    size_t db_len;
    const char *plugin; /* NULL when not given */
    size_t plugin_len;
};
/* Parse a HandshakeResponse41 payload. 0 ok, -1 malformed (or pre-4.1). */
int ud_parse_hs_response(const uint8_t *p, size_t len, struct ud_hs_response *out);

/* COM_CHANGE_USER payload (after the command byte), parsed with the caps
 * agreed at login: user, auth data, database, then (when present) charset
 * and auth plugin; connect attributes are ignored. Fills the user, auth,
 * db and plugin fields of out. 0 ok, -1 malformed. */
int ud_parse_change_user(const uint8_t *p, size_t len, uint32_t caps, struct ud_hs_response *out);

/* ---- client side: handshake towards a backend ------------------------------ */

struct ud_server_hs {
    uint32_t caps;
    uint32_t conn_id;
    uint8_t charset;
    uint16_t status;
    uint8_t salt[UD_SCRAMBLE_LEN];
    char version[64];
    char plugin[64];
};
/* 0 ok, -1 malformed or not protocol 10 (an ERR packet is -1 too). */
int ud_parse_server_hs(const uint8_t *p, size_t len, struct ud_server_hs *out);
/* HandshakeResponse41 payload (native password) into out. Returns the
 * payload length or 0 if cap is too small. */
size_t ud_enc_hs_response(uint8_t *out, size_t cap, uint32_t caps, uint8_t charset, const char *user,
                          const char *password, const uint8_t salt[UD_SCRAMBLE_LEN], const char *db);
/* An auth switch request (0xfe plugin\0 data): plugin and the 20-byte salt.
 * 0 ok, -1 malformed. */
int ud_parse_auth_switch(const uint8_t *p, size_t len, char *plugin, size_t plugin_cap, uint8_t salt[UD_SCRAMBLE_LEN]);

/* ---- replies -------------------------------------------------------------- */

/* Whole packets (header included) with sequence id seq. Each returns the
 * bytes written, or 0 if cap is too small. */
size_t ud_enc_ok(uint8_t *out, size_t cap, uint8_t seq, uint64_t affected, uint64_t insert_id, uint16_t status,
                 uint16_t warnings);
size_t ud_enc_err(uint8_t *out, size_t cap, uint8_t seq, uint16_t code, const char *sqlstate, const char *msg);
size_t ud_enc_eof(uint8_t *out, size_t cap, uint8_t seq, uint16_t status, uint16_t warnings);
/* A one-column text result set with one row per value (values may be NULL
 * = SQL NULL): column count, column definition, EOF, rows, EOF. Returns the
 * bytes written or 0 if cap is too small. The column is BIGINT UNSIGNED. */
size_t ud_enc_result(uint8_t *out, size_t cap, uint8_t seq, const char *colname, const char *const *values,
                     size_t nvalues, uint16_t status);
/* An auth switch request to mysql_native_password with salt. */
size_t ud_enc_auth_switch(uint8_t *out, size_t cap, uint8_t seq, const uint8_t salt[UD_SCRAMBLE_LEN]);

/* OK/ERR/EOF packet fields (payload). */
struct ud_ok {
    uint64_t affected, insert_id;
    uint16_t status, warnings;
};
int ud_parse_ok(const uint8_t *p, size_t len, struct ud_ok *out);
/* ERR: code, sqlstate (6 bytes incl. NUL) and message (NUL-ended, cut to cap). */
int ud_parse_err(const uint8_t *p, size_t len, uint16_t *code, char *msg, size_t cap);

/* A column definition's name (pointer into p). 0 ok, -1 malformed. */
int ud_parse_coldef_name(const uint8_t *p, size_t len, const char **name, size_t *name_len);
/* Cell i of a text row: 1 value (pointer into p), 0 NULL, -1 malformed. */
int ud_text_row_cell(const uint8_t *p, size_t len, int i, const char **val, size_t *val_len);

/* ---- reply framing: where does a backend's answer end? --------------------- */

enum ud_resp_kind {
    UD_RESP_NONE = 0, /* no reply expected (STMT_CLOSE, SEND_LONG_DATA) */
    UD_RESP_SIMPLE,   /* one packet (OK/ERR, or STATISTICS text) */
    UD_RESP_QUERY,    /* COM_QUERY: OK/ERR or result set(s), text rows */
    UD_RESP_EXECUTE,  /* COM_STMT_EXECUTE: binary rows, cursors */
    UD_RESP_FETCH,    /* COM_STMT_FETCH: rows then EOF */
    UD_RESP_PREPARE,  /* COM_STMT_PREPARE */
    UD_RESP_FIELDS,   /* COM_FIELD_LIST: column definitions then EOF */
};

struct ud_resp {
    enum ud_resp_kind kind;
    int state;
    uint64_t left;       /* definitions still to come in this block */
    uint32_t cols_after; /* PREPARE: column definitions after the params */
    uint16_t status;     /* server status of the last OK/EOF */
    bool cont;           /* the last packet was 16 MiB - 1: the next continues it */
    bool error;          /* the reply was (or ended with) an ERR packet */
};

void ud_resp_start(struct ud_resp *r, enum ud_resp_kind kind);
/* The reply kind a command gets. */
enum ud_resp_kind ud_resp_kind_for(uint8_t command);
/* Feed one packet: its payload length and at least its first
 * min(payload_len, 32) bytes. 1 = the reply is complete, 0 = more packets
 * follow, -1 = protocol error (or LOCAL INFILE, which we never allow). */
int ud_resp_feed(struct ud_resp *r, const uint8_t *payload, size_t avail, uint32_t payload_len);

/* ---- statements ------------------------------------------------------------- */

enum ud_hint { UD_HINT_NONE = 0, UD_HINT_USER, UD_HINT_NEW, UD_HINT_BAD };
enum ud_special { UD_SPECIAL_NONE = 0, UD_SPECIAL_CREATE_USER, UD_SPECIAL_COUNTER };

struct ud_query {
    enum ud_hint hint;
    uint64_t user_id;
    bool is_read;    /* SELECT/SHOW/DESCRIBE/EXPLAIN without locking */
    bool pins;       /* changes session state a pooled connection can't carry */
    bool ends_trans; /* COMMIT / ROLLBACK (without AND CHAIN) */
    int kill;        /* KILL [CONNECTION] id: 1; KILL QUERY id: 2 */
    uint64_t kill_id;
    int autocommit; /* -1: not a SET autocommit; else the value set */
    enum ud_special special;
    const char *arg; /* the quoted argument of a special, unescaped into argbuf */
    char argbuf[256];
    size_t arg_len;
    const char *keyword_at; /* the first keyword after comments */
};
/* Classify a COM_QUERY statement: the routing hint in a leading
 * comment, read or write, session-state statements, userdb_* functions.
 * Returns 0, or -1 for a malformed hint or special (message in err). */
int ud_query_classify(const char *q, size_t len, struct ud_query *out, char *err, size_t errlen);

/* Append s (n bytes) to out as a single-quoted SQL string literal with
 * every special byte escaped. Returns bytes written (cap must be >= 2n+3). */
size_t ud_sql_quote(char *out, size_t cap, const char *s, size_t n);

#endif
