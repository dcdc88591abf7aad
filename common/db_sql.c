/* db_sql: the pure text work of common/db: expanding '?' placeholders into
 * SQL literals for the MySQL driver (which sends queries as text), and
 * parsing DBI-style DSNs. No connection, no thread, no global: fuzzed by
 * tests/fuzz/fuzz_db_sql.c. */
#include "common/db.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/num.h"

/* ---- placeholders ------------------------------------------------------------ */

size_t db_expand_bound(const char *sql, const struct db_value *params, int nparams)
{
    size_t need = strlen(sql) + 1;
    for (int i = 0; i < nparams; i++)
        need += params[i].len * 2 + 32; /* escaped or hex, quotes, X; or 20 digits */
    return need;
}

/* Escape as mysql_escape_string does for single-byte-safe charsets
 * (latin1, utf8, utf8mb4: no multibyte character contains '\\' or a quote). */
static size_t escape_plain(char *o, const char *s, size_t len)
{
    char *start = o;
    for (size_t i = 0; i < len; i++) {
        char c = s[i], e = 0;
        switch (c) {
        case '\0': e = '0'; break;
        case '\n': e = 'n'; break;
        case '\r': e = 'r'; break;
        case '\\': e = '\\'; break;
        case '\'': e = '\''; break;
        case '"': e = '"'; break;
        case '\032': e = 'Z'; break;
        default: break;
        }
        if (e) {
            *o++ = '\\';
            *o++ = e;
        } else
            *o++ = c;
    }
    return (size_t)(o - start);
}

long db_expand_placeholders_with(const char *sql, const struct db_value *params, int nparams, char *out, size_t cap,
                                 db_escape_fn escape, void *ctx)
{
    if (cap < db_expand_bound(sql, params, nparams))
        return -1;
    char *o = out;
    int pi = 0;
    char quote = 0;
    for (const char *s = sql; *s; s++) {
        if (quote) {
            *o++ = *s;
            if (*s == '\\' && s[1])
                *o++ = *++s;
            else if (*s == quote)
                quote = 0;
            continue;
        }
        if (*s == '\'' || *s == '"' || *s == '`') {
            quote = *s;
            *o++ = *s;
            continue;
        }
        /* comments: a '?' in them is not a placeholder */
        if (*s == '#' || (s[0] == '-' && s[1] == '-' && (s[2] == ' ' || s[2] == '\t' || s[2] == '\n'))) {
            while (*s && *s != '\n')
                *o++ = *s++;
            if (!*s)
                break;
            *o++ = *s;
            continue;
        }
        if (s[0] == '/' && s[1] == '*') {
            const char *e = strstr(s + 2, "*/");
            size_t n = e ? (size_t)(e + 2 - s) : strlen(s);
            memcpy(o, s, n);
            o += n;
            s += n - 1;
            continue;
        }
        if (*s != '?') {
            *o++ = *s;
            continue;
        }
        if (pi >= nparams)
            return -1; /* more placeholders than parameters */
        const struct db_value *v = &params[pi++];
        switch (v->type) {
        case DB_INT: o += sprintf(o, "%lld", (long long)v->i); break;
        case DB_TEXT:
        case DB_BLOB:
            if (v->type == DB_BLOB && v->len) {
                /* hex literal: binary-safe whatever the connection charset */
                static const char hex[] = "0123456789abcdef";
                *o++ = 'X';
                *o++ = '\'';
                const unsigned char *b = v->p;
                for (size_t k = 0; k < v->len; k++) {
                    *o++ = hex[b[k] >> 4];
                    *o++ = hex[b[k] & 15];
                }
                *o++ = '\'';
            } else {
                *o++ = '\'';
                if (escape)
                    o += escape(ctx, o, v->p ? v->p : "", v->len);
                else
                    o += escape_plain(o, v->p ? v->p : "", v->len);
                *o++ = '\'';
            }
            break;
        default:
            memcpy(o, "NULL", 4);
            o += 4;
            break;
        }
    }
    if (pi != nparams)
        return -1; /* fewer placeholders than parameters */
    *o = '\0';
    return (long)(o - out);
}

long db_expand_placeholders(const char *sql, const struct db_value *params, int nparams, char *out, size_t cap)
{
    return db_expand_placeholders_with(sql, params, nparams, out, cap, NULL, NULL);
}

/* ---- DSNs ---------------------------------------------------------------------- */

static int dsn_err(char *err, size_t errlen, const char *what, const char *dsn)
{
    snprintf(err, errlen, "bad DSN '%s': %s", dsn, what);
    return -1;
}

static bool key_is(const char *k, size_t klen, const char *name)
{
    return strlen(name) == klen && strncasecmp(k, name, klen) == 0;
}

