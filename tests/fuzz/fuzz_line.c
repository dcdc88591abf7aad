/* libFuzzer target: line framing and tokenising on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t off = 0;
    while (off < size) {
        size_t len, used;
        enum line_status st = line_find((const char *)data + off, size - off, 256, &len, &used);
        if (st != LINE_OK)
            break;
        if (len > 256 || used > size - off || used < len + 1)
            abort();
        char *copy = malloc(len + 1);
        memcpy(copy, data + off, len);
        char *tok[16];
        int n = line_split(copy, len, tok, 16);
        for (int i = 0; i < n; i++)
            if (tok[i] < copy || tok[i] >= copy + len || *tok[i] == ' ')
                abort();
        free(copy);
        off += used;
    }
    return 0;
}
