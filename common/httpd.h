/* httpd: one HTTP/1.1 server connection, and file serving under a root.
 *
 * What it owns:
 *  - the client side of an HTTP server: reading request heads (bounded, with
 *    a deadline against slow senders), keep-alive and pipelining (requests
 *    answered one at a time, in order; later ones wait, bounded, in the
 *    input buffer), Expect: 100-continue, request bodies (Content-Length or
 *    chunked, decoded and bounded), response and error heads with a cached
 *    Date, and the lingering close after an error (input is drained until
 *    the answer is out, so the client reads it instead of a reset);
 *  - file serving beneath a document root (struct httpd_files): GET/HEAD
 *    with sendfile, Range (206/416), If-Modified-Since (304), MIME types,
 *    index files, directory listings, PUT (creating missing directories,
 *    atomic rename, Content-MD5 checked), DELETE; every path resolved by the
 *    kernel beneath the root (openat2 RESOLVE_BENEATH), an open-file cache.
 *
 * What it must not do: know about the daemon's services, backends or
 * configuration language. The daemon decides what a request means in
 * on_request and answers through the functions below.
 *
 * Threading: an httpd_conn lives on one loop and is touched only from that
 * loop's thread. A struct httpd_files may be shared by every loop.
 *
 * Minimal use (a static file server):
 *
 *     static struct httpd_files files = { .docroot = "/srv/www" };
 *     static void on_request(struct httpd_conn *h, struct http_msg *req) {
 *         httpd_files_serve(h, req, &files);     // answers GET/HEAD/PUT/DELETE
 *     }
 *     static const struct httpd_ops ops = { .on_request = on_request };
 *     // in the listener's accept callback:
 *     httpd_accept(loop, fd, sa, salen, NULL, &ops, NULL);
 */
#ifndef CORE_HTTPD_H
#define CORE_HTTPD_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/conn.h"
#include "common/http.h"

struct evbuffer;
struct core_loop;
struct httpd_conn;
struct httpd_put;
struct work_pool;

#define HTTPD_MAX_HEAD 16384               /* default bound on a request head */
#define HTTPD_MAX_HEAD_LIMIT (64 * 1024)   /* max_head is capped at this */
#define HTTPD_HEAD_DEADLINE_MS 30000       /* default: a head must be complete within */
#define HTTPD_WRITE_TIMEOUT_MS 120000      /* output pending and not moving */
#define HTTPD_MAX_PIPELINE_IN (256 * 1024) /* input held while a request is in progress */
#define HTTPD_PREFIX_MAX 2048              /* bytes of a file a prefix_fn sees */
#define HTTPD_PREFIX_CTX 80                /* bytes of context a prefix_fn gets */
#define HTTPD_POSTSTAT_MISSING 1
#define HTTPD_POSTSTAT_SEND 2

struct httpd_ops {
    /* A request head is complete and its facts are in h (method, version,
     * keep_alive, body framing). req points into the input buffer and stays
     * valid until this returns or httpd_drop_head() is called, whichever is
     * first; httpd consumes the head after the return if the handler did
     * not. The handler answers now or later (httpd_response_head + bytes in
     * httpd_tx() + httpd_done, or httpd_error, or httpd_files_serve). */
    void (*on_request)(struct httpd_conn *h, struct http_msg *req);
    /* Input arrived while a request is in progress (a body the handler
     * reads with httpd_body_read, or pipelined requests); also called right
     * after on_request when bytes came with the head. Optional: without
     * it the input just waits (reading pauses beyond HTTPD_MAX_PIPELINE_IN). */
    void (*on_input)(struct httpd_conn *h);
    /* The current request ended (optional): its answer is complete in the
     * output (httpd_done) or an error was answered (httpd_error), or the
     * conn closes with a request in progress. Called once per request that
     * reached on_request, before the next head is read: reset per-request
     * state here. */
    void (*on_request_end)(struct httpd_conn *h);
    /* The output buffer went empty (optional): resume a paused source. */
    void (*on_drained)(struct httpd_conn *h);
    /* Just before h is freed (optional). Release h->data here. */
    void (*on_close)(struct httpd_conn *h, enum conn_close_reason why);
};

