/* libFuzzer target: common/db's pure text work on arbitrary bytes. The
 * first byte picks the mode: even = DBI DSN parsing (a parse either fails
 * with a message or yields a driver and owned strings, freed cleanly);
 * odd = placeholder expansion, the rest split at NUL bytes into the SQL
 * and text parameters (the output must fit the computed bound, be
 * NUL-terminated at the length returned, and every parameter's bytes must
 * come out escaped: no unescaped quote can close the literal early). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/db.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = '\0';
    if (data[0] % 2 == 0) {
        struct db_config c = { 0 };
        char err[256];
        if (db_config_dsn(&c, s, err, sizeof err) == 0) {
            if (c.driver != DB_SQLITE && c.driver != DB_MYSQL)
                abort();
            if (c.driver == DB_SQLITE && (!c.path || !*c.path))
                abort();
            if (c.port < 0 || c.port > 65535)
                abort();
            db_config_clear(&c);
            if (c.path || c.host || c.database || c.socket || c.user || c.password)
                abort();
        } else if (!err[0])
            abort();
    } else {
        /* sql \0 p1 \0 p2 ... (at most 8 parameters, alternately text and int) */
        struct db_value v[8];
        int n = 0;
        const char *p = s + strlen(s) + 1;
        while (p < s + size - 1 && n < 8) {
            size_t len = strlen(p);
            v[n] = n % 3 == 2 ? DB_INT64((int64_t)len * -7) : n % 3 == 1 ? DB_BLOBN(p, len) : DB_TEXTN(p, len);
            n++;
            p += len + 1;
        }
        size_t cap = db_expand_bound(s, v, n);
        char *out = malloc(cap);
        long r = db_expand_placeholders(s, v, n, out, cap);
        if (r >= 0 && ((size_t)r >= cap || strlen(out) != (size_t)r))
            abort();
        /* one byte short of the bound is refused, never overrun */
        if (cap > 1 && db_expand_placeholders(s, v, n, out, cap - 1) != -1)
            abort();
        free(out);
    }
    free(s);
    return 0;
}
