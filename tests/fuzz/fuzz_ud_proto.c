/* libFuzzer target: userdbd's MySQL protocol parsers. The first byte picks
 * the parser; the rest is its input. Checks that every pointer a parser
 * returns stays inside the input and that reply framing never reads past
 * what it was given. */
#include <stdlib.h>
#include <string.h>

#include "userdb/proto_mysql.h"

#define INSIDE(ptr, n, base, size)                                                                                     \
    ((ptr) == NULL || ((const uint8_t *)(ptr) >= (base) && (const uint8_t *)(ptr) + (n) <= (base) + (size)))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    /* A private copy, so reads past the end are caught by ASan exactly. */
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, p, n);
    switch (mode % 6) {
    case 0: {
        struct ud_hs_response r;
        if (ud_parse_hs_response(buf, n, &r) == 0 && !r.ssl_request) {
            if (!INSIDE(r.user, r.user_len, buf, n) || !INSIDE(r.auth, r.auth_len, buf, n) ||
                !INSIDE(r.db, r.db_len, buf, n) || !INSIDE(r.plugin, r.plugin_len, buf, n))
                abort();
            uint8_t salt[UD_SCRAMBLE_LEN] = { 0 };
            (void)ud_native_check(salt, "pw", r.auth, r.auth_len);
        }
        /* The same bytes as a COM_CHANGE_USER body, with or without the
         * capabilities that change its layout (mode's high bits). */
        uint32_t caps = ((mode & 0x40) ? UD_CLIENT_SECURE_CONNECTION : 0) | ((mode & 0x80) ? UD_CLIENT_PLUGIN_AUTH : 0);
        if (ud_parse_change_user(buf, n, caps, &r) == 0) {
            if (!INSIDE(r.user, r.user_len, buf, n) || !INSIDE(r.auth, r.auth_len, buf, n) ||
                !INSIDE(r.db, r.db_len, buf, n) || !INSIDE(r.plugin, r.plugin_len, buf, n))
                abort();
            uint8_t salt[UD_SCRAMBLE_LEN] = { 0 };
            (void)ud_native_check(salt, "pw", r.auth, r.auth_len);
        }
        break;
    }
    case 1: {
        struct ud_query q;
        char err[128];
        if (ud_query_classify((const char *)buf, n, &q, err, sizeof err) == 0) {
            if (q.arg && (q.arg_len >= sizeof q.argbuf || strlen(q.arg) > q.arg_len))
                abort();
            if (q.keyword_at < (const char *)buf || q.keyword_at > (const char *)buf + n)
                abort();
        }
        break;
    }
    case 2:
    case 3: {
        /* A stream of packets into the reply tracker of each kind. */
        static const enum ud_resp_kind kinds[] = { UD_RESP_SIMPLE, UD_RESP_QUERY,   UD_RESP_EXECUTE,
                                                   UD_RESP_FETCH,  UD_RESP_PREPARE, UD_RESP_FIELDS };
        for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
            struct ud_resp r;
            ud_resp_start(&r, kinds[k]);
            size_t off = 0;
            while (off + UD_HDR <= n) {
                uint32_t len;
                uint8_t seq;
                ud_pkt_header(buf + off, n - off, &len, &seq);
                size_t avail = n - off - UD_HDR;
                if (avail > len)
                    avail = len;
                /* payload_len may claim more than we hold (16 MiB rows). */
                int rc = ud_resp_feed(&r, buf + off + UD_HDR, avail, avail == len ? len : (uint32_t)avail);
                off += UD_HDR + avail;
                if (rc != 0)
                    break;
            }
        }
        break;
    }
    case 4: {
        struct ud_server_hs hs;
        (void)ud_parse_server_hs(buf, n, &hs);
        char plugin[64];
        uint8_t salt[UD_SCRAMBLE_LEN];
        (void)ud_parse_auth_switch(buf, n, plugin, sizeof plugin, salt);
        break;
    }
    case 5: {
        const char *name;
        size_t len;
        if (ud_parse_coldef_name(buf, n, &name, &len) == 0 && !INSIDE(name, len, buf, n))
            abort();
        for (int i = 0; i < 4; i++) {
            const char *v;
            if (ud_text_row_cell(buf, n, i, &v, &len) == 1 && !INSIDE(v, len, buf, n))
                abort();
        }
        struct ud_ok ok;
        (void)ud_parse_ok(buf, n, &ok);
        uint16_t code;
        char msg[64];
        (void)ud_parse_err(buf, n, &code, msg, sizeof msg);
        break;
    }
    }
    free(buf);
    return 0;
}
