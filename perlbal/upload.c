/* upload: buffer_uploads — holding a request body in memory or an
 * unlinked file before a backend is asked for (Perlbal's buffered uploads). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/httpc.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

/* ---- buffered uploads ----
 *
 * As Perlbal: up to buffer_backend_connect bytes of the body are held in
 * memory with no backend asked for. Then the thresholds decide: a body
 * larger than buffer_upload_threshold_size, or arriving slower than
 * buffer_upload_threshold_rate bytes/s, or expected to take longer than
 * buffer_upload_threshold_time seconds, is spooled to a file in
 * buffer_uploads_path and sent to a backend only once complete; otherwise
 * the request goes on at once and the body streams. A body that arrives
 * whole before the decision is sent from memory. A chunked body is always
 * spooled (decoded) and goes to the backend with a Content-Length, as
 * Perlbal does. The file is named as Perlbal names it and removed when the
 * request ends or the client leaves. With PERLBAL_DEBUG_BUFFERED_UPLOADS set
 * in the environment the backend is told why (X-PERLBAL-BUFFERED-UPLOAD-
 * REASON: size|rate|time|chunked), as Perlbal's test suite expects.
 * Disk writes run on the loop (local disk, like web_server PUT). */

void pb_upload_purge(struct pb_client *cl)
{
    if (cl->upload_fd >= 0)
        close(cl->upload_fd);
    cl->upload_fd = -1;
    if (cl->upload_path) {
        unlink(cl->upload_path); /* disk call on the loop: see the comment above */
        free(cl->upload_path);
        cl->upload_path = NULL;
    }
    cl->upload_reason = NULL;
}

static void upload_fail(struct pb_client *cl, int status, const char *msg)
{
    pb_upload_purge(cl);
    cl->h->keep_alive = false;
    pb_client_enter(cl, CL_RESPONDING);
    pb_client_error(cl, status, msg);
}

static int upload_open(struct pb_client *cl)
{
    const char *dir =
        cl->svc->buffer_uploads_path && *cl->svc->buffer_uploads_path ? cl->svc->buffer_uploads_path : "/tmp";
    static __thread unsigned seed;
    if (!seed)
        seed = (unsigned)pb_now_ms() ^ (unsigned)(uintptr_t)&seed;
    char path[4096];
    int fd = -1;
    for (int tries = 0; fd < 0 && tries < 8; tries++) {
        snprintf(path, sizeof path, "%s/%s-%s-client-%d-%u", dir, cl->svc->name, cl->svc->listen ? cl->svc->listen : "",
                 cl->c->fd, (unsigned)rand_r(&seed));
        fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (fd < 0 && errno != EEXIST)
            break;
    }
    if (fd < 0) {
        log_warn("perlbal: buffer_uploads_path %s: %s", dir, strerror(errno));
        return -1;
    }
    cl->upload_path = strdup(path);
    cl->upload_fd = fd;
    cl->upload_size = 0;
    return 0;
}

void pb_proxy_buffer_start(struct pb_client *cl)
{
    pb_client_enter(cl, CL_BUFFERING);
    cl->upload_started_ms = pb_now_ms();
    cl->upload_size = cl->h->body_remaining;
    /* a slow sender is now our problem, not a backend's: keep a deadline */
    int secs = cl->svc->idle_timeout;
    conn_set_timeouts(cl->c, secs > 0 ? (uint32_t)secs * 1000 : 0, BE_WRITE_TIMEOUT_MS);
    httpd_send_continue(cl->h);
    if (cl->h->body == HTTP_BODY_CHUNKED) {
        cl->upload_reason = "chunked";
        if (upload_open(cl) < 0) {
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
    }
    pb_proxy_buffer_data(cl);
}

/* Append bytes to the spool file. */
static bool spool_write(struct pb_client *cl, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(cl->upload_fd, p, n);
        if (w <= 0) {
            log_warn("perlbal: writing a buffered upload: %s", w < 0 ? strerror(errno) : "short write");
            upload_fail(cl, 503, "Cannot buffer the upload");
            return false;
        }
        p = (const char *)p + w;
        n -= (size_t)w;
        cl->upload_size += (uint64_t)w;
    }
    return true;
}

static void spool_chunked(struct pb_client *cl)
{
    struct evbuffer *tmp = httpd_tx2();
    for (;;) {
        enum httpd_body_result r = httpd_body_read(cl->h, tmp, 256 * 1024);
        if (r == HTTPD_BODY_ERROR) {
            evbuffer_drain(tmp, evbuffer_get_length(tmp));
            upload_fail(cl, 400, "Bad chunked body");
            return;
        }
        while (evbuffer_get_length(tmp) > 0) {
            struct evbuffer_iovec v;
            if (evbuffer_peek(tmp, -1, NULL, &v, 1) < 1)
                break;
            if (!spool_write(cl, v.iov_base, v.iov_len)) {
                evbuffer_drain(tmp, evbuffer_get_length(tmp));
                return;
            }
            evbuffer_drain(tmp, v.iov_len);
        }
        uint64_t max = cl->svc->max_chunked_request_size;
        if (max && cl->upload_size > max) {
            upload_fail(cl, 413, "Request body too large");
            return;
        }
        if (r == HTTPD_BODY_DONE)
            break;
        if (httpd_body_available(cl->h) == 0)
            return;
    }
    pb_client_request_timeouts(cl, 0);
    pb_proxy_request(cl);
}

void pb_proxy_buffer_data(struct pb_client *cl)
{
    struct pb_service *svc = cl->svc;
    struct evbuffer *in = conn_in(cl->c);
    if (cl->h->body == HTTP_BODY_CHUNKED) {
        spool_chunked(cl);
        return;
    }
    if (cl->upload_fd < 0) {
        uint64_t have = evbuffer_get_length(in);
        if (have > cl->h->body_remaining)
            have = cl->h->body_remaining;
        bool complete = have == cl->h->body_remaining;
        uint64_t total = cl->upload_size;
        uint64_t hold = svc->buffer_backend_connect ? svc->buffer_backend_connect : 100 * 1024;
        const char *reason = NULL;
        if (svc->buffer_upload_threshold_size && total >= svc->buffer_upload_threshold_size)
            reason = "size";
        if (!reason && !complete) {
            if (have < hold)
                return; /* keep holding */
            int64_t el = pb_now_ms() - cl->upload_started_ms;
            double rate = el > 0 ? (double)have * 1000.0 / (double)el : 1e18;
            if (svc->buffer_upload_threshold_rate && rate < svc->buffer_upload_threshold_rate)
                reason = "rate";
            else if (svc->buffer_upload_threshold_time && (double)total / rate > svc->buffer_upload_threshold_time)
                reason = "time";
        }
        if (!reason) {
            /* straight on: the body streams to the backend as usual */
            pb_client_request_timeouts(cl, 0);
            cl->upload_size = 0;
            pb_proxy_request(cl);
            return;
        }
        cl->upload_reason = reason;
        if (upload_open(cl) < 0) {
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
    }
    while (cl->h->body_remaining > 0 && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            break;
        size_t n = v.iov_len < cl->h->body_remaining ? v.iov_len : (size_t)cl->h->body_remaining;
        if (!spool_write(cl, v.iov_base, n))
            return;
        evbuffer_drain(in, n);
        cl->h->body_remaining -= (uint64_t)n;
    }
    if (cl->upload_session[0])
        pb_upload_status_progress(cl, cl->upload_total - cl->h->body_remaining);
    if (cl->h->body_remaining > 0)
        return;
    cl->h->body_done = true;
    pb_client_request_timeouts(cl, 0);
    pb_proxy_request(cl);
}
