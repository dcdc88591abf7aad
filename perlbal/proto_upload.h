/* proto_upload: the small parsers of things clients send that are not
 * HTTP framing — Perlbal's upload-status datagrams and the request-URI
 * arguments plugins read. Pure (no sockets, no globals), unit-tested and
 * fuzzed (fuzz_pb_upload). */
#ifndef PB_PROTO_UPLOAD_H
#define PB_PROTO_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PB_UPLOAD_SESS_MAX 50 /* a session name is 5..50 word characters */

struct pb_upload_report {
    char sess[PB_UPLOAD_SESS_MAX + 1];
    uint64_t done, total, start, now;
};

/* "UPLOAD:<sess>:<done>:<total>:<start>:<now>" (the whole datagram, as
 * Perlbal's /^UPLOAD:(\w{5,50}):(\d+):(\d+):(\d+):(\d+)$/). 0, or -1 when
 * it is anything else (numbers over 2^63 included). */
int pb_upload_report_parse(const char *buf, size_t len, struct pb_upload_report *out);
/* The client_up_sess of a request-target: "[?&]client_up_sess=" then 5..50
 * word characters ending at a non-word character or the end (Perl's
 * /[\?&]client_up_sess=(\w{5,50})\b/). out holds PB_UPLOAD_SESS_MAX + 1. */
bool pb_upload_session_of(const char *target, size_t len, char *out);
/* FlvStreaming: N of "<path>.flv?...start=N..." (digits only; 0 = none). */
uint64_t pb_flv_start_of(const char *target, size_t len);
/* LazyCDN: N of a "v=N" word in the target (Perl's /\bv=(\d+)\b/); 0 = none. */
long long pb_uri_version(const char *target, size_t len);

/* Palimg: a palette spec from the URL ("p" stripped: "<i><rrggbb>..."
 * up to six, "g<from><rgb><to><rgb>", "t<rgb>[<rgb>]"; lower-case hex as
 * Perlbal). 0, or 404 for anything else (and a gradient with from == to). */
struct pb_pal_spec {
    bool set[256];
    uint8_t rgb[256][3];
    bool tint;
    uint8_t tint_c[3], tint_dark[3];
    bool any;
};

int pb_pal_parse_spec(const char *s, size_t n, struct pb_pal_spec *p);
/* The palette of the first len bytes of a GIF (its global colour table) or
 * a PNG (its PLTE chunk, whose CRC is rewritten) changed in place, as
 * Perlbal's PaletteModify. False when the table is not within them (or a
 * PNG is not paletted). */
bool pb_pal_gif(const struct pb_pal_spec *p, unsigned char *d, size_t len);
bool pb_pal_png(const struct pb_pal_spec *p, unsigned char *d, size_t len);

#endif
