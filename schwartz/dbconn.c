/* dbconn: a blocking SQLite / MySQL connection for one store thread, and
 * DSN parsing. See dbconn.h for why this is not common/db yet.
 * Everything here blocks: it runs only on a store thread. */
#include "schwartz/dbconn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <errmsg.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <sqlite3.h>

#define STMT_CACHE 32

struct sw_dbc {
    enum sw_driver driver;
    sqlite3 *sq;
    struct { char *sql; sqlite3_stmt *st; } cache[STMT_CACHE];
    int cache_next;
    MYSQL *my;
    char *buf;
    size_t cap;
    uint64_t affected;
    int64_t last_id;
    char err[256];
};

/* ---- DSN ---------------------------------------------------------------- */

static void copy_val(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

int sw_dsn_parse(const char *dsn, struct sw_dsn *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (strncasecmp(dsn, "dbi:", 4) != 0) {
        snprintf(err, errlen, "DSN must start with dbi: (dbi:SQLite:dbname=F or dbi:mysql:database=D;...)");
        return -1;
    }
    const char *p = dsn + 4;
    const char *colon = strchr(p, ':');
    if (!colon) {
        snprintf(err, errlen, "DSN has no driver part");
        return -1;
    }
    size_t dl = (size_t)(colon - p);
    if (dl == 6 && !strncasecmp(p, "SQLite", 6))
        out->driver = SW_SQLITE;
    else if ((dl == 5 && !strncasecmp(p, "mysql", 5)) || (dl == 7 && !strncasecmp(p, "MariaDB", 7)))
        out->driver = SW_MYSQL;
    else {
        snprintf(err, errlen, "unsupported DBI driver '%.*s' (SQLite, mysql)", (int)dl, p);
        return -1;
    }
    p = colon + 1;
    while (*p) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq) {
            /* dbi:SQLite:FILE and dbi:mysql:DBNAME are accepted by DBI too */
            if (out->driver == SW_SQLITE)
                copy_val(out->path, sizeof out->path, p, n);
            else
                copy_val(out->database, sizeof out->database, p, n);
        } else {
            size_t kl = (size_t)(eq - p);
            const char *v = eq + 1;
            size_t vl = n - kl - 1;
#define KEY(s) (kl == sizeof(s) - 1 && !strncasecmp(p, s, kl))
            if (KEY("dbname") || KEY("database") || KEY("db")) {
                if (out->driver == SW_SQLITE)
                    copy_val(out->path, sizeof out->path, v, vl);
                else
                    copy_val(out->database, sizeof out->database, v, vl);
            } else if (KEY("host") || KEY("hostname"))
                copy_val(out->host, sizeof out->host, v, vl);
            else if (KEY("port")) {
                char tmp[16];
                copy_val(tmp, sizeof tmp, v, vl);
                int64_t port;
                if (sw_parse_i64(tmp, 1, 65535, &port) < 0) {
                    snprintf(err, errlen, "bad port in DSN");
                    return -1;
                }
                out->port = (int)port;
            } else if (KEY("mysql_socket") || KEY("socket"))
                copy_val(out->socket, sizeof out->socket, v, vl);
            /* other DBI attributes (mysql_*, sqlite_*) are ignored */
#undef KEY
        }
        p += n;
        if (*p == ';')
            p++;
    }
    if (out->driver == SW_SQLITE && !out->path[0]) {
        snprintf(err, errlen, "SQLite DSN needs dbname=FILE");
        return -1;
    }
    if (out->driver == SW_MYSQL && !out->database[0]) {
        snprintf(err, errlen, "mysql DSN needs database=NAME");
        return -1;
    }
    return 0;
}

/* ---- rows ---------------------------------------------------------------- */

/* Append one cell; rows grow row-major (filled = cells so far). */
static int rows_add(struct sw_rows *r, size_t filled, const void *p, size_t len, bool null)
{
    if (filled >= r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 16;
        char **c = realloc(r->cell, cap * sizeof *c);
        if (!c)
            return -1;
        r->cell = c;
        size_t *l = realloc(r->len, cap * sizeof *l);
        if (!l)
            return -1;
        r->len = l;
        r->cap = cap;
    }
    char *v = NULL;
    if (!null) {
        v = malloc(len + 1);
        if (!v)
            return -1;
        if (len)
            memcpy(v, p, len);
        v[len] = '\0';
    }
    r->cell[filled] = v;
    r->len[filled] = len;
    return 0;
}

