/* libFuzzer target: mogstored's request path — the HTTP head parse, the
 * docroot path normaliser, mogstored's PUT/DELETE path rule, the side
 * channel line parser, the usage file parser and a partial PUT's
 * Content-Range. Invariants: an accepted
 * path starts with '/', has no ".." segment and no "//"; a side-channel uri
 * lies inside the line. */
#include "mogilefs/mogilefs.h"

#include <stdlib.h>
#include <string.h>

#include "common/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *buf = (const char *)data;
    struct http_msg m;
    int r = http_parse_request(buf, size, NULL, &m);
    if (r > 0) {
        char path[4096];
        bool slash = false;
        int pl = http_path_normalize(m.target, m.target_len, path, sizeof path, &slash);
        if (pl >= 0) {
            if (path[0] != '/' || strstr(path, "/../") || strstr(path, "//"))
                abort();
            if (mog_storage_path_ok(path, (size_t)pl) && strstr(path, ".."))
                abort();
        }
    }
    if (mog_storage_path_ok(buf, size) && (size < 2 || buf[0] != '/' || memmem(buf, size, "..", 2)))
        abort();
    char *line = malloc(size + 1);
    memcpy(line, buf, size);
    line[size] = '\0';
    char *uri;
    size_t ul;
    enum mog_side_cmd k = mog_side_parse(line, size, &uri, &ul);
    if ((k == MOG_SIDE_SIZE || k == MOG_SIDE_MD5 || k == MOG_SIDE_SHA1) &&
        (uri < line || uri + ul > line + size || memmem(uri, ul, "..", 2)))
        abort();
    free(line);
    uint64_t rs = 0, re = 0;
    if (mog_content_range_parse(buf, size, &rs, &re) == 0 && rs > re)
        abort();
    int64_t total = 0, used = 0;
    mog_usage_parse(buf, size, &total, &used);
    return 0;
}
