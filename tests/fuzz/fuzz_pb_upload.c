/* libFuzzer target for perlbal/proto_upload: the input as an upload-status
 * datagram and as a request-target for the URI argument parsers; a parsed
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
    free(buf);
    return 0;
}