struct httpd_conn {
    struct core_conn *c;
    void *data; /* the daemon's per-connection state */
    const struct httpd_ops *ops;
    /* settings; the daemon may change them at any time (e.g. per request) */
    uint32_t idle_ms;          /* a request (head or body) silent this long: 408 / close; 0 = none */
    uint32_t keepalive_ms;     /* idle between requests; 0 = idle_ms */
    size_t max_head;           /* 0 = HTTPD_MAX_HEAD */
    uint64_t max_chunked_body; /* decoded chunked request body bound; 0 = none */
    bool persist;              /* the daemon allows keep-alive */
    const char *server;        /* "Server:" header value, NULL = none */
    bool tls;                  /* over TLS: no direct writes, no lingering close */
    /* the current request (valid from on_request until httpd_done) */
    enum http_method method;
    int version_minor;
    bool keep_alive;         /* the client asked to persist */
    bool in_request;         /* a request is in progress: no new head is read */
    enum http_body body;     /* request body framing */
    uint64_t body_remaining; /* Content-Length bytes not yet read */
    bool body_done;          /* the whole body was read (or there is none) */
    bool expect_continue, sent_continue;
    bool response_started; /* a response head was queued */
    /* The answer's status and body bytes as the last httpd_response_head of
     * this request queued them (every answer httpd makes itself, files and
     * errors included, goes through it): for access logs and metrics, read
     * in on_request_end. resp_body is the Content-Length, 0 for HEAD, 204
     * and 304, -1 when unknown (chunked or close-delimited: the daemon
     * counts those itself). Both reset when a request starts. */
    int resp_status;
    int64_t resp_body;
    /* A filter on the first bytes of the file this request is answered
     * with (set by the daemon before httpd_files_serve; cleared when a
     * request starts): for a GET answered 200 or 206 from a file, its first
     * HTTPD_PREFIX_MAX bytes are read on the disk worker and passed to
     * prefix_fn(prefix_ctx, path, buf, len), which may change them in place
     * (the length stays); a Range applies to the result. A nonzero return
     * is the status of an error answer instead. HEAD, 304 and 416 answers
     * and concatenated GETs do not run it (as Perlbal's start_send_file
     * hook). prefix_ctx is copied into the disk job (the conn may close
     * while a worker runs it). */
    int (*prefix_fn)(const char *ctx, const char *path, unsigned char *buf, size_t len);
    char prefix_ctx[HTTPD_PREFIX_CTX];
    bool lingering; /* error answered: draining input, then close */
    /* private */
    bool in_dispatch;
    bool req_active;     /* on_request ran, on_request_end not yet */
    size_t head_pending; /* head bytes still in the input */
    int64_t head_started_ms;
    struct http_chunked chunk;
    struct httpd_put *put; /* a PUT being written by httpd_files_serve */
    void *job;             /* a disk job is out (common/work) */
    bool dead;             /* closed while it was: freed when it returns */
};

/* Wrap an accepted socket (the callee owns fd; closed on failure). With
 * tls_ctx (an SSL_CTX *), TLS is accepted on it. data becomes h->data.
 * Returns NULL on failure (on_close is not called). */
struct httpd_conn *httpd_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen,
                                void *tls_ctx, const struct httpd_ops *ops, void *data);

/* ---- answering ---- */

/* The calling loop thread's scratch buffer for a response: append the head
 * and body here, then httpd_flush() (httpd_done does it). Empty whenever
 * control returns to the loop. A second one (httpd_tx2) is for bytes bound
 * elsewhere (e.g. a request to a backend) while a response is being built. */
struct evbuffer *httpd_tx(void);
/* Append length bytes of file fd from offset to httpd_tx(); the buffer
 * owns fd on success (closed once sent). On a plain connection (tls false)
 * the bytes go out with sendfile(), on TLS they are mapped and copied.
 * Returns 0, or -1 (fd still the caller's). */
int httpd_tx_add_file(bool tls, int fd, int64_t offset, int64_t length);
/* The same into any buffer bound for a socket of this loop (e.g. a request
 * to a backend in httpd_tx2()); tls: that socket's. */
int httpd_add_file(struct evbuffer *dst, bool tls, int fd, int64_t offset, int64_t length);
struct evbuffer *httpd_tx2(void);
/* Move buf (emptied) to c's output; on a plain socket with nothing queued
 * it is written straight away (one writev, no poll round trip). */
void httpd_send(struct core_conn *c, struct evbuffer *buf, bool tls);
void httpd_flush(struct httpd_conn *h);
/* Free the calling thread's scratch buffers and open-file cache (at loop
 * thread exit). */
