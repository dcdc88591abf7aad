/* http: HTTP/1.x message parsing and the small pieces around it.
 *
 * Pure functions over (buffer, length): no sockets, no allocation, no
 * globals. Parsed headers point into the caller's buffer (zero-copy) and stay
 * valid while that buffer does. Every input is bounded: header block size,
 * header count, chunk-size digits, chunk extensions and trailers.
 *
 * What it owns: request and response heads (RFC 9112), the framing rules that
 * decide where a body ends (Content-Length / chunked / until close) with the
 * request-smuggling defences (conflicting or repeated-but-different
 * Content-Length, Transfer-Encoding together with Content-Length, an unknown
 * transfer coding, obs-fold, whitespace before the colon: all refused), the
 * chunked decoder/encoder, Range (single range), HTTP dates, and the path
 * normaliser that keeps a URL inside a document root.
 *
 * It must not know about connections, services or files. */
#ifndef CORE_HTTP_H
#define CORE_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define HTTP_MAX_HEADERS 100        /* hard cap on header lines in one head */
#define HTTP_DEFAULT_MAX_HEAD 16384 /* default bound on a head, bytes */

enum http_method {
    HTTP_M_OTHER = 0,
    HTTP_M_GET,
    HTTP_M_HEAD,
    HTTP_M_POST,
    HTTP_M_PUT,
    HTTP_M_DELETE,
    HTTP_M_OPTIONS,
    HTTP_M_TRACE,
    HTTP_M_CONNECT,
};

/* How the body of a message is delimited. */
enum http_body {
    HTTP_BODY_NONE = 0, /* no body */
    HTTP_BODY_LENGTH,   /* exactly content_length bytes */
    HTTP_BODY_CHUNKED,  /* chunked transfer coding */
    HTTP_BODY_CLOSE,    /* responses only: until the connection closes */
};

struct http_header {
    const char *name;
    const char *value; /* leading/trailing whitespace removed */
    uint32_t name_len;
    uint32_t value_len;
};

struct http_msg {
    /* request line */
    enum http_method method;
    const char *method_str;
    const char *target; /* request-target as sent */
    uint32_t method_len;
    uint32_t target_len;
    /* status line (responses) */
    int status;
    const char *reason;
    uint32_t reason_len;
    /* both */
    int version_minor; /* HTTP/1.<minor>: 0 or 1 */
    int nheaders;
    struct http_header headers[HTTP_MAX_HEADERS];
    size_t head_len; /* bytes of the head, terminator included */
    /* derived framing and connection facts */
    enum http_body body;
    uint64_t content_length; /* valid when body == HTTP_BODY_LENGTH */
    bool keep_alive;         /* persistent per version + Connection */
    bool conn_close;         /* "Connection: close" present */
    bool expect_continue;    /* "Expect: 100-continue" (requests) */
    int host_index;          /* index of the Host header, -1 if none */
    /* on error: the status to answer with (400, 431, 501, 505, 417) */
    int error;
    /* on error: which fault, where a caller words its answer by it */
    enum http_fault {
        HTTP_FAULT_OTHER = 0,
        HTTP_FAULT_NEGATIVE_LENGTH,    /* Content-Length: -5 (Perlbal: "Content-Length < 0") */
        HTTP_FAULT_BAD_LENGTH,         /* Content-Length not a number, too long, or two that differ */
        HTTP_FAULT_LENGTH_AND_CHUNKED, /* Transfer-Encoding and Content-Length together */
    } fault;
};

struct http_limits {
    size_t max_head; /* bytes, 0 = HTTP_DEFAULT_MAX_HEAD */
    int max_headers; /* 0 = HTTP_MAX_HEADERS (larger values are capped) */
};

/* An HTTP/1.0 message with "Transfer-Encoding: chunked" (and no
 * Content-Length) is taken as chunked and never kept alive: the connection
 * closes after it (RFC 9112 6.1). */

/* Parse a request head from buf[0..len).
 * Returns > 0: the head is complete and that many bytes belong to it
 *              (msg->head_len too); the body, if any, follows.
 *         0:   need more bytes.
 *        -1:   malformed / refused; msg->error holds the status to answer
 *              with (431 when the head or header count exceeds the limit).
 * Leading empty lines before the request line are skipped (and counted). */
