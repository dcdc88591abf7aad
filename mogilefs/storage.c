/* storage: mogstored's connections — HTTP GET/HEAD/PUT/DELETE of files
 * under the docroot, the side channel (size, MD5, SHA-1, watch) — and the
 * threads they hand disk work to. mogstored.c owns the settings, the usage
 * files and start-up; tests/fuzz/fuzz_mog_storage_session.c drives these
 * connections directly.
 *
 * Built on common/http (parser, Range, dates, path normaliser) and
 * common/conn (see README for why not common/httpd).
 *
 * HTTP connection states (one enum, driven by http_drive):
 *   ST_HEAD   read a request head; GET/HEAD/DELETE answer at once (GET's body
 *             goes out with sendfile through evbuffer_add_file)
 *   ST_BODY   PUT: body bytes (Content-Length or chunked) into a temporary
 *             file beside the target, Content-MD5 computed on the way
 *   ST_SYNC   PUT body complete: fsync + rename + folder fsync run on a sync
 *             thread (reading paused); the answer follows -> ST_HEAD
 *             (with no sync threads, the same runs inline)
 *   ST_CLOSE  answer written, closing.
 * Small disk calls (open/write/rename/unlink) run on the loop; fsyncs and
 * whole-file digests run on threads. */
#include "mogilefs/mogilefs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/evp.h>

#include "common/admin.h"
#include "common/config.h"
#include "common/conn.h"
#include "common/daemon.h"
#include "common/http.h"
#include "common/line.h"
#include "common/listen.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/stats.h"

#include "mogilefs/storage.h"

struct mog_st_cfg mog_st_cfg;
struct mog_st_state mog_st;

/* ---- helpers ------------------------------------------------------------------------------ */

/* The Date header text, formatted once per second. */
static const char *date_now(void)
{
    static time_t last;
    static char buf[32];
    time_t now = time(NULL);
    if (now != last) {
        http_date_format(now, buf);
        last = now;
    }
    return buf;
}

static void http_reply(struct evbuffer *out, int status, const char *extra, const char *body, bool keep)
{
    const char *date = date_now();
    size_t bl = body ? strlen(body) : 0;
    evbuffer_add_printf(out, "HTTP/1.0 %d %s\r\nDate: %s\r\nServer: mogstored/%s\r\nContent-Length: %zu\r\n%s%s\r\n%s",
                        status, http_reason(status), date, MOG_VERSION, bl, keep ? "Connection: keep-alive\r\n" : "",
                        extra ? extra : "", body ? body : "");
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Content-MD5 is base64 of the 16-byte digest (RFC 1864). */
static int decode_md5_header(const char *v, size_t len, unsigned char *out)
{
    unsigned char buf[24];
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] == '=')
            break;
        int x = b64val((unsigned char)v[i]);
        if (x < 0)
            return -1;
        acc = (acc << 6) | (unsigned)x;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= sizeof buf)
                return -1;
            buf[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (o != 16)
        return -1;
    memcpy(out, buf, 16);
    return 0;
}

/* mkdir -p of every directory above the file (not the first element: the
 * /devN base must already exist, as mogstored's min_put_directory=1). */
static int make_parents(const char *root, const char *path)
{
    char full[4096];
    int n = snprintf(full, sizeof full, "%s%s", root, path);
    if (n < 0 || (size_t)n >= sizeof full)
        return -1;
    size_t rl = strlen(root);
    char *first = strchr(full + rl + 1, '/');
    if (!first)
        return -1;
    *first = '\0';
    struct stat sb;
    if (stat(full, &sb) < 0 || !S_ISDIR(sb.st_mode))
        return -2;
    *first = '/';
    for (char *p = strchr(first + 1, '/'); p; p = strchr(p + 1, '/')) {
        *p = '\0';
        if (mkdir(full, 0755) < 0 && errno != EEXIST) {
            *p = '/';
            return -1;
        }
        *p = '/';
    }
    return 0;
}

/* ---- HTTP sessions ---------------------------------------------------------------------------- */

enum st_state { ST_HEAD = 0, ST_BODY, ST_SYNC, ST_CLOSE };