void httpd_thread_exit(void);

/* The current time as an IMF-fixdate (cached per second, per thread). */
const char *httpd_date_now(void);
/* keep_alive && persist && not stopping. */
bool httpd_can_persist(const struct httpd_conn *h);
/* Queue a response head into httpd_tx(): status line in the request's
 * version, Date, Server (h->server), Content-Type (ctype, may be NULL),
 * Content-Length (content_length >= 0), extra ("Name: v\r\n" lines, may be
 * NULL), Connection (close or keep-alive). */
void httpd_response_head(struct httpd_conn *h, int status, const char *ctype, int64_t content_length, bool keep,
                         const char *extra);
/* The same with its own reason phrase (reason "" leaves it empty: "201 "). */
void httpd_response_head_reason(struct httpd_conn *h, int status, const char *reason, const char *ctype,
                                int64_t content_length, bool keep, const char *extra);
/* A small HTML page ("<h1>status - reason</h1>\n" then msg, as Perlbal
 * words its own); usable for any status, e.g. 200 with a note. Errors that
 * leave the stream unusable (400, 408, 411, 413, 431, 5xx, or an unread
 * body) close the connection with a lingering close; others keep it. */
void httpd_error(struct httpd_conn *h, int status, const char *msg);
/* The response is complete in httpd_tx()/the output: flush it, and either
 * close after writing (keep false, stopping, or an unread request body) or
 * go back to reading the next request (pipelined ones are handled next). */
void httpd_done(struct httpd_conn *h, bool keep);
/* Send "100 Continue" once, if the client asked for it. */
void httpd_send_continue(struct httpd_conn *h);
/* Consume the request head now (before starting to read the body inside
 * on_request). The http_msg passed to on_request is invalid afterwards. */
void httpd_drop_head(struct httpd_conn *h);
/* Re-arm the conn's timeouts while a request is in flight: the idle
 * deadline holds until the request body is all in (head_in_buffer: head
 * bytes still in the input), then none (the answer may take its time). */
void httpd_request_timeouts(struct httpd_conn *h, size_t head_in_buffer);

/* ---- request bodies ---- */

enum httpd_body_result {
    HTTPD_BODY_MORE = 0,   /* moved what there was; more to come */
    HTTPD_BODY_DONE = 1,   /* the body is complete (h->body_done) */
    HTTPD_BODY_ERROR = -1, /* malformed chunked coding or over max_chunked_body */
};
/* Move up to max bytes (0 = all available) of the request body's payload
 * from the input to dst: Content-Length bytes as they are, a chunked body
 * decoded (chunk sizes, extensions and trailers are consumed, never
 * passed on). The head must have been consumed. On error the caller
 * answers (400/413) and must not reuse the stream. */
enum httpd_body_result httpd_body_read(struct httpd_conn *h, struct evbuffer *dst, size_t max);
/* Payload bytes that httpd_body_read could move now without reading. */
size_t httpd_body_available(struct httpd_conn *h);

/* ---- file serving ---- */

/* A document root and what may be done under it. The daemon fills the
 * public fields (and may change them live); the private ones start zeroed
 * (root_fd is opened on first use; set it to -1 or leave it 0: both mean
 * "not yet"). One struct may serve every loop. */
