/* libFuzzer target: the memcached text and meta parsers over arbitrary
 * bytes, consuming request after request as the daemon does. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Copy so reads past the end are caught by ASan. */
    char *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    size_t off = 0;
    while (off < size) {
        struct mc_text_req r;
        enum mc_parse st = mc_text_parse(buf + off, size - off, &r);
        if (st == MC_PARSE_NEED_MORE)
            break;
        if (st == MC_PARSE_ERROR && (r.close || r.consumed == 0))
            break;
        if (st == MC_PARSE_OK) {
            if (r.cmd == MC_TXT_META) {
                struct mc_meta_req m;
                if (mc_meta_parse(r.line, r.line_len, r.consumed, &m) == MC_PARSE_OK && m.cmd != MC_META_NOOP) {
                    bool in_line = m.rkey >= r.line && m.rkey + m.nrkey <= r.line + r.line_len;
                    bool in_keybuf = m.rkey == m.keybuf;
                    if ((!in_line && !in_keybuf) || m.nrkey == 0 || m.nrkey > MC_KEY_MAX_LEN || m.nopaque > 32)
                        abort();
                    /* base64 round trip of the key */
                    char enc[4 * MC_KEY_MAX_LEN], dec[MC_KEY_MAX_LEN + 3];
                    int en = mc_base64_encode(m.rkey, m.nrkey, enc, sizeof enc);
                    if (en < 0 || mc_base64_decode(enc, (size_t)en, dec, sizeof dec) != (int)m.nrkey ||
                        memcmp(dec, m.rkey, m.nrkey) != 0)
                        abort();
                }
            } else if (r.keys) {
                const char *p = r.keys, *end = r.keys + r.keys_len, *k;
                size_t nk;
                while (mc_text_next_key(&p, end, &k, &nk))
                    if (nk == 0 || k < buf || k + nk > buf + size)
                        abort();
            }
        }
        if (r.consumed > size - off)
            abort();
        off += r.consumed;
        if (st == MC_PARSE_OK && r.bytes > 0) {
            uint64_t skip = (uint64_t)r.bytes + 2;
            if (skip >= size - off)
                break;
            off += (size_t)skip;
        }
    }
    free(buf);
    return 0;
}
