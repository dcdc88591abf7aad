/* libFuzzer target: the tracker's line protocol. The input is split into
 * lines as the session does; each is parsed, every parsed value is encoded
 * as a reply would carry it and decoded back (must round-trip), and the
 * reply builder's OK/ERR forms are checked to stay one CRLF-ended line. */
#include <stdio.h>
#include "mogilefs/mogilefs.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static void check_line(const char *line, size_t len)
{
    struct mog_req req;
    enum mog_parse_status st = mog_parse_request(line, len, &req);
    if (st != MOG_PARSE_OK) {
        mog_req_free(&req);
        return;
    }
    if (!req.cmd[0] || req.nargs > MOG_MAX_ARGS)
        abort();
    struct evbuffer *out = evbuffer_new();
    struct mog_reply r;
    mog_reply_init(&r, out, mog_arg(&req, "callid"));
    for (int i = 0; i < req.nargs; i++) {
        if (strlen(req.key[i]) > len)
            abort();
        const char *v = req.val[i] ? req.val[i] : "";
        size_t vl = req.val[i] ? req.val_len[i] : 0;
        char *enc = malloc(3 * vl + 1), *dec = malloc(3 * vl + 1);
        size_t el = mog_url_encode(v, vl, enc);
        if (memchr(enc, ' ', el) || memchr(enc, '&', el) || memchr(enc, '\r', el) || memchr(enc, '\n', el))
            abort();
        size_t dl = mog_url_decode(enc, el, dec);
        if (dl != vl || memcmp(dec, v, vl))
            abort();
        free(enc);
        free(dec);
        mog_reply_kvn(&r, req.key[i], v, vl);
    }
    if (req.nargs & 1)
        mog_err(&r, "unknown_key", NULL);
    else
        mog_ok(&r);
    size_t n = evbuffer_get_length(out);
    const char *p = (const char *)evbuffer_pullup(out, (ev_ssize_t)n);
    if (n < 4 || p[n - 2] != '\r' || p[n - 1] != '\n' || memchr(p, '\n', n - 1))
        abort();
    if (memcmp(p, "OK ", 3) && memcmp(p, "ERR ", 4))
        abort();
    evbuffer_free(out);
    mog_req_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        check_line(p, len);
        p += len + 1;
    }
    char path[128];
    int64_t devid = mog_path_devid((const char *)data, size);
    if (devid >= 0 && size < 64) {
        mog_fid_path(path, sizeof path, devid, (int64_t)size);
        if (mog_path_devid(path, strlen(path)) != devid)
            abort();
    }
    /* A host's altmask and a client address: "mask ip". A mask that
     * parses matches its own network address. */
    if (size < 128) {
        char buf[128];
        memcpy(buf, data, size);
        buf[size] = '\0';
        char *sp = strchr(buf, ' ');
        if (sp) {
            *sp = '\0';
            (void)mog_netmask_match(buf, sp + 1);
        }
        uint32_t net, mask;
        if (mog_netmask_parse(buf, &net, &mask) == 0) {
            char ip[32];
            snprintf(ip, sizeof ip, "%u.%u.%u.%u", net >> 24, (net >> 16) & 255, (net >> 8) & 255, net & 255);
            if ((net & ~mask) != 0 || !mog_netmask_match(buf, ip))
                abort();
        }
    }
    /* A HostsPerNetwork policy string: accepted ones name 1..16 zones,
     * each non-empty and NUL-ended, each count >= 1. */
    if (size < 1024) {
        char pol[1024];
        memcpy(pol, data, size);
        pol[size] = '\0';
        struct mog_hpn h;
        if (mog_hpn_parse(pol, &h) == 0) {
            if (h.n < 1 || h.n > MOG_HPN_MAX)
                abort();
            for (int i = 0; i < h.n; i++)
                if (!h.zone[i][0] || memchr(h.zone[i], '\0', sizeof h.zone[i]) == NULL || h.need[i] < 1)
                    abort();
        }
    }
    return 0;
}
