/* plugins/flvstreaming.c: Perlbal's FlvStreaming plugin — seeking in
 * Flash video through a reverse proxy. A request for "<path>.flv?start=N"
 * goes to the backend as "Range: bytes=N-"; its answer reaches the client
 * as a whole new FLV file: "200 OK", Content-Type video/x-flv, no
 * Accept-Ranges/Content-Range, the 13-byte FLV header before the body and
 * Content-Length grown by it (as Perlbal 1.80's FlvStreaming.pm).
 *
 *   LOAD FlvStreaming
 *   CREATE SERVICE flv_proxy
 *     SET role = reverse_proxy
 *     SET plugins = FlvStreaming
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/http.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"
#include "perlbal/proto_upload.h"

/* 'FLV' . pack('CCNN', 1, 1, 9, 9): version 1, audio+video flags 1, header
 * size 9, then PreviousTagSize0 (Perlbal's bytes, kept as they are) */
static const unsigned char flv_header[13] = { 'F', 'L', 'V', 1, 1, 0, 0, 0, 9, 0, 0, 0, 9 };

static enum pb_hook_result flv_start(struct pb_service *svc, struct pb_client *cl, struct http_msg *req)
{
    (void)svc;
    cl->flv_start = pb_flv_start_of(req->target, req->target_len);
    return PB_HOOK_CONTINUE;
}

static const char *flv_replaces(struct pb_service *svc, struct pb_client *cl)
{
    (void)svc;
    return cl->flv_start ? "range" : NULL;
}

static void flv_assigned(struct pb_service *svc, struct pb_client *cl, struct evbuffer *hdrs)
{
    (void)svc;
    if (cl->flv_start)
        evbuffer_add_printf(hdrs, "Range: bytes=%llu-\r\n", (unsigned long long)cl->flv_start);
}

static void flv_modify(struct pb_service *svc, struct pb_client *cl, struct http_msg *resp, struct pb_resp_edit *e)
{
    (void)svc;
    (void)resp;
    if (!cl->flv_start)
        return;
    e->status = 200;
    e->reason = "OK";
    e->drop[0] = "accept-ranges";
    e->drop[1] = "content-range";
    e->ctype = "video/x-flv";
    e->length_delta = (int64_t)sizeof flv_header;
    e->prepend = flv_header;
    e->prepend_len = sizeof flv_header;
}

static int flv_attach(struct pb_service *svc, char *err, size_t errlen)
{
    if (svc->role != PB_ROLE_REVERSE_PROXY) {
        snprintf(err, errlen, "You can't load the flvstreaming plugin on a service not of role reverse_proxy.");
        return -1;
    }
    return 0;
}

const struct pb_plugin pb_plugin_flvstreaming = { .name = "flvstreaming",
                                                  .attach = flv_attach,
                                                  .start_request = flv_start,
                                                  .replaces_request_header = flv_replaces,
                                                  .backend_assigned = flv_assigned,
                                                  .modify_response = flv_modify };
