/* httpd end to end over loopback: a file server (httpd_files_serve) and a
 * body-echo handler (httpd_body_read) on one loop, driven by a blocking
 * client thread — GET/HEAD, Range and 416, If-Modified-Since, the
 * directory redirect and listing switch, confinement, pipelining and
 * keep-alive, PUT (Content-Length, chunked, 100-continue, Content-MD5 right
 * and wrong, max size), DELETE, chunked bodies decoded, a head bomb (431),
 * and the head deadline (408); GET/HEAD disk work on a common/work pool. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "common/httpd.h"
#include "common/listen.h"
#include "common/loop.h"
#include "common/work.h"
#include "tests/unit/unit.h"

static char root[256];
static struct httpd_files files;
static int port;

/* a prefix_fn: the file's first bytes upper-cased; ctx "bad" refuses (404) */
static int upper_prefix(const char *ctx, const char *path, unsigned char *buf, size_t len)
{
    (void)path;
    if (!strcmp(ctx, "bad"))
        return 404;
    for (size_t i = 0; i < len; i++)
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (unsigned char)(buf[i] - 32);
    return 0;
}

/* poststat: when on, answers 299 "what mtime" itself instead of httpd */
static _Atomic bool take_poststat;
static bool on_poststat(void *arg, struct httpd_conn *h, int what, int64_t mtime)
{
    (void)arg;
    if (!take_poststat)
        return false;
    char body[64];
    int n =
        snprintf(body, sizeof body, "%s %lld", what == HTTPD_POSTSTAT_MISSING ? "missing" : "send", (long long)mtime);
    httpd_response_head(h, 299, "text/plain", n, false, NULL);
    evbuffer_add(httpd_tx(), body, (size_t)n);
    httpd_done(h, false);
    return true;
}

static void on_request(struct httpd_conn *h, struct http_msg *req)
{
    if (req->target_len > 4 && !memcmp(req->target + req->target_len - 4, "?pre", 4)) {
        h->prefix_fn = upper_prefix;
        snprintf(h->prefix_ctx, sizeof h->prefix_ctx, "%s",
                 memmem(req->target, req->target_len, "bad", 3) ? "bad" : "");
    }
    if (req->target_len >= 5 && !memcmp(req->target, "/echo", 5)) {
        /* answers with the decoded body once it is all in (on_input) */
        h->data = evbuffer_new();
        httpd_send_continue(h);
        return;
    }
    httpd_files_serve(h, req, &files);
}

static void on_input(struct httpd_conn *h)
{
    struct evbuffer *body = h->data;
    if (!body)
        return;
    enum httpd_body_result r = httpd_body_read(h, body, 0);
    if (r == HTTPD_BODY_ERROR) {
        evbuffer_free(body);
        h->data = NULL;
        httpd_error(h, 400, "bad body");
        return;
    }
    if (r != HTTPD_BODY_DONE)
        return;
    bool keep = httpd_can_persist(h);
    httpd_response_head(h, 200, "text/plain", (int64_t)evbuffer_get_length(body), keep, NULL);
    evbuffer_add_buffer(httpd_tx(), body);
    evbuffer_free(body);
    h->data = NULL;
    httpd_done(h, keep);
}

static void on_close(struct httpd_conn *h, enum conn_close_reason why)
{
    (void)why;
    if (h->data)
        evbuffer_free(h->data);
}

/* what httpd reports of the answer it made (status, body bytes) */
static _Atomic int last_status;
static _Atomic long long last_body;

static void on_request_end(struct httpd_conn *h)
{
    last_body = h->resp_body;
    last_status = h->resp_status;
}

static const struct httpd_ops ops = {
    .on_request = on_request, .on_input = on_input, .on_request_end = on_request_end, .on_close = on_close
};

static void on_accept(struct core_loop *loop, int fd, const struct sockaddr *sa, socklen_t salen, void *arg)
{
    (void)arg;
    struct httpd_conn *h = httpd_accept(loop, fd, sa, salen, NULL, &ops, NULL);
    if (h) {
        h->idle_ms = 400; /* the head deadline under test */
        h->server = "test";
    }
}

/* ---- client side ---- */

