/* libFuzzer target for perlbal/proto_upload: the input as an upload-status
 * datagram, a request-target for the URI argument parsers, a Palimg spec
 * and an image prefix; a parsed
 * session name must be 5..50 word characters. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perlbal/proto_upload.h"

static void check_sess(const char *s)
{
    size_t n = strlen(s);
    if (n < 5 || n > PB_UPLOAD_SESS_MAX)
        abort();
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so reading past the end is caught */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    struct pb_upload_report r;
    if (pb_upload_report_parse(buf, size, &r) == 0)
        check_sess(r.sess);
    char sess[PB_UPLOAD_SESS_MAX + 1];
    if (pb_upload_session_of(buf, size, sess))
        check_sess(sess);
    (void)pb_flv_start_of(buf, size);
    if (pb_uri_version(buf, size) < 0)
        abort();
    /* Palimg: the input as a spec, and as the start of an image (changed
     * in place, never beyond len) */
    struct pb_pal_spec spec;
    if (pb_pal_parse_spec(buf, size, &spec) == 0 || pb_pal_parse_spec("t808080", 7, &spec) == 0) {
        (void)pb_pal_gif(&spec, (unsigned char *)buf, size);
        (void)pb_pal_png(&spec, (unsigned char *)buf, size);
    }
    free(buf);
    return 0;
}