struct st_sess {
    struct core_conn *c;
    struct evbuffer *tx;        /* replies of this read pass, written at once */
    enum st_state state;
    bool keep;
    /* PUT in progress */
    int fd;
    char path[4096], tmp[4200];
    bool chunked;
    uint64_t left;              /* Content-Length bytes still to come */
    uint64_t written;
    struct http_chunked ch;
    EVP_MD_CTX *md5;
    unsigned char want_md5[16];
    bool check_md5;
    bool failed;                /* write error: keep reading, answer 500 at the end */
    bool closed;                /* conn gone while ST_SYNC: the sync job frees */
    bool in_done, gone;         /* sync_done running / the conn was freed meanwhile */
};

static void put_reset(struct st_sess *s, bool unlink_tmp)
{
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (unlink_tmp && s->tmp[0])
        unlink(s->tmp);
    s->tmp[0] = '\0';
    if (s->md5) {
        EVP_MD_CTX_free(s->md5);
        s->md5 = NULL;
    }
}

/* Write what this pass produced (one writev/sendfile when nothing is queued). */
static void flush_tx(struct st_sess *s)
{
    if (evbuffer_get_length(s->tx) > 0)
        conn_write_now(s->c, s->tx);
}

static void close_after_reply(struct st_sess *s)
{
    flush_tx(s);
    s->state = ST_CLOSE;
    conn_close_after_write(s->c);
}

static void fail(struct st_sess *s, int status, const char *msg)
{
    stats_counter_add(&mog_st.errors, 1);
    http_reply(s->tx, status, "Connection: close\r\n", msg, false);
    close_after_reply(s);
}

#define SMALL_FILE 65536  /* copied into the reply: one writev beats header + sendfile */

static void serve_get(struct st_sess *s, const struct http_msg *m, const char *path, bool head)
{
    char full[4200];
    snprintf(full, sizeof full, "%s%s", mog_st_cfg.docroot, path);
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        if (fd >= 0)
            close(fd);
        http_reply(s->tx, 404, NULL, "Not found\n", s->keep);
        return;
    }
    char lm[32], extra[256];
    http_date_format(sb.st_mtime, lm);
    uint64_t size = (uint64_t)sb.st_size, first = 0, last = size ? size - 1 : 0;
    int status = 200;
    size_t rl;
    const char *rv = http_header_value(m, "Range", &rl);
    if (rv) {
        enum http_range_result rr = http_parse_range(rv, rl, size, &first, &last);
        if (rr == HTTP_RANGE_UNSATISFIABLE) {
            close(fd);
            snprintf(extra, sizeof extra, "Content-Range: bytes */%llu\r\n", (unsigned long long)size);
            http_reply(s->tx, 416, extra, NULL, s->keep);
            return;
        }
        if (rr == HTTP_RANGE_OK)
            status = 206;
    }
    uint64_t len = size ? last - first + 1 : 0;
    if (status == 206)
        snprintf(extra, sizeof extra, "Content-Range: bytes %llu-%llu/%llu\r\n", (unsigned long long)first,
                 (unsigned long long)last, (unsigned long long)size);
    else
        extra[0] = '\0';
    evbuffer_add_printf(s->tx,
                        "HTTP/1.0 %d %s\r\nDate: %s\r\nServer: mogstored/%s\r\nContent-Type: application/octet-stream\r\n"
                        "Last-Modified: %s\r\nAccept-Ranges: bytes\r\nContent-Length: %llu\r\n%s%s\r\n",
                        status, http_reason(status), date_now(), MOG_VERSION, lm, (unsigned long long)len, extra,
                        s->keep ? "Connection: keep-alive\r\n" : "");
    stats_counter_add(head ? &mog_st.heads : &mog_st.gets, 1);
    if (head || len == 0) {
        close(fd);
        return;
    }
    if (len <= SMALL_FILE) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(s->tx, (ev_ssize_t)len, &v, 1) == 1) {
            ssize_t got = pread(fd, v.iov_base, (size_t)len, (off_t)first);
            close(fd);
            if (got == (ssize_t)len) {
                v.iov_len = (size_t)len;
                evbuffer_commit_space(s->tx, &v, 1);
                return;
            }
            close_after_reply(s); /* the head went out: the peer sees a short body */
            return;
        }
    }
    /* Large: the head goes now, the body with sendfile from the conn's own
     * output buffer. */
    flush_tx(s);
    if (evbuffer_add_file(conn_out(s->c), fd, (ev_off_t)first, (ev_off_t)len) < 0) {
        close(fd);
        close_after_reply(s);
    }
}

