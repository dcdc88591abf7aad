/* libFuzzer target: memcached's -e metadata parser (restart.c,
 * mc_restart_parse_meta) over arbitrary bytes, with the daemon's default
 * memory layout (-m 64): it must stay inside the text, never accept a
 * file without every line, and hand back page classes within the
 * layout. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "memcached/mc.h"
#include "memcached/restart.h"

struct mc_settings mc_settings;

#define PAGES 128 /* -m 64 in 1 MB pages, plus one per class */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        mc_settings.maxbytes = 64u << 20;
        mc_settings.item_size_max = 1u << 20;
        mc_settings.factor = 1.25;
        mc_settings.chunk_min = 48;
        mc_settings.slab_chunk_max = 512 * 1024;
        mc_settings.slab_reassign = true;
        mc_settings.hashpower = 16;
        if (mc_slabs_init() < 0)
            abort();
        ready = true;
    }
    char *buf = malloc(size + 1);
    memcpy(buf, data, size);
    buf[size] = '\0';
    int rc = mc_restart_parse_meta(buf, size, PAGES);
    if (rc < -1 || rc > 1)
        abort();
    free(buf);
    return 0;
}
