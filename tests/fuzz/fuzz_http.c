/* libFuzzer target for common/http: the first byte picks the parser, the rest
 * is its input. Checks the invariants callers rely on (consumed <= length,
 * errors carry a status, decoded payload stays inside the input). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/http.h"

static struct http_msg msg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const char *buf = (const char *)data + 1;
    size_t len = size - 1;
    /* a heap copy so ASan sees reads past the end */
    char *copy = malloc(len ? len : 1);
    memcpy(copy, buf, len);
    struct http_limits lim = { .max_head = 4096, .max_headers = 20 };
    switch (sel % 6) {
    case 0: {
        int r = http_parse_request(copy, len, &lim, &msg);
        if (r > 0 && (size_t)r > len)
            abort();
        if (r < 0 && msg.error < 400)
            abort();
        if (r > 0) {
            for (int i = 0; i < msg.nheaders; i++)
                if (msg.headers[i].value + msg.headers[i].value_len > copy + len)
                    abort();
            http_header_value(&msg, "host", NULL);
        }
        break;
    }
    case 1: {
        int r = http_parse_response(copy, len, (enum http_method)(data[0] / 6 % 9), &lim, &msg);
        if (r > 0 && (size_t)r > len)
            abort();
        break;
    }
    case 2: {
        struct http_chunked c;
        http_chunked_init(&c, data[0] & 0x80 ? 1000 : 0);
        size_t pos = 0, step = (data[0] >> 3) % 7 + 1;
        while (pos < len) {
            size_t avail = len - pos < step ? len - pos : step;
            size_t cons, off, dl;
            enum http_chunk_result r = http_chunked_step(&c, copy + pos, avail, &cons, &off, &dl);
            if (cons > avail)
                abort();
            if (r == HTTP_CHUNK_DATA && off + dl > avail)
                abort();
            if (r == HTTP_CHUNK_ERROR || r == HTTP_CHUNK_DONE)
                break;
            if (r == HTTP_CHUNK_NEED_MORE && cons != avail)
                abort();
            pos += cons;
        }
        break;
    }
    case 3: {
        uint64_t a, b;
        if (http_parse_range(copy, len, 12345, &a, &b) == HTTP_RANGE_OK && (a > b || b >= 12345))
            abort();
        break;
    }
    case 4: {
        time_t t;
        http_date_parse(copy, len, &t);
        break;
    }
    case 5: {
        char out[256];
        bool sl;
        int r = http_path_normalize(copy, len, out, sizeof out, &sl);
        if (r >= 0 && (out[0] != '/' || strstr(out, "/../") || strstr(out, "//") || (size_t)r != strlen(out)))
            abort();
        if (r >= 2 && strcmp(out + r - 3 > out ? out + r - 3 : out, "/..") == 0)
            abort();
        break;
    }
    }
    free(copy);
    return 0;
}