static void serve_delete(struct st_sess *s, const char *path)
{
    char full[4200];
    snprintf(full, sizeof full, "%s%s", mog_st_cfg.docroot, path);
    stats_counter_add(&mog_st.deletes, 1);
    if (unlink(full) == 0) {
        http_reply(s->tx, 204, NULL, NULL, s->keep);
    } else if (errno == ENOENT) {
        http_reply(s->tx, 404, NULL, "Not found\n", s->keep);
    } else {
        http_reply(s->tx, 400, NULL, "Delete failed\n", s->keep);
    }
}

static void put_finish(struct st_sess *s);

static void put_start(struct st_sess *s, const struct http_msg *m, const char *path)
{
    if (m->body == HTTP_BODY_NONE && http_find_header(m, "Content-Length") < 0) {
        fail(s, 400, "Content-Length or chunked body required\n");
        return;
    }
    if (m->body == HTTP_BODY_LENGTH && mog_st_cfg.max_put && m->content_length > mog_st_cfg.max_put) {
        fail(s, 413, "Too large\n");
        return;
    }
    int mp = make_parents(mog_st_cfg.docroot, path);
    if (mp == -2) {
        fail(s, 404, "Base directory does not exist\n");
        return;
    }
    if (mp < 0) {
        fail(s, 500, "Cannot create directory\n");
        return;
    }
    static unsigned long seq;
    snprintf(s->path, sizeof s->path, "%s%s", mog_st_cfg.docroot, path);
    snprintf(s->tmp, sizeof s->tmp, "%s.%d.%lu.tmp", s->path, (int)getpid(), ++seq);
    s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s->fd < 0) {
        s->tmp[0] = '\0';
        fail(s, 500, "Cannot create file\n");
        return;
    }
    s->check_md5 = false;
    size_t ml;
    const char *mv = http_header_value(m, "Content-MD5", &ml);
    if (mv) {
        if (decode_md5_header(mv, ml, s->want_md5) < 0) {
            put_reset(s, true);
            fail(s, 400, "Bad Content-MD5\n");
            return;
        }
        s->check_md5 = true;
        s->md5 = EVP_MD_CTX_new();
        if (!s->md5 || !EVP_DigestInit_ex(s->md5, EVP_md5(), NULL)) {
            put_reset(s, true);
            fail(s, 500, "No digest\n");
            return;
        }
    }
    s->chunked = m->body == HTTP_BODY_CHUNKED;
    s->left = m->body == HTTP_BODY_LENGTH ? m->content_length : 0;
    s->written = 0;
    s->failed = false;
    if (s->chunked)
        http_chunked_init(&s->ch, mog_st_cfg.max_put);
    if (m->expect_continue) {
        evbuffer_add_printf(s->tx, "HTTP/1.1 100 Continue\r\n\r\n");
        flush_tx(s);
    }
    s->state = ST_BODY;
    stats_counter_add(&mog_st.puts, 1);
    if (!s->chunked && s->left == 0)
        put_finish(s); /* an empty file */
}

static void put_data(struct st_sess *s, const char *p, size_t n)
{
    if (s->failed || n == 0)
        return;
    if (s->md5)
        EVP_DigestUpdate(s->md5, p, n);
    while (n > 0) {
        ssize_t w = write(s->fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            log_warn("mogstored: write %s: %s", s->tmp, strerror(errno));
            s->failed = true;
            return;
        }
        p += w;
        n -= (size_t)w;
        s->written += (uint64_t)w;
    }
}

/* Durable before OK: fsync the data, rename into place, fsync the folder. */
/* ---- sync threads: fsync + rename off the loop ---------------------------------------------- */
/* move to common/work when it lands */

struct sync_job {
    struct st_sess *s;
    struct core_loop *loop;
    int fd;
    char tmp[4200], path[4096];
    int status;
    struct sync_job *next;
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct sync_job *head, *tail;
    bool stop;
    pthread_t threads[8];
    int n;
} sq = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

static void http_drive(struct st_sess *s);

