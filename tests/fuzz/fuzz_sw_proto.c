/* libFuzzer target: schwartzd's request-line parser (normal and job lines)
 * and the DSN check (common/db's DSN parser + a database for mysql). Splits the input into lines as the session does
 * and checks that everything parsed points inside the line it came from. */
#include "schwartz/schwartzd.h"
#include "common/db.h"

#include <stdlib.h>
#include <string.h>

static void inside(const char *p, const char *line, size_t len)
{
    if (p && (p < line || p > line + len))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p = data;
    size_t left = size;
    while (left > 0) {
        const uint8_t *nl = memchr(p, '\n', left);
        size_t len = nl ? (size_t)(nl - p) : left;
        char *line = malloc(len + 1);
        memcpy(line, p, len);
        line[len] = '\0';
        struct sw_req r;
        const char *why = NULL;
        for (int jobline = 0; jobline < 2; jobline++) {
            char *copy = malloc(len + 1);
            memcpy(copy, line, len + 1);
            enum sw_err e = sw_parse_line(copy, len, jobline, 1u << 20, &r, &why);
            if (!why)
                abort();
            if (e == SW_OK) {
                inside(r.func, copy, len);
                inside(r.handle, copy, len);
                inside(r.uniqkey, copy, len);
                inside(r.coalesce, copy, len);
                inside(r.message, copy, len);
                if (r.nfuncs < 0 || r.nfuncs > SW_MAX_FUNCS)
                    abort();
                for (int i = 0; i < r.nfuncs; i++)
                    inside(r.funcs[i], copy, len);
                if (r.has_block && r.bytes > (1u << 20))
                    abort();
                if (r.cmd == SW_CMD_GRAB && (r.count < 1 || r.grab_for < 1 || r.nfuncs < 1))
                    abort();
            }
            free(copy);
        }
        struct db_config dsn = { 0 };
        char err[128];
        if (sw_dsn_config(line, &dsn, err, sizeof err) == 0) {
            if (dsn.driver != DB_SQLITE && dsn.driver != DB_MYSQL)
                abort();
            if (dsn.driver == DB_MYSQL && (!dsn.database || !*dsn.database))
                abort();
            db_config_clear(&dsn);
        }
        free(line);
        if (!nl)
            break;
        left -= len + 1;
        p += len + 1;
    }
    return 0;
}