static int dial(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = { 3, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send req on a new connection; read until close or timeout into out. */
static size_t exchange(const char *req, size_t len, char *out, size_t cap)
{
    int fd = dial();
    if (fd < 0)
        return 0;
    if (write(fd, req, len) != (ssize_t)len) {
        close(fd);
        return 0;
    }
    size_t got = 0;
    ssize_t n;
    while (got < cap - 1 && (n = read(fd, out + got, cap - 1 - got)) > 0)
        got += (size_t)n;
    out[got] = 0;
    close(fd);
    return got;
}

#define EX(s, buf) exchange((s), strlen(s), (buf), sizeof(buf))

static int status_of(const char *resp)
{
    int st = 0;
    return sscanf(resp, "HTTP/1.%*d %d", &st) == 1 ? st : 0;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++)
        n++;
    return n;
}

static void write_file(const char *rel, const char *data)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "w");
    fputs(data, f);
    fclose(f);
}

static bool read_file(const char *rel, char *out, size_t cap)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "r");
    if (!f)
        return false;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    fclose(f);
    return true;
}

static int failures_in_client;
#define CCHECK(c)                                                                                                      \
    do {                                                                                                               \
        if (!(c)) {                                                                                                    \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #c);                                      \
            failures_in_client++;                                                                                      \
        }                                                                                                              \
    } while (0)

