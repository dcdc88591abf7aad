/* libFuzzer target: djabberd's restricted XML stream parser. The input is
 * fed in pieces whose sizes come from the first byte (so chunk boundaries
 * vary), with small bounds so the policy paths run too; every stanza is
 * serialised again, and idle parsers are released and re-primed. */
#include "djabberd/proto_xml.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static struct evbuffer *out;

static int on_stream(void *arg, const char *name, const char **attrs)
{
    (void)arg, (void)name, (void)attrs;
    return 0;
}

static int on_stanza(void *arg, struct dj_stanza *st)
{
    (void)arg;
    if (!st->root || !st->root->name)
        abort();
    dj_xml_write(out, st->root);
    evbuffer_drain(out, evbuffer_get_length(out));
    dj_stanza_free(st);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct dj_xml_cbs cbs = { on_stream, on_stanza };
    if (!out)
        out = evbuffer_new();
    if (size < 1)
        return 0;
    size_t step = (size_t)(data[0] % 64) + 1;
    data++;
    size--;
    struct dj_xml_limits lim = { .max_stanza = 4096, .max_depth = 8, .max_attrs = 8 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, NULL);
    size_t off = 0;
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        enum dj_xml_error e = dj_xml_feed(x, (const char *)data + off, n);
        off += n;
        if (e != DJ_XML_OK)
            break;
        dj_xml_release(x);
    }
    dj_xml_free(x);
    return 0;
}