void db_config_clear(struct db_config *cfg)
{
    if (!cfg->owned_)
        return;
    /* the buffer holds several NUL-separated strings; its size is stored
     * in front of it (see db_config_dsn) */
    size_t cap;
    memcpy(&cap, cfg->owned_ - sizeof cap, sizeof cap);
    const char *lo = cfg->owned_, *hi = lo + cap;
    const char **fields[] = { &cfg->path, &cfg->host, &cfg->socket, &cfg->user, &cfg->password, &cfg->database };
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (*fields[i] >= lo && *fields[i] < hi)
            *fields[i] = NULL;
    free(cfg->owned_ - sizeof cap);
    cfg->owned_ = NULL;
}

int db_config_dsn(struct db_config *cfg, const char *dsn, char *err, size_t errlen)
{
    if (!dsn)
        return dsn_err(err, errlen, "empty", "");
    if (strncasecmp(dsn, "dbi:", 4) != 0)
        return dsn_err(err, errlen, "must start with DBI:", dsn);
    const char *drv = dsn + 4, *p = drv;
    while (*p && *p != ':' && *p != '(')
        p++;
    size_t drvlen = (size_t)(p - drv);
    if (*p == '(') {
        const char *close = strchr(p, ')');
        if (!close)
            return dsn_err(err, errlen, "unclosed attribute list", dsn);
        p = close + 1;
    }
    if (*p != ':')
        return dsn_err(err, errlen, "no ':' after the driver name", dsn);
    const char *rest = p + 1;
    enum db_driver driver;
    if (key_is(drv, drvlen, "SQLite"))
        driver = DB_SQLITE;
    else if (key_is(drv, drvlen, "mysql") || key_is(drv, drvlen, "MariaDB"))
        driver = DB_MYSQL;
    else
        return dsn_err(err, errlen, "unknown driver (SQLite, mysql, MariaDB)", dsn);

    /* One buffer for every string we hand out, its size stored in front. */
    size_t cap = strlen(rest) + 1;
    char *block = malloc(sizeof cap + cap);
    if (!block) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    memcpy(block, &cap, sizeof cap);
    char *buf = block + sizeof cap;
    memcpy(buf, rest, cap);

    const char *path = NULL, *host = NULL, *socket = NULL, *database = NULL, *user = NULL, *password = NULL;
    int port = 0;
    const char *why = NULL;
    if (!strchr(buf, '=')) {
        /* positional: SQLite "FILE"; MySQL "DB[:HOST[:PORT]]" */
        if (driver == DB_SQLITE)
            path = buf;
        else {
            database = buf;
            char *c = strchr(buf, ':');
            if (c) {
                *c++ = '\0';
                host = c;
                char *c2 = strchr(c, ':');
                if (c2) {
                    *c2++ = '\0';
                    if (parse_int_str(c2, 1, 65535, &port) != NUM_OK)
                        why = "port must be 1..65535";
                }
            }
        }
    } else {
        char *save = NULL;
        for (char *kv = strtok_r(buf, ";", &save); kv && !why; kv = strtok_r(NULL, ";", &save)) {
            char *eq = strchr(kv, '=');
            if (!eq) {
                why = "expected key=value";
                break;
            }
            size_t klen = (size_t)(eq - kv);
            char *val = eq + 1;
            if (driver == DB_SQLITE) {
                if (key_is(kv, klen, "dbname") || key_is(kv, klen, "db") || key_is(kv, klen, "database"))
                    path = val;
                else if (!(klen > 7 && strncasecmp(kv, "sqlite_", 7) == 0))
                    why = "unknown key (dbname, db, database)";
            } else {
                if (key_is(kv, klen, "database") || key_is(kv, klen, "db") || key_is(kv, klen, "dbname"))
                    database = val;
                else if (key_is(kv, klen, "host") || key_is(kv, klen, "hostname"))
                    host = val;
                else if (key_is(kv, klen, "port")) {
                    if (parse_int_str(val, 1, 65535, &port) != NUM_OK)
                        why = "port must be 1..65535";
                } else if (key_is(kv, klen, "mysql_socket") || key_is(kv, klen, "mariadb_socket"))
                    socket = val;
                else if (key_is(kv, klen, "user"))
                    user = val;
                else if (key_is(kv, klen, "password"))
                    password = val;
                else if (!((klen > 6 && strncasecmp(kv, "mysql_", 6) == 0) ||
                           (klen > 8 && strncasecmp(kv, "mariadb_", 8) == 0)))
                    why = "unknown key (database, host, port, mysql_socket, user, password)";
            }
        }
    }
    if (!why && driver == DB_SQLITE && (!path || !*path))
        why = "no database file";
    if (!why && driver == DB_MYSQL && database && !*database)
        why = "empty database name";
    if (why) {
        free(block);
        return dsn_err(err, errlen, why, dsn);
    }
    db_config_clear(cfg);
    cfg->driver = driver;
    if (driver == DB_SQLITE)
        cfg->path = path;
    if (database)
        cfg->database = database;
    if (host && *host)
        cfg->host = host;
    if (port)
        cfg->port = port;
    if (socket && *socket)
        cfg->socket = socket;
    if (user)
        cfg->user = user;
    if (password)
        cfg->password = password;
    cfg->owned_ = buf;
    return 0;
}
