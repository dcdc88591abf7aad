/* libFuzzer target for perlbal/proto_manage: every line of the input is parsed as
 * a Perlbal config/management command; pointers must land in the struct. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perlbal/proto_manage.h"

static struct pb_cmd cmd;

static void inside(const char *p)
{
    if (p && (p < (const char *)&cmd || p >= (const char *)(&cmd + 1)))
        abort();
    if (p && strlen(p) > PB_CMD_MAX_LINE)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *e = p + size;
    while (p < e) {
        const char *nl = memchr(p, '\n', (size_t)(e - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(e - p);
        char *line = malloc(len ? len : 1);
        memcpy(line, p, len);
        if (pb_cmd_parse(line, len, &cmd) == 0) {
            inside(cmd.word);
            inside(cmd.a1);
            inside(cmd.a2);
            inside(cmd.a3);
            inside(cmd.a4);
            for (int i = 0; i < cmd.argc; i++)
                inside(cmd.argv[i]);
        } else if (!cmd.err[0]) {
            abort();
        }
        free(line);
        p = nl ? nl + 1 : e;
    }
    return 0;
}
