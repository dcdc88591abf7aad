/* proxy: the client side of the reverse_proxy role — asking the pool for a
 * backend, holding a request on a timer (Throttle) or for a 500 retry
 * (enable_error_retries), moving the request body to the backend (a
 * chunked body re-encoded canonically), and letting go when the client
 * leaves. The request head for the backend is built in session.c. */
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

void pb_proxy_request(struct pb_client *cl)
{
    struct pb_service *svc = cl->svc;
    if (!svc->pool && !(svc->server_process && *svc->server_process)) {
        pb_client_error(cl, 503, "No pool configured");
        return;
    }
    struct pb_svc_loop *l = svl_of(svc, cl->loop_index);
    l->pool.connect_ahead = svc->connect_ahead;
    l->pool.stopping = loop_stopping();
    pb_client_enter(cl, CL_WAIT_BACKEND);
    pool_request(&l->pool, &cl->w, cl->prio, cl->retries > 0);
}

/* Move request body bytes from the client to its backend. A chunked body
 * is decoded by httpd and re-encoded here canonically ("<hex>\r\n" sizes,
 * no extensions, no trailers), so a backend that frames chunked coding
 * differently from our parser cannot be desynchronised (smuggling). */
void pb_proxy_body_ready(struct pb_client *cl)
{
    struct pb_backend *be = cl->backend;
    if (!be || cl->h->body_done)
        return;
    struct evbuffer *out = httpd_tx2();
    enum httpd_body_result r;
    if (cl->chunked_out) {
        struct evbuffer *payload = evbuffer_new();
        if (!payload)
            return;
        r = httpd_body_read(cl->h, payload, 0);
        size_t n = evbuffer_get_length(payload);
        if (n > 0 && r != HTTPD_BODY_ERROR) {
            char hdr[24];
            size_t hl = http_chunk_header(hdr, n);
            evbuffer_add(out, hdr, hl);
            evbuffer_add_buffer(out, payload);
            evbuffer_add(out, "\r\n", 2);
        }
        evbuffer_free(payload);
        if (r == HTTPD_BODY_DONE)
            evbuffer_add(out, "0\r\n\r\n", 5);
    } else {
        r = httpd_body_read(cl->h, out, 0);
        if (cl->upload_session[0])
            pb_upload_status_progress(cl, cl->upload_total - cl->h->body_remaining);
    }
    if (r == HTTPD_BODY_ERROR) {
        evbuffer_drain(out, evbuffer_get_length(out));
        /* a broken body: the backend conn cannot be reused */
        be->reusable = false;
        cl->h->keep_alive = false;
        cl->backend = NULL;
        be->client = NULL;
        conn_close(be->c);
        pb_client_error(cl, 400, "Bad chunked body");
        return;
    }
    if (cl->h->body_done)
        pb_client_request_timeouts(cl, 0);
    httpc_send(be->hc, out);
    uint64_t limit = cl->svc->buffer_size ? cl->svc->buffer_size : 256 * 1024;
    if (evbuffer_get_length(conn_out(be->c)) > limit)
        conn_pause_read(cl->c);
}

/* enable_error_retries: the delay (seconds) before retry number n, from
 * error_retry_schedule ("0,.25,.50,1"); -1 when the schedule is used up. */
static double retry_delay(const char *schedule, int n)
{
    const char *p = schedule ? schedule : "";
    for (int i = 0; *p; i++) {
        char *end;
        double d = strtod(p, &end);
        if (end == p)
            return -1;
        if (i == n)
            return d < 0 ? 0 : d;
        p = end;
        while (*p == ',' || *p == ' ')
            p++;
    }
    return -1;
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct pb_client *cl = arg;
    if (cl->held) {
        cl->held = false;
        conn_resume_read(cl->c);
        pb_proxy_start(cl);
        return;
    }
    pb_proxy_request(cl);
}

void pb_proxy_start(struct pb_client *cl)
{
    if (cl->svc->buffer_uploads &&
        ((cl->h->body == HTTP_BODY_LENGTH && cl->h->body_remaining > 0) || cl->h->body == HTTP_BODY_CHUNKED)) {
        pb_proxy_buffer_start(cl);
        return;
    }
    pb_proxy_request(cl);
}

void pb_proxy_hold(struct pb_client *cl, int64_t ms)
{
    if (!cl->retry_ev && !(cl->retry_ev = evtimer_new(loop_get(cl->loop_index)->base, retry_cb, cl))) {
        pb_proxy_start(cl);
        return;
    }
    cl->held = true;
    pb_client_enter(cl, CL_WAIT_BACKEND);
    conn_pause_read(cl->c);
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000) };
    evtimer_add(cl->retry_ev, &tv);
}

void pb_proxy_async_done(struct pb_client *cl, int64_t hold_ms)
{
    cl->async_job = NULL;
    cl->async_cancel = NULL;
    conn_resume_read(cl->c);
    if (hold_ms < 0)
        return; /* the plugin answers */
    if (hold_ms > 0) {
        pb_proxy_hold(cl, hold_ms);
        return;
    }
    pb_proxy_start(cl);
}

bool pb_proxy_retry_500(struct pb_client *cl, int status)
{
    struct pb_service *svc = cl->svc;
    if (!svc->enable_error_retries || status != 500 || cl->h->body != HTTP_BODY_NONE ||
        (cl->h->method != HTTP_M_GET && cl->h->method != HTTP_M_HEAD))
        return false;
    double d = retry_delay(svc->error_retry_schedule, cl->error_retries);
    if (d < 0)
        return false;
    if (!cl->retry_ev && !(cl->retry_ev = evtimer_new(loop_get(cl->loop_index)->base, retry_cb, cl)))
        return false;
    cl->error_retries++;
    struct pb_backend *be = cl->backend;
    if (be)
        be->client = NULL;
    cl->backend = NULL;
    pb_client_enter(cl, CL_WAIT_BACKEND);
    struct timeval tv = { (time_t)d, (suseconds_t)((d - (double)(time_t)d) * 1e6) };
    evtimer_add(cl->retry_ev, &tv);
    return true;
}

void pb_proxy_client_gone(struct pb_client *cl)
{
    pool_cancel(&svl_of(cl->svc, cl->loop_index)->pool, &cl->w);
    if (cl->async_job) {
        cl->async_cancel(cl->async_job);
        cl->async_job = NULL;
        cl->async_cancel = NULL;
    }
    if (cl->retry_ev) {
        event_free(cl->retry_ev);
        cl->retry_ev = NULL;
    }
    struct pb_backend *be = cl->backend;
    if (be) {
        cl->backend = NULL;
        be->client = NULL;
        conn_close(be->c);
    }
    if (cl->reproxy) {
        pb_reproxy_free(cl);
    }
}

void pb_proxy_loop_tick(struct pb_service *svc, int li)
{
    struct pb_svc_loop *l = svl_of(svc, li);
    l->pool.connect_ahead = svc->connect_ahead;
    l->pool.stopping = loop_stopping();
    if (l->pool.nwaiting > 0)
        pool_kick(&l->pool);
}
