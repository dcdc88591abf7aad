/* libFuzzer target: gearmand's packet parser and admin text classifier.
 * Feeds the input as a stream of packets (as the server does), checks the
 * parser's invariants, and re-encodes what parsed to check the round trip. */
#include "gearmand/proto.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
        struct gm_packet pk;
        size_t used = 0;
        enum gm_parse_status st = gm_parse_packet(p, left, 65536, &pk, &used);
        if (st == GM_PARSE_NEED_MORE || st == GM_PARSE_BAD_MAGIC || st == GM_PARSE_TOO_LARGE)
            break;
        if (used < GM_HEADER_SIZE || used > left)
            abort();
        if (st == GM_PARSE_OK && pk.argc > 0) {
            size_t total = 0;
            for (int i = 0; i < pk.argc; i++) {
                if (pk.arg[i] < (const char *)p || pk.arg[i] + pk.arg_len[i] > (const char *)p + used)
                    abort();
                total += pk.arg_len[i];
            }
            if (total + (size_t)(pk.argc - 1) != pk.size)
                abort();
            uint8_t *out = malloc(used);
            const void *args[GM_MAX_ARGS];
            for (int i = 0; i < pk.argc; i++)
                args[i] = pk.arg[i];
            size_t n = gm_encode(out, used, pk.magic, pk.cmd, pk.argc, args, pk.arg_len);
            if (n != used || memcmp(out, p, used) != 0)
                abort();
            free(out);
        }
        p += used;
        left -= used;
    }
    /* The same bytes as an admin text line. */
    char *line = malloc(size + 1);
    memcpy(line, data, size);
    char *tok[GM_TEXT_MAX_TOKENS];
    int n = gm_text_split(line, size, tok, GM_TEXT_MAX_TOKENS);
    struct gm_text t;
    gm_text_classify(n, tok, &t);
    for (int i = 0; i < t.argc; i++)
        if (strlen(t.arg[i]) > size)
            abort();
    free(line);
    return 0;
}