static void *client_main(void *arg)
{
    (void)arg;
    static char r[65536];
    /* GET, HEAD, Range, 416, IMS */
    EX("GET /a.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "\r\n\r\nhello world") && strstr(r, "Content-Length: 11\r\n"));
    CCHECK(strstr(r, "Server: test\r\n") && strstr(r, "Last-Modified: ") && strstr(r, "Content-Type: text/plain"));
    CCHECK(last_status == 200 && last_body == 11);
    EX("HEAD /a.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "Content-Length: 11\r\n") && !strstr(r, "hello"));
    CCHECK(last_status == 200 && last_body == 0); /* a HEAD sends no body */
    EX("GET /a.txt HTTP/1.0\r\nRange: bytes=6-\r\n\r\n", r);
    CCHECK(status_of(r) == 206 && strstr(r, "Content-Range: bytes 6-10/11\r\n") && strstr(r, "\r\n\r\nworld"));
    EX("GET /a.txt HTTP/1.0\r\nRange: bytes=50-\r\n\r\n", r);
    CCHECK(status_of(r) == 416 && strstr(r, "Content-Range: bytes */11\r\n"));
    CCHECK(last_status == 416);
    EX("GET /a.txt HTTP/1.0\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n", r);
    CCHECK(status_of(r) == 304 && !strstr(r, "hello"));
    EX("GET /a.txt HTTP/1.0\r\nIf-Modified-Since: Thu, 01 Jan 1998 00:00:00 GMT\r\n\r\n", r);
    CCHECK(status_of(r) == 200);
    /* a prefix filter: the first HTTPD_PREFIX_MAX bytes changed, Range cut from the result */
    EX("GET /a.txt?pre HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "\r\n\r\nHELLO WORLD"));
    EX("GET /a.txt?pre HTTP/1.0\r\nRange: bytes=6-\r\n\r\n", r);
    CCHECK(status_of(r) == 206 && strstr(r, "\r\n\r\nWORLD"));
    EX("HEAD /a.txt?bad?pre HTTP/1.0\r\n\r\n", r); /* HEAD does not run it */
    CCHECK(status_of(r) == 200);
    EX("GET /a.txt?bad?pre HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 404);
    /* across the prefix's end: 8 filtered bytes, then the file's (read, or by sendfile) */
    for (int pass = 0; pass < 2; pass++) {
        EX(pass ? "GET /big.bin?pre HTTP/1.0\r\nRange: bytes=2040-\r\n\r\n"
                : "GET /big.bin?pre HTTP/1.0\r\nRange: bytes=2040-2060\r\n\r\n",
           r);
        size_t want = pass ? 40000 - 2040 : 21;
        char *b = strstr(r, "\r\n\r\n");
        CCHECK(status_of(r) == 206 && b && strlen(b + 4) == want);
        bool ok = b != NULL;
        for (size_t i = 0; b && i < want && i < strlen(b + 4); i++)
            if (b[4 + i] != (i < 8 ? 'B' : 'b'))
                ok = false;
        CCHECK(ok);
    }
    /* the poststat hook takes a missing file and a 200 to come, not a 304 */
    files.poststat = on_poststat;
    take_poststat = true;
    EX("GET /nope.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 299 && strstr(r, "\r\n\r\nmissing 0"));
    EX("HEAD /a.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 299 && strstr(r, "send 1600000000"));
    EX("GET /a.txt HTTP/1.0\r\nIf-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT\r\n\r\n", r);
    CCHECK(status_of(r) == 304);
    EX("GET /a.txt HTTP/1.0\r\nRange: bytes=1-2\r\n\r\n", r);
    CCHECK(status_of(r) == 206);
    take_poststat = false;
    EX("GET /a.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200);
    files.poststat = NULL;
    /* a large file goes out whole (sendfile path) */
    EX("GET /big.bin HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "Content-Length: 40000\r\n"));
    char *body = strstr(r, "\r\n\r\n");
    CCHECK(body && strlen(body + 4) == 40000);
    /* directories */
    EX("GET /sub HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 301 && strstr(r, "Location: /sub/\r\n"));
    EX("GET /sub/ HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 403 && strstr(r, "Directory listing disabled"));
    files.dirindexing = true;
    EX("GET /sub/ HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "<a href=\"in.txt\">"));
    EX("GET / HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "index page"));
    /* confinement */
    EX("GET /../etc/passwd HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 400);
    EX("GET /escape/passwd HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 403 || status_of(r) == 404);
    EX("GET /nope HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 404);
    {
        /* an error page httpd wrote: its status and the page's size */
        const char *cl = strstr(r, "Content-Length: ");
        CCHECK(last_status == 404 && cl && last_body == atoll(cl + 16));
    }
    /* pipelining and keep-alive: three answers in order on one connection */
    EX("GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nHEAD /a.txt HTTP/1.1\r\nHost: x\r\n\r\n"
       "GET /sub/in.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
       r);
    CCHECK(count(r, "HTTP/1.1 200 OK") == 3);
    char *third = strstr(r, "inner");
    CCHECK(third && strstr(r, "hello world") && strstr(r, "hello world") < third);
    /* PUT with 100-continue, creating directories */
    files.enable_put = true;
    EX("PUT /new/dir/p.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: "
       "close\r\n\r\nabcde",
       r);
    CCHECK(strstr(r, "HTTP/1.1 100 Continue\r\n\r\n") && strstr(r, "HTTP/1.1 201 "));
    char fb[256];
    CCHECK(read_file("new/dir/p.txt", fb, sizeof fb) && !strcmp(fb, "abcde"));
    /* Content-MD5: md5("abcde") = q1a02StAcTrMWviZhdS3hg== */
    EX("PUT /m.txt HTTP/1.0\r\nContent-Length: 5\r\nContent-MD5: q1a02StAcTrMWviZhdS3hg==\r\n\r\nabcde", r);
    CCHECK(status_of(r) == 201);
    EX("PUT /m2.txt HTTP/1.0\r\nContent-Length: 5\r\nContent-MD5: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\nabcde", r);
    CCHECK(status_of(r) == 400 && strstr(r, "Content-MD5 mismatch"));
    CCHECK(!read_file("m2.txt", fb, sizeof fb));
    /* chunked PUT, replacing: 204 */
    EX("PUT /m.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
       "2\r\nxy\r\n3;ext=1\r\nzzz\r\n0\r\nTrailer: t\r\n\r\n",
       r);
    CCHECK(status_of(r) == 204);
    CCHECK(read_file("m.txt", fb, sizeof fb) && !strcmp(fb, "xyzzz"));
    /* as mogstored wants it: synced to disk, answered 200 */
    files.put_fsync = true;
    files.put_ok_status = 200;
    EX("PUT /synced.txt HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", r);
    CCHECK(status_of(r) == 200 && read_file("synced.txt", fb, sizeof fb) && !strcmp(fb, "abc"));
    files.put_fsync = false;
    /* as Perlbal: 200 with its short page, 201 once a Content-MD5 was verified */
    files.put_md5_ok_status = 201;
    files.put_status_body = true;
    EX("PUT /pb.txt HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc", r);
    CCHECK(status_of(r) == 200 && strstr(r, "Content-Type: text/html\r\n") && strstr(r, "Content-Length: 18\r\n") &&
           strstr(r, "\r\n\r\n<h1>200 - OK</h1>\n"));
    EX("PUT /pb2.txt HTTP/1.0\r\nContent-Length: 5\r\nContent-MD5: q1a02StAcTrMWviZhdS3hg==\r\n\r\nabcde", r);
    CCHECK(status_of(r) == 201 && strstr(r, "<h1>201 - Created</h1>\n"));
    /* Perlbal's wording of that 201: no reason phrase */
    files.put_md5_ok_reason = "";
    EX("PUT /pb3.txt HTTP/1.0\r\nContent-Length: 5\r\nContent-MD5: q1a02StAcTrMWviZhdS3hg==\r\n\r\nabcde", r);
    CCHECK(!strncmp(r, "HTTP/1.0 201 \r\n", 15) && strstr(r, "Content-Length: 13\r\n") &&
           strstr(r, "\r\n\r\n<h1>201</h1>\n"));
    CCHECK(last_status == 201 && last_body == 13);
    files.put_md5_ok_reason = NULL;
    /* in place (Perlbal): the target exists, growing, while the body arrives */
    files.put_in_place = true;
    {
        int pfd = dial();
        const char *part = "PUT /inplace.txt HTTP/1.0\r\nContent-Length: 10\r\n\r\nhello";
        CCHECK(write(pfd, part, strlen(part)) == (ssize_t)strlen(part));
        bool seen = false;
        for (int i = 0; i < 300 && !seen; i++) {
            seen = read_file("inplace.txt", fb, sizeof fb) && !strcmp(fb, "hello");
            if (!seen)
                usleep(10 * 1000);
        }
        CCHECK(seen);
        CCHECK(write(pfd, "world", 5) == 5);
        ssize_t n = read(pfd, r, sizeof r - 1);
        r[n > 0 ? n : 0] = 0;
        close(pfd);
        CCHECK(status_of(r) == 200);
        CCHECK(read_file("inplace.txt", fb, sizeof fb) && !strcmp(fb, "helloworld"));
        /* replaced in place: truncated at the start; a client that leaves
         * keeps what arrived, as Perlbal */
        pfd = dial();
        part = "PUT /inplace.txt HTTP/1.0\r\nContent-Length: 10\r\n\r\nab";
        CCHECK(write(pfd, part, strlen(part)) == (ssize_t)strlen(part));
        seen = false;
        for (int i = 0; i < 300 && !seen; i++) {
            seen = read_file("inplace.txt", fb, sizeof fb) && !strcmp(fb, "ab");
            if (!seen)
                usleep(10 * 1000);
        }
        CCHECK(seen);
        close(pfd);
        /* with Content-MD5 it is still a temporary name, renamed when verified */
        pfd = dial();
        part = "PUT /inmd5.txt HTTP/1.0\r\nContent-Length: 5\r\nContent-MD5: q1a02StAcTrMWviZhdS3hg==\r\n\r\nab";
        CCHECK(write(pfd, part, strlen(part)) == (ssize_t)strlen(part));
        usleep(150 * 1000);
        CCHECK(!read_file("inmd5.txt", fb, sizeof fb));
        CCHECK(write(pfd, "cde", 3) == 3);
        n = read(pfd, r, sizeof r - 1);
        r[n > 0 ? n : 0] = 0;
        close(pfd);
        CCHECK(status_of(r) == 201 && read_file("inmd5.txt", fb, sizeof fb) && !strcmp(fb, "abcde"));
    }
    /* refused in place (over max_put_size while chunked): the file goes */
    files.max_put_size = 4;
    EX("PUT /inplace.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n",
       r);
    CCHECK(status_of(r) == 413 && !read_file("inplace.txt", fb, sizeof fb));
    files.max_put_size = 0;
    files.put_in_place = false;
    files.put_md5_ok_status = 0;
    files.put_status_body = false;
    files.put_ok_status = 0;
    files.max_put_size = 4;
    EX("PUT /big.txt HTTP/1.0\r\nContent-Length: 5\r\n\r\nabcde", r);
    CCHECK(status_of(r) == 413 && !read_file("big.txt", fb, sizeof fb));
    /* a large PUT: many chunks, each written by a put job on the disk pool */
    files.max_put_size = 0;
    {
        enum { BIG = 3 << 20 };
        static char req[BIG + 128];
        int hl = snprintf(req, sizeof req, "PUT /large/up.bin HTTP/1.0\r\nContent-Length: %d\r\n\r\n", BIG);
        for (int i = 0; i < BIG; i++)
            req[hl + i] = (char)('a' + i % 26);
        exchange(req, (size_t)hl + BIG, r, sizeof r);
        CCHECK(status_of(r) == 201);
        char pth[512];
        snprintf(pth, sizeof pth, "%s/large/up.bin", root);
        struct stat st;
        CCHECK(stat(pth, &st) == 0 && st.st_size == BIG);
        FILE *f = fopen(pth, "r");
        static char back[BIG];
        CCHECK(f && fread(back, 1, BIG, f) == BIG && !memcmp(back, req + hl, BIG));
        if (f)
            fclose(f);
        /* a PUT abandoned mid-body: its temporary file goes, nothing is stored */
        int afd = dial();
        hl = snprintf(req, sizeof req, "PUT /large/gone.bin HTTP/1.0\r\nContent-Length: %d\r\n\r\n", BIG);
        CCHECK(write(afd, req, (size_t)hl + 600000) == hl + 600000);
        usleep(100 * 1000);
        close(afd);
        bool tmp_left = true;
        for (int i = 0; i < 300 && tmp_left; i++) {
            usleep(10 * 1000);
            snprintf(pth, sizeof pth, "%s/large", root);
            DIR *d = opendir(pth);
            tmp_left = false;
            for (struct dirent *e; d && (e = readdir(d));)
                if (strstr(e->d_name, "gone.bin"))
                    tmp_left = true;
            if (d)
                closedir(d);
        }
        CCHECK(!tmp_left);
    }
    /* DELETE */
    EX("DELETE /m.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 403); /* disabled */
    files.enable_delete = true;
    EX("DELETE /m.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 204 && !read_file("m.txt", fb, sizeof fb));
    EX("DELETE /m.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 404);
    EX("BREW /pot HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 405);
    /* a body read through httpd_body_read: chunked decoded, then the next request */
    EX("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
       "GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
       r);
    CCHECK(strstr(r, "Content-Length: 9\r\n") && strstr(r, "\r\n\r\nwikipedia") && strstr(r, "hello world"));
    /* concatenated GET: off by default, then as Perlbal's enable_concatenate_get */
    EX("GET /sub/??in.txt,in.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 403);
    files.concat_get = true;
    EX("GET /sub/??in.txt,../a.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 403);
    EX("GET /sub??in.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 500);
    EX("GET /sub/??in.txt,nope.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 404);
    EX("GET /nodir/??in.txt HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 404);
    EX("GET /sub/??in.txt,in.txt?v=3 HTTP/1.0\r\n\r\n", r);
    CCHECK(status_of(r) == 200 && strstr(r, "Content-Length: 10\r\n") && strstr(r, "\r\n\r\ninnerinner"));
    EX("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", r);
    CCHECK(status_of(r) == 400);
    /* a head bomb: 431; a head that never ends: 408 after the deadline */
    static char bomb[40000];
    int bl = snprintf(bomb, sizeof bomb, "GET / HTTP/1.1\r\nHost: x\r\n");
    while (bl < 30000)
        bl += snprintf(bomb + bl, sizeof bomb - (size_t)bl, "X-A: %0100d\r\n", 0);
    exchange(bomb, (size_t)bl, r, sizeof r);
    CCHECK(status_of(r) == 431);
    int fd = dial();
    CCHECK(write(fd, "GET / HTTP/1.1\r\n", 16) == 16);
    usleep(600 * 1000);
    CCHECK(write(fd, "X: y\r\n", 6) == 6);
    ssize_t n = read(fd, r, sizeof r - 1);
    r[n > 0 ? n : 0] = 0;
    CCHECK(status_of(r) == 408);
    close(fd);
    loop_request_stop();
    return NULL;
}

static void test_httpd_end_to_end(void)
{
    snprintf(root, sizeof root, "/tmp/test_httpd.%d", (int)getpid());
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s/sub && mkdir -p %s.out", root, root, root);
    CHECK_EQ_INT(system(cmd), 0);
    write_file("a.txt", "hello world");
    {
        char ap[512];
        snprintf(ap, sizeof ap, "%s/a.txt", root);
        struct timespec ts[2] = { { 1600000000, 0 }, { 1600000000, 0 } };
        utimensat(AT_FDCWD, ap, ts, 0);
    }
    write_file("sub/in.txt", "inner");
    write_file("index.html", "index page");
    char big[40001];
    memset(big, 'b', 40000);
    big[40000] = 0;
    write_file("big.bin", big);
    char link[600], target[600];
    snprintf(target, sizeof target, "%s.out", root);
    snprintf(link, sizeof link, "%s/escape", root);
    CHECK_EQ_INT(symlink(target, link), 0);
    files.docroot = root;
    /* GET/HEAD disk work on worker threads (common/work), as deployed */
    files.work = work_pool_new("test-disk", 2, 64);
    CHECK(files.work != NULL);
    CHECK_EQ_INT(loop_init(1), 0);
    char err[128];
    struct core_listener *l = listen_open("127.0.0.1:0", 0, NULL, on_accept, NULL, NULL, err, sizeof err);
    CHECK(l != NULL);
    port = listen_port(l);
    pthread_t t;
    pthread_create(&t, NULL, client_main, NULL);
    CHECK_EQ_INT(loop_run(), 0);
    pthread_join(t, NULL);
    work_pool_free(files.work);
    loop_free();
    CHECK_EQ_INT(failures_in_client, 0);
    snprintf(cmd, sizeof cmd, "rm -rf %s %s.out", root, root);
    CHECK_EQ_INT(system(cmd), 0);
}

static void test_mime(void)
{
    CHECK_STR(httpd_mime_type("/a/b.HTML"), "text/html");
    CHECK_STR(httpd_mime_type("/a.b/c"), "text/plain");
    CHECK_STR(httpd_mime_type("x.png"), "image/png");
    /* read from /etc/mime.types at start: a type only that file knows */
    CHECK_STR(httpd_mime_type("/docs/report.odt"), "application/vnd.oasis.opendocument.text");
    CHECK_STR(httpd_mime_type("/src/main.c"), "text/x-csrc");
    CHECK_STR(httpd_mime_type("/a/b."), "text/plain");
    CHECK_STR(httpd_mime_type("/a/b.no-such-extension-anywhere"), "text/plain");
    /* another file replaces the table; a missing one leaves it as it is */
    char path[64];
    snprintf(path, sizeof path, "/tmp/test_httpd_mime.%d", (int)getpid());
    FILE *fp = fopen(path, "w");
    CHECK(fp != NULL);
    if (!fp)
        return;
    fputs("# comment line\nx-test/first\tzzq ZZR # trailing comment\nx-test/second zzq\nnot-a-type qqq\n"
          "text/html html\n",
          fp);
    fclose(fp);
    CHECK_EQ_INT(httpd_mime_load(path), 3);
    CHECK_STR(httpd_mime_type("a.zzq"), "x-test/first"); /* the first one named wins */
    CHECK_STR(httpd_mime_type("a.zzr"), "x-test/first");
    CHECK_STR(httpd_mime_type("a.qqq"), "text/plain");
    CHECK_STR(httpd_mime_type("a.png"), "image/png");               /* the fixed (Perlbal) table answers first */
    CHECK_STR(httpd_mime_type("a.js"), "application/x-javascript"); /* as Perlbal, not mime.types */
    CHECK_EQ_INT(httpd_mime_load("/nonexistent/mime.types"), -1);
    CHECK_STR(httpd_mime_type("a.zzq"), "x-test/first");
    unlink(path);
    CHECK(httpd_mime_load("/etc/mime.types") > 1000);
    CHECK_STR(httpd_mime_type("x.png"), "image/png");
}

int main(void)
{
    RUN(test_mime);
    RUN(test_httpd_end_to_end);
    return unit_done();
}