/* Durable before OK: the data, then the name (rename), then the folder. */
static void sync_job_run(struct sync_job *j)
{
    j->status = 200;
    if (fsync(j->fd) < 0)
        j->status = 500;
    close(j->fd);
    if (j->status == 200 && rename(j->tmp, j->path) < 0)
        j->status = 500;
    if (j->status != 200) {
        unlink(j->tmp);
        return;
    }
    char *slash = strrchr(j->path, '/');
    if (slash) {
        *slash = '\0';
        int dfd = open(j->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        *slash = '/';
    }
}

/* Back on the loop: answer the PUT. */
static void sync_done(void *arg)
{
    struct sync_job *j = arg;
    struct st_sess *s = j->s;
    if (j->status != 200)
        stats_counter_add(&mog_st.errors, 1);
    if (s->closed) {
        if (s->tx)
            evbuffer_free(s->tx);
        free(s);
        free(j);
        return;
    }
    http_reply(s->tx, j->status, NULL, j->status == 200 ? NULL : "Sync failed\n", s->keep);
    free(j);
    struct core_conn *c = s->c;
    s->state = ST_HEAD;
    flush_tx(s);
    /* Outside a conn callback the core frees a conn at once: on_close then
     * only marks s gone while this runs, and c is not touched after. */
    s->in_done = true;
    if (!s->keep) {
        s->state = ST_CLOSE;
        conn_close_after_write(c);
    } else {
        conn_resume_read(c);
        conn_kick(c); /* pipelined requests, inside the core's callback guard */
        if (!s->gone && s->state != ST_SYNC)
            conn_set_busy(c, false);
    }
    s->in_done = false;
    if (s->gone) {
        if (s->tx)
            evbuffer_free(s->tx);
        free(s);
    }
}

static void *sync_thread(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&sq.mu);
        while (!sq.head && !sq.stop)
            pthread_cond_wait(&sq.cv, &sq.mu);
        struct sync_job *j = sq.head;
        if (!j) {
            pthread_mutex_unlock(&sq.mu);
            return NULL;
        }
        sq.head = j->next;
        if (!sq.head)
            sq.tail = NULL;
        pthread_mutex_unlock(&sq.mu);
        sync_job_run(j);
        if (loop_call(j->loop, sync_done, j) < 0)
            free(j); /* shutting down */
    }
}

void mog_st_sync_start(int n)
{
    sq.n = n < 0 ? 0 : n > 8 ? 8 : n;
    for (int i = 0; i < sq.n; i++)
        if (pthread_create(&sq.threads[i], NULL, sync_thread, NULL) != 0) {
            sq.n = i;
            break;
        }
}

void mog_st_sync_stop(void)
{
    pthread_mutex_lock(&sq.mu);
    sq.stop = true;
    pthread_cond_broadcast(&sq.cv);
    pthread_mutex_unlock(&sq.mu);
    for (int i = 0; i < sq.n; i++)
        pthread_join(sq.threads[i], NULL);
    sq.n = 0;
}

static void put_finish(struct st_sess *s)
{
    int status = 200;
    const char *msg = NULL;
    if (s->failed) {
        status = 507;
        msg = "Write failed\n";
    } else if (s->check_md5) {
        unsigned char got[EVP_MAX_MD_SIZE];
        unsigned int gl = 0;
        EVP_DigestFinal_ex(s->md5, got, &gl);
        if (memcmp(got, s->want_md5, 16)) {
            status = 400;
            msg = "Content-MD5 mismatch\n";
            stats_counter_add(&mog_st.md5_mismatch, 1);
        }
    }
    stats_counter_add(&mog_st.put_bytes, s->written);
    struct sync_job *j = status == 200 ? calloc(1, sizeof *j) : NULL;
    if (status == 200 && !j) {
        status = 500;
        msg = "Out of memory\n";
    }
    if (status != 200) {
        put_reset(s, true);
        stats_counter_add(&mog_st.errors, 1);
        http_reply(s->tx, status, NULL, msg, s->keep);
        s->state = ST_HEAD;
        if (!s->keep)
            close_after_reply(s);
        return;
    }
    /* The file now belongs to the sync job. */
    j->s = s;
    j->loop = s->c->loop;
    j->fd = s->fd;
    snprintf(j->tmp, sizeof j->tmp, "%s", s->tmp);
    snprintf(j->path, sizeof j->path, "%s", s->path);
    s->fd = -1;
    s->tmp[0] = '\0';
    put_reset(s, false);
    if (sq.n == 0) {
        /* No sync threads: the same work inline, the answer at once. */
        sync_job_run(j);
        if (j->status != 200)
            stats_counter_add(&mog_st.errors, 1);
        http_reply(s->tx, j->status, NULL, j->status == 200 ? NULL : "Sync failed\n", s->keep);
        free(j);
        s->state = ST_HEAD;
        if (!s->keep)
            close_after_reply(s);
        return;
    }
    s->state = ST_SYNC;
    conn_set_busy(s->c, true);
    conn_pause_read(s->c);
    pthread_mutex_lock(&sq.mu);
    if (sq.tail)
        sq.tail->next = j;
    else
        sq.head = j;
    sq.tail = j;
    pthread_cond_signal(&sq.cv);
    pthread_mutex_unlock(&sq.mu);
}