struct httpd_files {
    const char *docroot;     /* required */
    const char *index_files; /* "a, b": tried for a directory; NULL = "index.html" */
    bool dirindexing;        /* list a directory without an index file (else the page below) */
    int dir_disabled_status; /* status of the "Directory listing disabled" page; 0 = 403
                              * (Perlbal answers 200) */
    bool enable_put, enable_delete;
    int min_put_directory;         /* N > 0: a PUT path needs at least N directories (else 400
                                    * "Does not meet minimum directory requirement"), the first
                                    * N must exist (else 404 "Base directory does not exist"),
                                    * deeper ones are created (Perlbal's min_put_directory) */
    uint64_t max_put_size;         /* 0 = no limit (413 beyond) */
    bool skip_md5_check;           /* ignore Content-MD5 on PUT (checked by default) */
    bool put_fsync;                /* a PUT is answered only once the file (and the rename
                                    * in its directory) is on disk: fsync both */
    int put_ok_status;             /* status of a stored PUT; 0 = 201 new / 204 replaced */
    int put_md5_ok_status;         /* status of a stored PUT whose Content-MD5 was checked
                                    * and matched; 0 = as put_ok_status (Perlbal: 200 / 201) */
    const char *put_md5_ok_reason; /* its reason phrase, in the status line and the
                                    * page; NULL = the standard one; "" = none:
                                    * "201 " and "<h1>201</h1>", as Perlbal words it */
    bool put_in_place;             /* a PUT without Content-MD5 writes the target itself, as
                                    * Perlbal: truncated when the upload starts, growing as
                                    * it arrives; what arrived stays if the client leaves,
                                    * the file goes if httpd refuses the body (413, bad
                                    * chunking, a failed write). Else (and always with
                                    * Content-MD5) a temporary name beside it, renamed over
                                    * it once complete */
    bool put_status_body;          /* a stored PUT's answer carries the short text/html page
                                    * httpd_error writes ("<h1>200 - OK</h1>\n"), as Perlbal;
                                    * else no body */
    int bad_method_status;         /* the answer to a method other than GET, HEAD, PUT and
                                    * DELETE; 0 = 405 (Perlbal's web_server: 400) */
    bool concat_get;               /* GET /dir/??a,b,c serves the files one after another
                                    * (Perlbal's enable_concatenate_get; else 403) */
    /* hooks (optional): rewrite the clean path in place (NUL-ended, cap
     * bytes); a file was sent (for stats) */
    void (*rewrite_path)(void *arg, struct httpd_conn *h, char *path, size_t cap);
    void (*file_sent)(void *arg, struct httpd_conn *h);
    /* After a GET/HEAD's disk work, on the loop, before its answer (as
     * Perlbal's static_get_poststat_* / concat_get_poststat_* hooks):
     * HTTPD_POSTSTAT_MISSING, the file (or one of a concatenated GET's
     * files) does not exist and a 404 is next; HTTPD_POSTSTAT_SEND, a 200
     * is next (not a 304, 206 or 416), mtime the file's (a concatenated
     * GET's newest). Returning true takes the request: httpd answers
     * nothing, the daemon answers it (the head is consumed by then). */
    bool (*poststat)(void *arg, struct httpd_conn *h, int what, int64_t mtime);
    void *hook_arg;
    /* disk work (open, stat, small reads, directory listings) of GET/HEAD
     * runs on this common/work pool; NULL = on the loop. A hit in the
     * open-file cache (served within the last second) is answered on the
     * loop either way. */
    struct work_pool *work;
    /* private */
    _Atomic int root_fd_plus1; /* O_PATH fd of docroot + 1 (0 = not open) */
    const char *root_fd_for;   /* the docroot string it was opened for */
    _Atomic uint64_t gen;      /* bumped by PUT/DELETE: invalidates the open-file cache */
};

/* Answer req from the files under f->docroot: GET/HEAD (200/206/304/416,
 * 301 to add a directory's slash, index files, listing), PUT (201 created,
 * 204 replaced; 403 when disabled; a Content-MD5 that does not match the
 * body: 400 and nothing stored), DELETE (204; 404), others 405. Paths with
 * ".." above the root or that lead out of it through a symlink: 400/403.
 * "/dir/??a,b" concatenates files (concat_get; 500 without the slash before
 * "??", 404 for a missing file, Last-Modified of the newest, 304 for an
 * equal If-Modified-Since; at most 100 files).
 * Must be called from on_request with the req given there. */
void httpd_files_serve(struct httpd_conn *h, struct http_msg *req, struct httpd_files *f);
/* Drop every cached open file of f (after changing files behind httpd). */
void httpd_files_invalidate(struct httpd_files *f);
/* True for a Range "bytes=first-last" with last < first: unsatisfiable for
 * Perlbal (416), where http_parse_range ignores it. */
bool httpd_range_inverted(const char *value, size_t len);
/* "text/html" etc. from a path's extension ("text/plain" if unknown), as
 * /etc/mime.types says (read once at process start; a small built-in table
 * when it is absent). */
const char *httpd_mime_type(const char *path);
/* Replace the table with the mime.types file at path ("type ext ext ..."
 * lines, '#' comments; the first type named for an extension wins). At
 * start-up only: not safe against concurrent lookups. Returns the number
 * of extensions, or -1 (file absent, unreadable or empty: the table in use
 * stays). */
int httpd_mime_load(const char *path);
#endif
