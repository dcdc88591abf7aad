/* dbconn: one blocking database connection for a store thread (SQLite or
 * MariaDB/MySQL), with statement-level error classes the store needs
 * (duplicate key, connection lost, transaction aborted).
 *
 * Why not common/db: a TheSchwartz operation is several statements whose
 * later ones depend on the earlier ones' results (insert-or-find funcmap,
 * compare-and-set, replace_with's all-or-nothing), and group commit has to
 * roll back one operation without the others (savepoints). Until common/db
 * has atomic multi-statement transactions, the store runs its own
 * connection on its own thread. Parameters use common/db's db_value.
 * move to common/db when transactions land. */
#ifndef SW_DBCONN_H
#define SW_DBCONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/db.h"
#include "schwartz/schwartzd.h"

enum sw_dbe {
    SW_DBE_OK = 0,
    SW_DBE_DUP,      /* unique key violated (statement undone, transaction goes on) */
    SW_DBE_LOST,     /* connection unusable: reconnect later */
    SW_DBE_ABORT,    /* the whole transaction was rolled back (deadlock, lock timeout, busy) */
    SW_DBE_OTHER,    /* statement failed, transaction goes on */
};

struct sw_rows {
    int ncols;
    size_t nrows;
    size_t cap;
    char **cell;     /* row-major; NULL = SQL NULL; each NUL-ended */
    size_t *len;
};

struct sw_dbc;

struct sw_dbc *sw_dbc_open(const struct sw_dsn *dsn, const char *user, const char *pass, char *err, size_t errlen);
void sw_dbc_close(struct sw_dbc *c);
enum sw_driver sw_dbc_driver(const struct sw_dbc *c);

/* Run one statement with '?' parameters. rows (may be NULL) receives the
 * result set (freed by the caller with sw_rows_free). */
enum sw_dbe sw_dbc_query(struct sw_dbc *c, const char *sql, const struct db_value *p, int np, struct sw_rows *rows);
uint64_t sw_dbc_affected(const struct sw_dbc *c);
int64_t sw_dbc_last_id(const struct sw_dbc *c);
const char *sw_dbc_error(const struct sw_dbc *c);
/* Statement without parameters or result (BEGIN, COMMIT, schema). */
enum sw_dbe sw_dbc_exec(struct sw_dbc *c, const char *sql);

void sw_rows_free(struct sw_rows *r);
static inline const char *sw_cell(const struct sw_rows *r, size_t row, int col, size_t *len)
{
    size_t i = row * (size_t)r->ncols + (size_t)col;
    if (len)
        *len = r->len[i];
    return r->cell[i];
}
int64_t sw_cell_int(const struct sw_rows *r, size_t row, int col);

#endif