static void handle_head(struct st_sess *s, const struct http_msg *m)
{
    s->keep = m->keep_alive;
    char path[4096];
    bool slash = false;
    int pl = http_path_normalize(m->target, m->target_len, path, sizeof path, &slash);
    if (pl < 0) {
        fail(s, 400, "Bad path\n");
        return;
    }
    switch (m->method) {
    case HTTP_M_GET:
    case HTTP_M_HEAD:
        if (pl == 1) {
            /* The root answers so `mogadm check` sees the node up. */
            http_reply(s->tx, 200, "Content-Type: text/plain\r\n",
                       m->method == HTTP_M_HEAD ? NULL : "mogstored\n", s->keep);
            break;
        }
        serve_get(s, m, path, m->method == HTTP_M_HEAD);
        break;
    case HTTP_M_PUT:
        if (slash || !mog_storage_path_ok(path, (size_t)pl)) {
            fail(s, 400, "Invalid path\n");
            return;
        }
        put_start(s, m, path);
        break;
    case HTTP_M_DELETE:
        if (slash || !mog_storage_path_ok(path, (size_t)pl)) {
            fail(s, 400, "Invalid path\n");
            return;
        }
        serve_delete(s, path);
        break;
    default:
        /* MKCOL and the rest: 400, as Perlbal answers MKCOL; the tracker
         * then relies on PUT creating directories. */
        if (m->method_len == 5 && !memcmp(m->method_str, "MKCOL", 5)) {
            http_reply(s->tx, 400, NULL, "MKCOL not supported\n", s->keep);
            return;
        }
        fail(s, 405, "Method not allowed\n");
        break;
    }
    if (!s->keep && s->state == ST_HEAD)
        close_after_reply(s);
}

static void http_drive(struct st_sess *s)
{
    struct evbuffer *in = conn_in(s->c);
    while (s->state != ST_CLOSE && s->state != ST_SYNC && !conn_is_closing(s->c)) {
        size_t avail = evbuffer_get_length(in);
        if (avail == 0)
            return;
        if (s->state == ST_HEAD) {
            size_t look = avail < HTTP_DEFAULT_MAX_HEAD ? avail : HTTP_DEFAULT_MAX_HEAD;
            const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
            struct http_msg m;
            int r = http_parse_request(buf, look, NULL, &m);
            if (r == 0) {
                if (look >= HTTP_DEFAULT_MAX_HEAD)
                    fail(s, 431, "Request head too large\n");
                return;
            }
            if (r < 0) {
                fail(s, m.error ? m.error : 400, "Bad request\n");
                return;
            }
            s->c->requests++;
            handle_head(s, &m); /* m points into the buffer: drain after */
            evbuffer_drain(in, (size_t)r);
            continue;
        }
        /* ST_BODY */
        if (!s->chunked) {
            struct evbuffer_iovec v[4];
            size_t want = s->left;
            int nv = evbuffer_peek(in, (ev_ssize_t)(want < avail ? want : avail), NULL, v, 4);
            size_t used = 0;
            for (int i = 0; i < nv && used < want; i++) {
                size_t n = v[i].iov_len;
                if (n > want - used)
                    n = want - used;
                put_data(s, v[i].iov_base, n);
                used += n;
            }
            evbuffer_drain(in, used);
            s->left -= used;
            if (s->left == 0)
                put_finish(s);
        } else {
            size_t look = avail < 65536 ? avail : 65536;
            const char *buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
            size_t consumed = 0, off = 0, dl = 0;
            enum http_chunk_result cr = http_chunked_step(&s->ch, buf, look, &consumed, &off, &dl);
            if (cr == HTTP_CHUNK_ERROR) {
                put_reset(s, true);
                fail(s, 400, "Bad chunked body\n");
                return;
            }
            if (cr == HTTP_CHUNK_DATA)
                put_data(s, buf + off, dl);
            evbuffer_drain(in, consumed);
            if (cr == HTTP_CHUNK_DONE)
                put_finish(s);
            else if (cr == HTTP_CHUNK_NEED_MORE && consumed == 0)
                return;
        }
    }
}

