/* libFuzzer target: the config-file reader and value parsers on arbitrary
 * bytes (a file written per input, read through a settings table). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/config.h"

static int i1, c1;
static uint64_t s1;
static double d1;
static bool b1;
static char *str1;
static const struct cfg_setting table[] = { { "int", 'i', CFG_INT, &i1, "1", "", true, NULL },
                                            { "size", 's', CFG_SIZE, &s1, "1k", "", true, NULL },
                                            { "dbl", 'd', CFG_DOUBLE, &d1, "1", "", true, NULL },
                                            { "bool", 'b', CFG_BOOL, &b1, "no", "", true, NULL },
                                            { "count", 'c', CFG_COUNT, &c1, "0", "", true, NULL },
                                            { "str", 0, CFG_STRING, &str1, "x", "", true, NULL },
                                            CFG_END };
static const struct cfg_setting *const tables[] = { table, NULL };

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[64];
    if (!path[0])
        snprintf(path, sizeof(path), "/tmp/fuzz_config.%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    char err[256];
    cfg_load_file(tables, path, false, err, sizeof(err));
    return 0;
}
