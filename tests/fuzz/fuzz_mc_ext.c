/* libFuzzer target: extstore's parsers over arbitrary bytes. The first
 * byte picks one: 0, a record as read back from the file (its length must
 * be 0 or lie within the input, a multiple of 8 past the header); 1, the
 * "extstore <setting> <value>" command's arguments; 2, one -o ext_*
 * suboption as NAME=VALUE. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/extstore.h"

struct mc_settings mc_settings; /* memcached.c's, not linked here */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t mode = data[0] % 3;
    size_t n = size - 1;
    char *buf = malloc(n + 1);
    memcpy(buf, data + 1, n);
    buf[n] = 0;
    if (mode == 0) {
        uint32_t len = mc_ext_rec_check(buf, n);
        if (len && (len > n || len < 32 || len % 8))
            abort();
    } else if (mode == 1) {
        const char *r = mc_ext_command(buf, n);
        if (strcmp(r, "OK") != 0 && strcmp(r, "ERROR") != 0)
            abort();
    } else if (mode == 2 && !memchr(buf, 0, n)) {
        char err[256] = "";
        char *eq = strchr(buf, '=');
        if (eq)
            *eq = 0;
        if (strcmp(buf, "ext_path") != 0) { /* a path is kept for good: not fuzzed here */
            int rc = mc_ext_option(buf, eq ? eq + 1 : NULL, err, sizeof err);
            if (rc < -1 || rc > 1 || (rc < 0 && !err[0]))
                abort();
        }
    }
    free(buf);
    return 0;
}