static int http_on_read(struct core_conn *c)
{
    struct st_sess *s = c->data;
    http_drive(s);
    flush_tx(s);
    return 0;
}

static void http_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct st_sess *s = c->data;
    if (s) {
        put_reset(s, true); /* a PUT cut short leaves nothing behind */
        if (s->in_done) {
            s->gone = true; /* sync_done frees it */
            s->c = NULL;
            return;
        }
        if (s->state == ST_SYNC) {
            s->closed = true; /* sync_done frees it */
            s->c = NULL;
            return;
        }
        if (s->tx)
            evbuffer_free(s->tx);
        free(s);
    }
    c->data = NULL;
}

static const struct conn_ops http_ops = { .name = "mogstored-http", .on_read = http_on_read, .on_close = http_on_close };

void mog_st_http_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct st_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    s->fd = -1;
    s->tx = evbuffer_new();
    if (!s->tx) {
        free(s);
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &http_ops, s);
    if (!c) {
        evbuffer_free(s->tx);
        free(s);
        return;
    }
    s->c = c;
    conn_set_output_limit(c, 1u << 20);
    conn_set_timeouts(c, (uint32_t)mog_st_cfg.idle_timeout * 1000, 60000);
    /* libevent writes 16 KiB per callback by default: a 1 MiB sendfile
     * would take 64 trips through the loop. */
    bufferevent_set_max_single_write(c->bev, 4u << 20);
}

void mog_st_http_reject(int fd, void *arg)
{
    (void)arg;
    static const char msg[] = "HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    ssize_t r = send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)r;
}

/* ---- side channel ------------------------------------------------------------------------------- */

struct side_sess {
    struct core_conn *c;
    bool running, closed;
    bool watching;                  /* "watch": gets the utilization stream */
    bool in_done, gone;             /* hash_done running / the conn was freed meanwhile */
    struct side_sess *wnext, *wprev;
};

/* ---- watch: per-device utilization, as mogstored's iostat stream --------------------------- */
/* Every second: for each devN folder, the block device holding it (stat's
 * st_dev), and from /proc/diskstats its time spent doing I/O since the last
 * tick, as a percentage. Sent to every watcher as "devN\t<util>\n" lines
 * and a "." line (what the tracker's IOStatWatcher reads). */

struct watch_dev { int devid; unsigned maj, min; uint64_t last_ticks; bool have_last; };

static struct {
    struct side_sess *list;
    struct event *timer;
    struct watch_dev dev[256];
    int ndev;
    uint64_t last_ms;
} W;

static void watch_remove(struct side_sess *s)
{
    if (!s->watching)
        return;
    if (s->wprev)
        s->wprev->wnext = s->wnext;
    else
        W.list = s->wnext;
    if (s->wnext)
        s->wnext->wprev = s->wprev;
    s->watching = false;
}