int http_parse_request(const char *buf, size_t len, const struct http_limits *lim, struct http_msg *msg);

/* Parse a response head. req_method is the method of the request it answers
 * (HEAD and CONNECT change the framing). Same return convention. A response
 * whose framing is unknowable gets HTTP_BODY_CLOSE. */
int http_parse_response(const char *buf, size_t len, enum http_method req_method, const struct http_limits *lim,
                        struct http_msg *msg);

/* Case-insensitive header lookup; index of the first match or -1. */
int http_find_header(const struct http_msg *msg, const char *name);
/* Pointer to the value of the first header called name (NULL if absent). */
const char *http_header_value(const struct http_msg *msg, const char *name, size_t *len);
/* True if a comma-separated header value contains token (case-insensitive). */
bool http_token_list_has(const char *value, size_t len, const char *token);
enum http_method http_method_parse(const char *s, size_t len);
const char *http_reason(int status);

/* ---- chunked transfer coding ---- */

enum http_chunk_result {
    HTTP_CHUNK_NEED_MORE = 0, /* all of buf consumed, no payload in it */
    HTTP_CHUNK_DATA = 1,      /* payload at buf[*data_off .. +*data_len) */
    HTTP_CHUNK_DONE = 2,      /* last chunk and trailers consumed */
    HTTP_CHUNK_ERROR = -1,
};

struct http_chunked {
    int state;
    uint32_t aux;       /* digits / bytes of the current line seen */
    uint64_t remaining; /* payload bytes left in the current chunk */
    uint64_t total;     /* payload bytes so far */
    uint64_t max_total; /* 0 = unlimited; beyond it -> error */
};

void http_chunked_init(struct http_chunked *c, uint64_t max_total);
/* Decode incrementally. *consumed (always set) is how far into buf this step
 * went; a proxy forwarding the coded stream verbatim forwards exactly those
 * bytes. Call again with the rest until NEED_MORE or DONE. */
enum http_chunk_result http_chunked_step(struct http_chunked *c, const char *buf, size_t len, size_t *consumed,
                                         size_t *data_off, size_t *data_len);
/* "<hex>\r\n" for a chunk of n bytes into out (>= 20 bytes); returns length.
 * n == 0 gives the last-chunk "0\r\n" (the caller adds the final "\r\n"). */
size_t http_chunk_header(char *out, uint64_t n);

/* ---- Range ---- */

enum http_range_result {
    HTTP_RANGE_OK = 0,            /* serve [*first, *last] with 206 */
    HTTP_RANGE_IGNORE = 1,        /* absent/unparseable/multiple: serve all, 200 */
    HTTP_RANGE_UNSATISFIABLE = 2, /* 416 */
    HTTP_RANGE_INVERTED = 3,      /* one range whose last is below its first
                                   * ("bytes=5-1"): RFC 9110 says serve all
                                   * (200, as IGNORE); Perlbal answers 416 */
};
/* value: the Range header value, e.g. "bytes=0-99", "bytes=-500". */
enum http_range_result http_parse_range(const char *value, size_t len, uint64_t size, uint64_t *first, uint64_t *last);

/* ---- dates ---- */

#define HTTP_DATE_LEN 29 /* "Sun, 06 Nov 1994 08:49:37 GMT" */
/* IMF-fixdate into out (>= 30 bytes, NUL-ended). Returns HTTP_DATE_LEN. */
size_t http_date_format(time_t t, char *out);
/* IMF-fixdate, RFC 850 or asctime. Returns 0 or -1. */
int http_date_parse(const char *s, size_t len, time_t *out);

/* ---- paths ---- */

/* Turn a request-target's path into a clean absolute path: query dropped,
 * %XX decoded, "//" collapsed, "." and ".." resolved. Refuses (-1) a NUL or
 * a control byte, a '..' that climbs above the root, an absolute-form URL
 * other than http(s)://host/..., and output that does not fit in outlen.
 * Returns the output length (out NUL-ended, always starts with '/'), and sets
 * *trailing_slash when the request path ended in '/'. */
int http_path_normalize(const char *target, size_t len, char *out, size_t outlen, bool *trailing_slash);

#endif
