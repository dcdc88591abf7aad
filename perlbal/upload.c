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
 * buffer_upload_threshold_time seconds, is spooled to an unlinked file in
 * buffer_uploads_path and sent to a backend only once complete; otherwise
 * the request goes on at once and the body streams. A body that arrives
 * whole before the decision is sent from memory. The file writes run on the
 * loop (local disk, like web_server PUT). */

static void upload_fail(struct pb_client *cl, int status, const char *msg)
{
    if (cl->upload_fd >= 0) close(cl->upload_fd);
    cl->upload_fd = -1;
    cl->h->keep_alive = false;
    cl->state = CL_RESPONDING;
    pb_client_error(cl, status, msg);
}

static int upload_open(struct pb_client *cl)
{
    const char *dir = cl->svc->buffer_uploads_path && *cl->svc->buffer_uploads_path ? cl->svc->buffer_uploads_path
                                                                                      : "/tmp";
    char path[4096];
    snprintf(path, sizeof path, "%s/perlbal-upload-XXXXXX", dir);
    int fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0) {
        log_warn("perlbal: buffer_uploads_path %s: %s", dir, strerror(errno));
        return -1;
    }
    unlink(path);
    cl->upload_fd = fd;
    cl->upload_size = 0;
    return 0;
}

void pb_proxy_buffer_start(struct pb_client *cl)
{
    cl->state = CL_BUFFERING;
    cl->upload_started_ms = pb_now_ms();
    cl->upload_size = cl->h->body_remaining;
    /* a slow sender is now our problem, not a backend's: keep a deadline */
    int secs = cl->svc->idle_timeout;
    conn_set_timeouts(cl->c, secs > 0 ? (uint32_t)secs * 1000 : 0, BE_WRITE_TIMEOUT_MS);
    if (cl->h->expect_continue && !cl->h->sent_continue) {
        evbuffer_add(httpd_tx(), "HTTP/1.1 100 Continue\r\n\r\n", 25);
        pb_client_flush(cl);
        cl->h->sent_continue = true;
    }
    pb_proxy_buffer_data(cl);
}

void pb_proxy_buffer_data(struct pb_client *cl)
{
    struct pb_service *svc = cl->svc;
    struct evbuffer *in = conn_in(cl->c);
    if (cl->upload_fd < 0) {
        uint64_t have = evbuffer_get_length(in);
        if (have > cl->h->body_remaining) have = cl->h->body_remaining;
        bool complete = have == cl->h->body_remaining;
        uint64_t total = cl->upload_size;
        uint64_t hold = svc->buffer_backend_connect ? svc->buffer_backend_connect : 100 * 1024;
        bool disk = svc->buffer_upload_threshold_size && total > svc->buffer_upload_threshold_size;
        if (!disk && !complete) {
            if (have < hold) return; /* keep holding */
            int64_t el = pb_now_ms() - cl->upload_started_ms;
            double rate = el > 0 ? (double)have * 1000.0 / (double)el : 1e18;
            if (svc->buffer_upload_threshold_rate && rate < svc->buffer_upload_threshold_rate) disk = true;
            if (svc->buffer_upload_threshold_time && (double)total / rate > svc->buffer_upload_threshold_time)
                disk = true;
        }
        if (!disk) {
            /* straight on: the body streams to the backend as usual */
            pb_client_request_timeouts(cl, 0);
            cl->upload_size = 0;
            pb_proxy_request(cl);
            return;
        }
        if (upload_open(cl) < 0) {
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
        cl->upload_size = total;
    }
    while (cl->h->body_remaining > 0 && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        size_t n = v.iov_len < cl->h->body_remaining ? v.iov_len : (size_t)cl->h->body_remaining;
        ssize_t w = write(cl->upload_fd, v.iov_base, n);
        if (w <= 0) {
            log_warn("perlbal: writing a buffered upload: %s", w < 0 ? strerror(errno) : "short write");
            upload_fail(cl, 503, "Cannot buffer the upload");
            return;
        }
        evbuffer_drain(in, (size_t)w);
        cl->h->body_remaining -= (uint64_t)w;
    }
    if (cl->h->body_remaining > 0) return;
    cl->h->body_done = true;
    pb_client_request_timeouts(cl, 0);
    pb_proxy_request(cl);
}