void sw_rows_free(struct sw_rows *r)
{
    if (!r)
        return;
    size_t n = r->nrows * (size_t)r->ncols;
    if (n > r->cap)
        n = r->cap;
    for (size_t i = 0; i < n; i++)
        free(r->cell[i]);
    free(r->cell);
    free(r->len);
    memset(r, 0, sizeof *r);
}

int64_t sw_cell_int(const struct sw_rows *r, size_t row, int col)
{
    const char *s = sw_cell(r, row, col, NULL);
    return s ? strtoll(s, NULL, 10) : 0;
}

/* ---- connections ------------------------------------------------------------ */

enum sw_driver sw_dbc_driver(const struct sw_dbc *c) { return c->driver; }
uint64_t sw_dbc_affected(const struct sw_dbc *c) { return c->affected; }
int64_t sw_dbc_last_id(const struct sw_dbc *c) { return c->last_id; }
const char *sw_dbc_error(const struct sw_dbc *c) { return c->err; }

struct sw_dbc *sw_dbc_open(const struct sw_dsn *dsn, const char *user, const char *pass, char *err, size_t errlen)
{
    struct sw_dbc *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->driver = dsn->driver;
    if (dsn->driver == SW_SQLITE) {
        if (sqlite3_open_v2(dsn->path, &c->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK) {
            snprintf(err, errlen, "sqlite %s: %s", dsn->path, c->sq ? sqlite3_errmsg(c->sq) : "cannot open");
            goto fail;
        }
        /* Perl workers share the file: wait for their locks rather than fail. */
        sqlite3_busy_timeout(c->sq, 10000);
        /* WAL + synchronous=FULL: COMMIT returns after the fsync. */
        if (sw_dbc_exec(c, "PRAGMA journal_mode=WAL") != SW_DBE_OK ||
            sw_dbc_exec(c, "PRAGMA synchronous=FULL") != SW_DBE_OK) {
            snprintf(err, errlen, "sqlite %s: %s", dsn->path, c->err);
            goto fail;
        }
        return c;
    }
    c->my = mysql_init(NULL);
    if (!c->my) {
        snprintf(err, errlen, "mysql_init failed");
        goto fail;
    }
    unsigned int timeout = 5;
    mysql_options(c->my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    unsigned int rw_timeout = 30;
    mysql_options(c->my, MYSQL_OPT_READ_TIMEOUT, &rw_timeout);
    mysql_options(c->my, MYSQL_OPT_WRITE_TIMEOUT, &rw_timeout);
    const char *host = dsn->host[0] ? dsn->host : (dsn->socket[0] ? "localhost" : "127.0.0.1");
    if (!mysql_real_connect(c->my, host, user, pass, dsn->database, (unsigned)dsn->port,
                            dsn->socket[0] ? dsn->socket : NULL, 0)) {
        snprintf(err, errlen, "mysql %s: %s", dsn->socket[0] ? dsn->socket : host, mysql_error(c->my));
        goto fail;
    }
    mysql_autocommit(c->my, 1);
    /* READ COMMITTED: each statement sees what others committed (a funcmap
     * row another connection just added, the newest lease), and InnoDB
     * takes no gap locks, so parallel grabs deadlock less. */
    if (sw_dbc_exec(c, "SET NAMES binary") != SW_DBE_OK ||
        sw_dbc_exec(c, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED") != SW_DBE_OK) {
        snprintf(err, errlen, "mysql: %s", c->err);
        goto fail;
    }
    return c;
fail:
    sw_dbc_close(c);
    return NULL;
}

void sw_dbc_close(struct sw_dbc *c)
{
    if (!c)
        return;
    for (int i = 0; i < STMT_CACHE; i++) {
        if (c->cache[i].st)
            sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    if (c->sq)
        sqlite3_close(c->sq);
    if (c->my)
        mysql_close(c->my);
    free(c->buf);
    free(c);
}

static enum sw_dbe sq_class(struct sw_dbc *c, int rc)
{
    snprintf(c->err, sizeof c->err, "%s", sqlite3_errmsg(c->sq));
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return sqlite3_extended_errcode(c->sq) == SQLITE_CONSTRAINT_UNIQUE ||
                       sqlite3_extended_errcode(c->sq) == SQLITE_CONSTRAINT_PRIMARYKEY
                   ? SW_DBE_DUP
                   : SW_DBE_OTHER;
    case SQLITE_BUSY: case SQLITE_LOCKED: return SW_DBE_ABORT;
    case SQLITE_IOERR: case SQLITE_CORRUPT: case SQLITE_FULL: case SQLITE_CANTOPEN: case SQLITE_NOTADB:
    case SQLITE_READONLY:
        return SW_DBE_LOST;
    default: return SW_DBE_OTHER;
    }
}

static sqlite3_stmt *sq_prepare(struct sw_dbc *c, const char *sql)
{
    for (int i = 0; i < STMT_CACHE; i++)
        if (c->cache[i].st && !strcmp(c->cache[i].sql, sql)) {
            sqlite3_reset(c->cache[i].st);
            sqlite3_clear_bindings(c->cache[i].st);
            return c->cache[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(c->sq, sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    int slot = c->cache_next;
    c->cache_next = (c->cache_next + 1) % STMT_CACHE;
    if (c->cache[slot].st)
        sqlite3_finalize(c->cache[slot].st);
    free(c->cache[slot].sql);
    c->cache[slot].sql = strdup(sql);
    c->cache[slot].st = st;
    if (!c->cache[slot].sql) {
        sqlite3_finalize(st);
        c->cache[slot].st = NULL;
        return NULL;
    }
    return st;
}

static enum sw_dbe sq_query(struct sw_dbc *c, const char *sql, const struct db_value *p, int np, struct sw_rows *rows)
{
    sqlite3_stmt *st = sq_prepare(c, sql);
    if (!st)
        return sq_class(c, sqlite3_errcode(c->sq));
    for (int i = 0; i < np; i++) {
        int rc;
        switch (p[i].type) {
        case DB_INT: rc = sqlite3_bind_int64(st, i + 1, p[i].i); break;
        case DB_TEXT: rc = sqlite3_bind_text(st, i + 1, p[i].p ? p[i].p : "", (int)p[i].len, SQLITE_STATIC); break;
        case DB_BLOB: rc = sqlite3_bind_blob(st, i + 1, p[i].p ? p[i].p : "", (int)p[i].len, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(st, i + 1); break;
        }
        if (rc != SQLITE_OK)
            return sq_class(c, rc);
    }
    int ncols = sqlite3_column_count(st);
    if (rows) {
        memset(rows, 0, sizeof *rows);
        rows->ncols = ncols;
    }
    size_t filled = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (!rows)
            continue;
        for (int k = 0; k < ncols; k++) {
            int t = sqlite3_column_type(st, k);
            const void *v = NULL;
            if (t == SQLITE_BLOB)
                v = sqlite3_column_blob(st, k);
            else if (t != SQLITE_NULL)
                v = sqlite3_column_text(st, k);
            size_t n = t == SQLITE_NULL ? 0 : (size_t)sqlite3_column_bytes(st, k);
            if (rows_add(rows, filled++, v, n, t == SQLITE_NULL) < 0) {
                sqlite3_reset(st);
                snprintf(c->err, sizeof c->err, "out of memory");
                return SW_DBE_OTHER;
            }
        }
        rows->nrows++;
    }
    if (rc != SQLITE_DONE) {
        enum sw_dbe e = sq_class(c, rc);
        sqlite3_reset(st);
        return e;
    }
    c->affected = (uint64_t)sqlite3_changes(c->sq);
    c->last_id = sqlite3_last_insert_rowid(c->sq);
    sqlite3_reset(st);
    return SW_DBE_OK;
}

static enum sw_dbe my_class(struct sw_dbc *c)
{
    unsigned e = mysql_errno(c->my);
    snprintf(c->err, sizeof c->err, "%s", mysql_error(c->my));
    if (e == ER_DUP_ENTRY || e == ER_DUP_KEY)
        return SW_DBE_DUP;
    if (e == ER_LOCK_DEADLOCK || e == ER_LOCK_WAIT_TIMEOUT)
        return SW_DBE_ABORT;
    if (e >= 2000 && e < 3000)  /* client errors: server gone, lost, timeouts */
        return SW_DBE_LOST;
    if (e == ER_SERVER_SHUTDOWN || e == ER_QUERY_INTERRUPTED || e == ER_CON_COUNT_ERROR || e == ER_OUT_OF_RESOURCES)
        return SW_DBE_LOST;
    return SW_DBE_OTHER;
}

/* Expand '?' (statements here never quote a '?') into escaped literals;
 * blobs as hex literals, binary-safe whatever the charset. */
static int my_expand(struct sw_dbc *c, const char *sql, const struct db_value *p, int np, size_t *outlen)
{
    size_t need = strlen(sql) + 1;
    for (int i = 0; i < np; i++)
        need += p[i].len * 2 + 32;
    if (need > c->cap) {
        char *b = realloc(c->buf, need);
        if (!b)
            return -1;
        c->buf = b;
        c->cap = need;
    }
    char *o = c->buf;
    int pi = 0;
    for (const char *s = sql; *s; s++) {
        if (*s != '?' || pi >= np) {
            *o++ = *s;
            continue;
        }
        const struct db_value *v = &p[pi++];
        switch (v->type) {
        case DB_INT: o += sprintf(o, "%lld", (long long)v->i); break;
        case DB_BLOB:
            if (v->len) {
                static const char hex[] = "0123456789abcdef";
                const unsigned char *b = v->p;
                *o++ = 'X';
                *o++ = '\'';
                for (size_t k = 0; k < v->len; k++) {
                    *o++ = hex[b[k] >> 4];
                    *o++ = hex[b[k] & 15];
                }
                *o++ = '\'';
                break;
            }
            __attribute__((fallthrough)); /* an empty blob is '' */
        case DB_TEXT:
            *o++ = '\'';
            o += mysql_real_escape_string(c->my, o, v->p ? v->p : "", (unsigned long)v->len);
            *o++ = '\'';
            break;
        default: memcpy(o, "NULL", 4); o += 4; break;
        }
    }
    *o = '\0';
    *outlen = (size_t)(o - c->buf);
    return 0;
}

static enum sw_dbe my_query(struct sw_dbc *c, const char *sql, const struct db_value *p, int np, struct sw_rows *rows)
{
    size_t len;
    if (my_expand(c, sql, p, np, &len) < 0) {
        snprintf(c->err, sizeof c->err, "out of memory");
        return SW_DBE_OTHER;
    }
    if (mysql_real_query(c->my, c->buf, (unsigned long)len) != 0)
        return my_class(c);
    MYSQL_RES *mr = mysql_store_result(c->my);
    if (rows) {
        memset(rows, 0, sizeof *rows);
        rows->ncols = mr ? (int)mysql_num_fields(mr) : 0;
    }
    if (!mr) {
        if (mysql_field_count(c->my) != 0)
            return my_class(c);
        c->affected = (uint64_t)mysql_affected_rows(c->my);
        c->last_id = (int64_t)mysql_insert_id(c->my);
        return SW_DBE_OK;
    }
    if (rows) {
        size_t filled = 0;
        MYSQL_ROW row;
        while ((row = mysql_fetch_row(mr))) {
            unsigned long *lens = mysql_fetch_lengths(mr);
            for (int k = 0; k < rows->ncols; k++)
                if (rows_add(rows, filled++, row[k], row[k] ? lens[k] : 0, row[k] == NULL) < 0) {
                    mysql_free_result(mr);
                    snprintf(c->err, sizeof c->err, "out of memory");
                    return SW_DBE_OTHER;
                }
            rows->nrows++;
        }
    }
    c->affected = (uint64_t)mysql_affected_rows(c->my);
    mysql_free_result(mr);
    return SW_DBE_OK;
}

enum sw_dbe sw_dbc_query(struct sw_dbc *c, const char *sql, const struct db_value *p, int np, struct sw_rows *rows)
{
    c->err[0] = '\0';
    return c->driver == SW_SQLITE ? sq_query(c, sql, p, np, rows) : my_query(c, sql, p, np, rows);
}

enum sw_dbe sw_dbc_exec(struct sw_dbc *c, const char *sql)
{
    if (c->driver == SW_SQLITE) {
        char *msg = NULL;
        int rc = sqlite3_exec(c->sq, sql, NULL, NULL, &msg);
        if (rc != SQLITE_OK) {
            enum sw_dbe e = sq_class(c, rc);
            if (msg)
                snprintf(c->err, sizeof c->err, "%s", msg);
            sqlite3_free(msg);
            return e;
        }
        return SW_DBE_OK;
    }
    if (mysql_query(c->my, sql) != 0)
        return my_class(c);
    MYSQL_RES *mr = mysql_store_result(c->my);
    if (mr)
        mysql_free_result(mr);
    return SW_DBE_OK;
}