static bool io_ticks(const char *stats, unsigned maj, unsigned min, uint64_t *ticks)
{
    const char *p = stats;
    while (p && *p) {
        unsigned a, b;
        unsigned long long f[11];
        char name[64];
        if (sscanf(p, " %u %u %63s %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &a, &b, name, &f[0], &f[1], &f[2],
                   &f[3], &f[4], &f[5], &f[6], &f[7], &f[8], &f[9]) == 13 && a == maj && b == min) {
            *ticks = f[9];
            return true;
        }
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return false;
}

static void watch_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
    if (!W.list)
        return; /* nobody listens: no work */
    static char stats[65536];
    int sfd = open("/proc/diskstats", O_RDONLY | O_CLOEXEC);
    ssize_t n = sfd >= 0 ? read(sfd, stats, sizeof stats - 1) : -1;
    if (sfd >= 0)
        close(sfd);
    stats[n > 0 ? n : 0] = '\0';
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t elapsed = W.last_ms ? now - W.last_ms : 0;
    W.last_ms = now;
    /* The devices present now (folders come and go). */
    DIR *d = opendir(mog_st_cfg.docroot);
    struct watch_dev cur[256];
    int nc = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) && nc < 256) {
        if (strncmp(e->d_name, "dev", 3) || !e->d_name[3] || strspn(e->d_name + 3, "0123456789") != strlen(e->d_name + 3))
            continue;
        char path[4200];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s", mog_st_cfg.docroot, e->d_name);
        if (stat(path, &sb) < 0)
            continue;
        cur[nc] = (struct watch_dev){ .devid = atoi(e->d_name + 3), .maj = major(sb.st_dev), .min = minor(sb.st_dev) };
        for (int i = 0; i < W.ndev; i++)
            if (W.dev[i].devid == cur[nc].devid && W.dev[i].maj == cur[nc].maj && W.dev[i].min == cur[nc].min) {
                cur[nc].last_ticks = W.dev[i].last_ticks;
                cur[nc].have_last = W.dev[i].have_last;
            }
        nc++;
    }
    if (d)
        closedir(d);
    struct evbuffer *out = evbuffer_new();
    for (int i = 0; i < nc; i++) {
        uint64_t t;
        double util = 0;
        if (io_ticks(stats, cur[i].maj, cur[i].min, &t)) {
            if (cur[i].have_last && elapsed > 0 && t >= cur[i].last_ticks)
                util = 100.0 * (double)(t - cur[i].last_ticks) / (double)elapsed;
            cur[i].last_ticks = t;
            cur[i].have_last = true;
        }
        if (util > 100)
            util = 100;
        evbuffer_add_printf(out, "dev%d\t%.2f\n", cur[i].devid, util);
    }
    evbuffer_add(out, ".\n", 2);
    memcpy(W.dev, cur, sizeof cur[0] * (size_t)nc);
    W.ndev = nc;
    size_t len = evbuffer_get_length(out);
    const unsigned char *bytes = evbuffer_pullup(out, (ev_ssize_t)len);
    for (struct side_sess *w = W.list; w; w = w->wnext)
        if (w->c && !conn_is_closing(w->c) && evbuffer_get_length(conn_out(w->c)) < (1u << 20))
            evbuffer_add(conn_out(w->c), bytes, len); /* a watcher that does not read misses lines */
    evbuffer_free(out);
}

void mog_st_watch_start(void)
{
    struct core_loop *loop = loop_get(0);
    W.timer = event_new(loop->base, -1, EV_PERSIST, watch_tick, NULL);
    struct timeval tv = { 1, 0 };
    if (W.timer)
        event_add(W.timer, &tv);
}

void mog_st_watch_stop(void)
{
    if (W.timer)
        event_free(W.timer);
    W.timer = NULL;
}

struct hash_job {
    struct side_sess *s;
    struct core_loop *loop;
    char uri[1024];
    bool sha1;
    char reply[1200];
};

static void hash_done(void *arg)
{
    struct hash_job *j = arg;
    struct side_sess *s = j->s;
    mog_st.hash_jobs--;
    if (s->closed) {
        free(s);
        free(j);
        return;
    }
    s->running = false;
    struct core_conn *c = s->c;
    evbuffer_add(conn_out(c), j->reply, strlen(j->reply));
    free(j);
    /* As sync_done: on_close only marks s gone while this runs. */
    s->in_done = true;
    conn_resume_read(c);
    conn_kick(c);
    if (!s->gone && !s->running)
        conn_set_busy(c, false);
    s->in_done = false;
    if (s->gone)
        free(s);
}

/* Thread: digest a whole file without blocking the loop. */
static void *hash_thread(void *arg)
{
    struct hash_job *j = arg;
    char full[4200];
    snprintf(full, sizeof full, "%s%s", mog_st_cfg.docroot, j->uri);
    const char *name = j->sha1 ? "SHA-1" : "MD5";
    int fd = open(full, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(j->reply, sizeof j->reply, "%s %s=-1\r\n", j->uri, name);
    } else {
        EVP_MD_CTX *ctx = EVP_MD_CTX_new();
        EVP_DigestInit_ex(ctx, j->sha1 ? EVP_sha1() : EVP_md5(), NULL);
        char buf[65536];
        ssize_t n;
        off_t off = 0;
        while ((n = read(fd, buf, sizeof buf)) > 0) {
            EVP_DigestUpdate(ctx, buf, (size_t)n);
            off += n;
        }
        unsigned char dig[EVP_MAX_MD_SIZE];
        unsigned int dl = 0;
        EVP_DigestFinal_ex(ctx, dig, &dl);
        EVP_MD_CTX_free(ctx);
        close(fd);
        if (n < 0) {
            snprintf(j->reply, sizeof j->reply, "ERR read %s at %lld failed\r\n", j->uri, (long long)off);
        } else {
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            for (unsigned i = 0; i < dl; i++)
                snprintf(hex + 2 * i, 3, "%02x", dig[i]);
            snprintf(j->reply, sizeof j->reply, "%s %s=%s\r\n", j->uri, name, hex);
        }
    }
    if (loop_call(j->loop, hash_done, j) < 0)
        free(j);
    return NULL;
}

