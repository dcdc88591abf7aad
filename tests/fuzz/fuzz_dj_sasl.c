/* libFuzzer target: djabberd's SASL message parsers (PLAIN, SCRAM
 * client-first and client-final, base64, stored-credential text). */
#include "djabberd/proto_sasl.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct dj_creds creds;
    static int ready;
    if (!ready) {
        dj_creds_make(&creds, "pencil", 6, 16);
        ready = 1;
    }
    const char *m = (const char *)data;
    const char *a, *b, *c;
    size_t al, bl, cl;
    dj_sasl_plain_parse(m, size, &a, &al, &b, &bl, &c, &cl);
    unsigned char dec[512];
    dj_b64_decode(m, size, dec, sizeof dec);
    struct dj_creds parsed;
    dj_creds_parse(&parsed, m, size);
    /* split at the first newline: client-first, then client-final */
    const char *nl = memchr(m, '\n', size);
    size_t first = nl ? (size_t)(nl - m) : size;
    struct dj_scram s;
    const char *cond;
    if (dj_scram_client_first(&s, size % 2 ? DJ_SASL_SCRAM_SHA256 : DJ_SASL_SCRAM_SHA1_PLUS,
                              size % 3 ? (const unsigned char *)"0123456789ab" : NULL, 12, m, first, &cond) == 0 &&
        dj_scram_server_first(&s, &creds) == 0 && nl) {
        char out[128];
        dj_scram_client_final(&s, &creds, nl + 1, size - first - 1, out, sizeof out, &cond);
    }
    return 0;
}