static void side_drive(struct side_sess *s)
{
    struct evbuffer *in = conn_in(s->c), *out = conn_out(s->c);
    while (!s->running && !conn_is_closing(s->c) && evbuffer_get_length(in) > 0) {
        size_t len, consumed;
        enum line_status ls;
        char *line = line_peek(in, 4096, &len, &consumed, &ls);
        if (ls == LINE_NEED_MORE)
            return;
        if (ls == LINE_TOO_LONG) {
            evbuffer_add_printf(out, "ERROR: line too long\r\n");
            conn_close_after_write(s->c);
            return;
        }
        stats_counter_add(&mog_st.side_cmds, 1);
        char *uri;
        size_t ul;
        enum mog_side_cmd k = mog_side_parse(line, len, &uri, &ul);
        if (k == MOG_SIDE_DOTDOT) {
            evbuffer_add_printf(out, "ERROR: uri invalid (contains ..)\r\n");
        } else if (k == MOG_SIDE_SIZE) {
            char full[4200];
            snprintf(full, sizeof full, "%s%.*s", mog_st_cfg.docroot, (int)ul, uri);
            struct stat sb;
            if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode))
                evbuffer_add_printf(out, "%.*s %lld\r\n", (int)ul, uri, (long long)sb.st_size);
            else
                evbuffer_add_printf(out, "%.*s -1\r\n", (int)ul, uri);
        } else if (k == MOG_SIDE_MD5 || k == MOG_SIDE_SHA1) {
            if (mog_st.hash_jobs >= mog_st_cfg.max_hash_jobs || ul >= sizeof ((struct hash_job *)0)->uri) {
                evbuffer_add_printf(out, "ERR busy %.*s\r\n", (int)(ul > 1000 ? 1000 : ul), uri);
            } else {
                struct hash_job *j = calloc(1, sizeof *j);
                pthread_t t;
                if (j) {
                    j->s = s;
                    j->loop = s->c->loop;
                    j->sha1 = k == MOG_SIDE_SHA1;
                    memcpy(j->uri, uri, ul);
                    mog_st.hash_jobs++;
                    pthread_attr_t at;
                    pthread_attr_init(&at);
                    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
                    if (pthread_create(&t, &at, hash_thread, j) == 0) {
                        s->running = true;
                        conn_set_busy(s->c, true);
                        conn_pause_read(s->c);
                    } else {
                        mog_st.hash_jobs--;
                        free(j);
                        evbuffer_add_printf(out, "ERR busy\r\n");
                    }
                    pthread_attr_destroy(&at);
                }
            }
        } else if (k == MOG_SIDE_WATCH) {
            if (!s->watching) {
                s->watching = true;
                s->wprev = NULL;
                s->wnext = W.list;
                if (W.list)
                    W.list->wprev = s;
                W.list = s;
            }
        } else if (k == MOG_SIDE_BAD) {
            evbuffer_add_printf(out, "ERROR: bad command\r\n");
        } else {
            size_t wl = 0;
            while (wl < len && line[wl] != ' ')
                wl++;
            evbuffer_add_printf(out, "ERROR: unknown command: %.*s\r\n", (int)(wl > 64 ? 64 : wl), line);
        }
        evbuffer_drain(in, consumed);
    }
}

static int side_on_read(struct core_conn *c)
{
    side_drive(c->data);
    return 0;
}

static void side_on_close(struct core_conn *c, enum conn_close_reason why)
{
    (void)why;
    struct side_sess *s = c->data;
    c->data = NULL;
    if (!s)
        return;
    watch_remove(s);
    s->c = NULL;
    if (s->in_done) {
        s->gone = true; /* hash_done frees it */
        return;
    }
    if (s->running)
        s->closed = true; /* hash_done frees it */
    else
        free(s);
}

static const struct conn_ops side_ops = { .name = "mogstored-side", .on_read = side_on_read, .on_close = side_on_close };

void mog_st_side_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct side_sess *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return;
    }
    struct core_conn *c = conn_new(loop, fd, sa, salen, &side_ops, s);
    if (!c) {
        free(s);
        return;
    }
    s->c = c;
    conn_set_output_limit(c, 1u << 20);
}

