/* store: the job databases — per configured DSN one common/db handle
 * (one connection for SQLite, db-connections for MySQL), TheSchwartz's
 * schema, and every operation on it.
 *
 * Hands work to threads: sessions queue sw_op requests with
 * sw_store_submit(), which hands each to db_run(): on a db worker thread,
 * the requests waiting together (up to group-max) run inside ONE
 * transaction (group commit: one fsync for the lot), each multi-statement
 * operation inside its own savepoint so a failing one is undone alone; the
 * group commits, and only then does each op come back to loop 0. "OK"
 * therefore always means committed. (An op alone that writes at most once
 * runs in autocommit; an SQLite group of grabs and reads only commits
 * without its fsync — see README "How it works".) A group the database
 * aborted (deadlock, busy) is run again by db, each op from its start.
 *
 * Semantics follow TheSchwartz 1.12 (see PROTOCOL.md): compare-and-set
 * grabs on grabbed_until with the database's clock, error rows and retry
 * policy in failed(), exit status kept for keep_exit_status_for.
 *
 * A database that fails at the connection level is marked dead for
 * retry-seconds; sessions skip it (sw_store_order) and its queued ops come
 * back with db_dead so inserts and grabs move on to another database. A
 * database down at start is opened all the same (db connect_later) and
 * used once it answers. */
#include "schwartz/schwartzd.h"
#include "common/db.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/evp.h>

#include "common/log.h"
#include "common/loop.h"

#define FC_MAX 4096
/* Candidates carry their argument when it is at most this long (one round
 * trip); longer ones are fetched after the claim, so a grab's memory stays
 * bounded by what it sends. */
#define SW_INLINE_ARG 65536u
#define ERROR_KEEP_SECONDS (7 * 86400)

/* What one db worker (one connection) of a database caches, touched only
 * by that worker's thread (db_conn_worker indexes it). Several per database
 * for MySQL (they run in parallel on the server); one for SQLite (its
 * writers serialize anyway). */
struct sw_worker {
    struct sw_store *store;
    int index; /* the database's */
    const char *hash, *dsn_text;
    struct db_conn *conn; /* the connection of the db_run under way */
    uint64_t epoch;       /* db_conn_epoch the funcmap cache belongs to */
    struct {
        char *name;
        uint32_t id;
    } fc[FC_MAX];
    int nfc;
    unsigned grab_rr;
    unsigned rnd;
    bool skip_locked; /* the server knows SELECT ... FOR UPDATE SKIP LOCKED */
    bool jobid_index; /* our (funcid, jobid) index exists: grabs scan it in order */
};

struct sw_store {
    int index;
    char *dsn_text;
    struct db_config cfg; /* from the DSN (strings owned by the store's copy) */
    char hash[33];
    char *user, *pass;
    struct db *db;
    struct sw_worker *w;
    int nw;
    _Atomic int64_t dead_until;
    _Atomic uint64_t n_ops, n_errors, n_reconnects;
    /* The database clock minus ours in microseconds (MySQL), one for all the
     * store's workers, measured every few seconds by whichever worker finds
     * it due: workers with offsets of their own (whole seconds, each rounded
     * its own way) disagreed by a second, and a job one worker inserted was
     * not yet due for another worker's grab. */
    _Atomic int64_t clock_offset_us;
    _Atomic int64_t clock_checked;
};

static struct sw_store *stores[SW_MAX_DBS];
static int nstores;

/* ---- policies ------------------------------------------------------------ */

#define POLICY_MAX 1024
static pthread_mutex_t policy_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *func;
    struct sw_policy p;
} policies[POLICY_MAX];
static int npolicies;
static _Atomic int policies_any;

void sw_policy_set(const char *func, const struct sw_policy *p)
{
    pthread_mutex_lock(&policy_mu);
    int i;
    for (i = 0; i < npolicies; i++)
        if (!strcmp(policies[i].func, func))
            break;
    if (i == npolicies) {
        if (npolicies == POLICY_MAX)
            i = POLICY_MAX - 1; /* bounded: the last slot is reused */
        else
            npolicies++;
        free(policies[i].func);
        policies[i].func = strdup(func);
    }
    if (policies[i].func)
        policies[i].p = *p;
    atomic_store(&policies_any, 1);
    pthread_mutex_unlock(&policy_mu);
}

bool sw_policy_get(const char *func, struct sw_policy *out)
{
    bool found = false;
    pthread_mutex_lock(&policy_mu);
    for (int i = 0; i < npolicies; i++)
        if (policies[i].func && !strcmp(policies[i].func, func)) {
            *out = policies[i].p;
            found = true;
            break;
        }
    pthread_mutex_unlock(&policy_mu);
    return found;
}

/* "FUNC max_retries=N retry_delay=S keep_exit_status_for=S" (config `policy`). */
int sw_policy_parse(const char *spec, char *err, size_t errlen)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "policy %s", spec);
    struct sw_req r;
    const char *why;
    if (strlen(spec) >= sizeof buf - 8 || sw_parse_line(buf, strlen(buf), false, 0, &r, &why) != SW_OK ||
        r.cmd != SW_CMD_POLICY) {
        snprintf(err, errlen, "policy: %s (FUNC max_retries=N retry_delay=S keep_exit_status_for=S)",
                 strlen(spec) >= sizeof buf - 8 ? "too long" : why);
        return -1;
    }
    struct sw_policy p = { r.max_retries.v, r.retry_delay.v, r.keep.v };
    sw_policy_set(r.func, &p);
    return 0;
}

/* ---- ops ------------------------------------------------------------------- */

struct sw_op *sw_op_new(enum sw_op_kind kind)
{
    struct sw_op *op = calloc(1, sizeof *op);
    if (op)
        op->kind = kind;
    return op;
}

void sw_jobspec_clear(struct sw_jobspec *j)
{
    free(j->func);
    free(j->arg);
    free(j->uniqkey);
    free(j->coalesce);
    memset(j, 0, sizeof *j);
}

void sw_op_free(struct sw_op *op)
{
    if (!op)
        return;
    for (int i = 0; i < op->njobs; i++)
        sw_jobspec_clear(&op->jobs[i]);
    free(op->jobs);
    for (int i = 0; i < op->nfuncs; i++)
        free(op->funcs[i]);
    free(op->funcs);
    free(op->coalesce);
    free(op->coalesce_prefix);
    free(op->message);
    free(op->ids);
    if (op->out)
        evbuffer_free(op->out);
    for (int i = 0; i < op->nq; i++)
        free(op->qrows[i].func);
    free(op->qrows);
    free(op);
}

/* ---- helpers on the store thread -------------------------------------------- */

#define Q(s, sql, ...)                                                                                                 \
    db_conn_query((s)->conn, (sql), (const struct db_value[]){ __VA_ARGS__ },                                          \
                  (int)(sizeof((const struct db_value[]){ __VA_ARGS__ }) / sizeof(struct db_value)), NULL)
#define QR(s, rows, sql, ...)                                                                                          \
    db_conn_query((s)->conn, (sql), (const struct db_value[]){ __VA_ARGS__ },                                          \
                  (int)(sizeof((const struct db_value[]){ __VA_ARGS__ }) / sizeof(struct db_value)), (rows))
#define TXT(s) DB_TEXTN((s), strlen(s))

static bool is_mysql(const struct sw_worker *s) { return s->store->cfg.driver == DB_MYSQL; }

static void fc_clear(struct sw_worker *s)
{
    for (int i = 0; i < s->nfc; i++)
        free(s->fc[i].name);
    s->nfc = 0;
}

/* funcname -> funcid in this database; create=true adds it to funcmap
 * (insert-or-find, as TheSchwartz::FuncMap does). Returns DB_OK with
 * *id = 0 when not found and not created. */
static enum db_err funcid_of(struct sw_worker *s, const char *name, bool create, uint32_t *id)
{
    for (int i = 0; i < s->nfc; i++)
        if (!strcmp(s->fc[i].name, name)) {
            *id = s->fc[i].id;
            return DB_OK;
        }
    *id = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct db_result rows;
        enum db_err e = QR(s, &rows, "SELECT funcid FROM funcmap WHERE funcname = ?", TXT(name));
        if (e != DB_OK)
            return e;
        if (rows.nrows) {
            *id = (uint32_t)db_cell_int(&rows, 0, 0);
            db_result_clear(&rows);
            if (s->nfc == FC_MAX)
                fc_clear(s);
            char *dup = strdup(name);
            if (dup) {
                s->fc[s->nfc].name = dup;
                s->fc[s->nfc].id = *id;
                s->nfc++;
            }
            return DB_OK;
        }
        db_result_clear(&rows);
        if (!create)
            return DB_OK;
        e = Q(s, "INSERT INTO funcmap (funcname) VALUES (?)", TXT(name));
        if (e != DB_OK && e != DB_EDUP)
            return e;
    }
    /* Created by someone else yet still invisible: never file a job under
     * funcid 0; the batch is rerun. */
    return DB_EABORT;
}

static enum db_err funcname_of(struct sw_worker *s, uint32_t id, char *name, size_t cap)
{
    for (int i = 0; i < s->nfc; i++)
        if (s->fc[i].id == id) {
            snprintf(name, cap, "%s", s->fc[i].name);
            return DB_OK;
        }
    struct db_result rows;
    enum db_err e = QR(s, &rows, "SELECT funcname FROM funcmap WHERE funcid = ?", DB_INT64(id));
    if (e != DB_OK)
        return e;
    snprintf(name, cap, "%s", rows.nrows ? db_cell(&rows, 0, 0, NULL) : "");
    db_result_clear(&rows);
    return DB_OK;
}

/* The database's clock, as TheSchwartz uses for grabs (clients' clocks may
 * be skewed). For MySQL the offset to our clock is read with
 * UNIX_TIMESTAMP() at most every 5 s instead of once per transaction. */
static int64_t realtime_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t db_now(struct sw_worker *s)
{
    struct sw_store *st = s->store;
    int64_t before = realtime_us();
    int64_t checked = atomic_load(&st->clock_checked);
    if (is_mysql(s) && before / 1000000 - checked >= 5 &&
        atomic_compare_exchange_strong(&st->clock_checked, &checked, before / 1000000)) {
        struct db_result rows;
        if (db_conn_query(s->conn, "SELECT UNIX_TIMESTAMP(NOW(6))", NULL, 0, &rows) == DB_OK && rows.nrows) {
            size_t len;
            const char *v = db_cell(&rows, 0, 0, &len);
            int64_t after = realtime_us();
            if (v) {
                char buf[40];
                snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), v);
                int64_t db_us = (int64_t)(strtold(buf, NULL) * 1000000.0L);
                atomic_store(&st->clock_offset_us, db_us - before / 2 - after / 2);
            }
        }
        db_result_clear(&rows);
    }
    int64_t now_us = realtime_us() + atomic_load(&st->clock_offset_us);
    return now_us / 1000000;
}

static void op_fail(struct sw_op *op, enum sw_err e, const char *msg)
{
    op->err = e;
    snprintf(op->errmsg, sizeof op->errmsg, "%.*s", (int)sizeof op->errmsg - 1, msg);
}

/* Map a database error onto the op; returns the class for the caller. */
static enum db_err op_dberr(struct sw_worker *s, struct sw_op *op, enum db_err e)
{
    if (e == DB_EDUP)
        op_fail(op, SW_E_DUPLICATE, "uniqkey already exists for this function");
    else
        op_fail(op, SW_E_DB_ERROR, db_conn_error(s->conn));
    return e;
}

static void render_job(struct evbuffer *out, const char *hash, uint64_t jobid, const char *func, const char *arg,
                       size_t arglen, int64_t failures)
{
    evbuffer_add_printf(out, "JOB %s-%llu %s %zu %lld\r\n", hash, (unsigned long long)jobid, func, arglen,
                        (long long)failures);
    evbuffer_add(out, arg, arglen);
    evbuffer_add(out, "\r\n", 2);
}

/* sql = head "?,?,...?" (n of them) tail, and p[i] = ids[i]: a query on a
 * list of jobids (n <= SW_MAX_GRAB; sql has room for 128 + 2 * n bytes). */
static void ids_query(char *sql, size_t cap, const char *head, const char *tail, const uint64_t *ids, int n,
                      struct db_value *p)
{
    int len = snprintf(sql, cap, "%s", head);
    for (int i = 0; i < n; i++) {
        len += snprintf(sql + len, cap - (size_t)len, i ? ",?" : "?");
        p[i] = DB_INT64(ids[i]);
    }
    snprintf(sql + len, cap - (size_t)len, "%s", tail);
}

/* A coalesce prefix as a LIKE pattern with '!' as the escape character
 * (out has room for 2 * strlen(prefix) + 2 bytes). */
static void like_prefix(const char *prefix, char *out)
{
    size_t o = 0;
    for (const char *c = prefix; *c; c++) {
        if (*c == '%' || *c == '_' || *c == '!')
            out[o++] = '!';
        out[o++] = *c;
    }
    out[o++] = '%';
    out[o] = '\0';
}

/* The one row of a statement on op's job ("... WHERE jobid = ?"): its first
 * cell in *val (may be NULL). No row: NOT_FOUND with `missing`. */
static enum db_err job_row(struct sw_worker *s, struct sw_op *op, const char *sql, const char *missing, int64_t *val)
{
    struct db_result rows;
    struct db_value id = DB_INT64(op->jobid);
    enum db_err e = db_conn_query(s->conn, sql, &id, 1, &rows);
    if (e != DB_OK)
        return op_dberr(s, op, e);
    size_t n = rows.nrows;
    if (n && val)
        *val = db_cell_int(&rows, 0, 0);
    db_result_clear(&rows);
    if (!n) {
        op_fail(op, SW_E_NOT_FOUND, missing);
        return DB_EOTHER;
    }
    return DB_OK;
}

/* Error rows per job (TheSchwartz's $job->failures). */
static enum db_err failures_of(struct sw_worker *s, const uint64_t *ids, int n, int64_t *out)
{
    if (n <= 0)
        return DB_OK;
    for (int i = 0; i < n; i++)
        out[i] = 0;
    char sql[128 + 2 * SW_MAX_GRAB];
    struct db_value *p = calloc((size_t)n, sizeof *p);
    if (!p)
        return DB_EOTHER;
    ids_query(sql, sizeof sql, "SELECT jobid, COUNT(*) FROM error WHERE jobid IN (", ") GROUP BY jobid", ids, n, p);
    struct db_result rows;
    enum db_err e = db_conn_query(s->conn, sql, p, n, &rows);
    free(p);
    if (e != DB_OK)
        return e;
    for (size_t r = 0; r < rows.nrows; r++) {
        uint64_t id = (uint64_t)db_cell_int(&rows, r, 0);
        for (int i = 0; i < n; i++)
            if (ids[i] == id)
                out[i] = db_cell_int(&rows, r, 1);
    }
    db_result_clear(&rows);
    return DB_OK;
}

/* Keep an exit status for keep seconds (TheSchwartz set_exit_status), and
 * now and then sweep expired ones as TheSchwartz does (10%, at most 1000). */
static enum db_err keep_exit_status(struct sw_worker *s, uint64_t jobid, uint32_t funcid, int64_t status, int64_t now,
                                    int64_t keep)
{
    enum db_err e = Q(s,
                      is_mysql(s) ? "REPLACE INTO exitstatus (jobid, funcid, status, completion_time, delete_after) "
                                    "VALUES (?, ?, ?, ?, ?)"
                                  : "INSERT OR REPLACE INTO exitstatus (jobid, funcid, status, completion_time, "
                                    "delete_after) VALUES (?, ?, ?, ?, ?)",
                      DB_INT64(jobid), DB_INT64(funcid), DB_INT64(status), DB_INT64(now), DB_INT64(now + keep));
    if (e != DB_OK)
        return e;
    s->rnd = s->rnd * 1103515245u + 12345u;
    if ((s->rnd >> 16) % 10 == 0)
        e = Q(s,
              is_mysql(s)
                  ? "DELETE FROM exitstatus WHERE delete_after < ? LIMIT 1000"
                  : "DELETE FROM exitstatus WHERE jobid IN (SELECT jobid FROM exitstatus WHERE delete_after < ? "
                    "LIMIT 1000)",
              DB_INT64(now));
    return e;
}

static int64_t policy_keep(struct sw_worker *s, struct sw_op *op, uint32_t funcid, struct sw_policy *pol, bool *have)
{
    *have = false;
    memset(pol, 0, sizeof *pol);
    if (atomic_load(&policies_any)) {
        char name[SW_MAX_NAME + 1];
        if (funcname_of(s, funcid, name, sizeof name) == DB_OK && name[0])
            *have = sw_policy_get(name, pol);
    }
    return op->keep.set ? op->keep.v : pol->keep_exit_status_for;
}

/* ---- the operations ----------------------------------------------------------- */

static enum db_err insert_jobs(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    if (op->njobs == 0)
        return DB_OK; /* replace_with H 0: the job just completes */
    if (!op->ids) {
        op->ids = calloc((size_t)op->njobs, sizeof *op->ids);
        if (!op->ids) {
            op_fail(op, SW_E_DB_ERROR, "out of memory");
            return DB_EOTHER;
        }
    }
    for (int i = 0; i < op->njobs; i++) {
        struct sw_jobspec *j = &op->jobs[i];
        uint32_t funcid;
        enum db_err e = funcid_of(s, j->func, true, &funcid);
        if (e != DB_OK)
            return op_dberr(s, op, e);
        struct db_value none = { .type = DB_NULL };
        e = Q(s,
              "INSERT INTO job (funcid, arg, uniqkey, insert_time, run_after, grabbed_until, priority, coalesce) "
              "VALUES (?, ?, ?, ?, ?, 0, ?, ?)",
              DB_INT64(funcid), DB_BLOBN(j->arg, j->arglen), j->uniqkey ? TXT(j->uniqkey) : none, DB_INT64(now),
              DB_INT64(j->run_after.set ? j->run_after.v : now), j->priority.set ? DB_INT64(j->priority.v) : none,
              j->coalesce ? TXT(j->coalesce) : none);
        if (e != DB_OK)
            return op_dberr(s, op, e);
        op->ids[i] = (uint64_t)db_conn_last_id(s->conn);
    }
    return DB_OK;
}

/* Render jobs ids[0..n) (in that order) with their arguments, fetched
 * here in chunks: callers select only LENGTH(arg) for candidates, so
 * memory stays bounded by what is sent. */
static enum db_err render_jobs(struct sw_worker *s, struct sw_op *op, const uint64_t *ids, const char *const *funcs,
                               const int64_t *fails, int n)
{
    for (int base = 0; base < n; base += SW_MAX_GRAB) {
        int m = n - base < SW_MAX_GRAB ? n - base : SW_MAX_GRAB;
        char sql[128 + 2 * SW_MAX_GRAB];
        struct db_value *p = calloc((size_t)m, sizeof *p);
        if (!p) {
            op_fail(op, SW_E_DB_ERROR, "out of memory");
            return DB_EOTHER;
        }
        ids_query(sql, sizeof sql, "SELECT jobid, arg FROM job WHERE jobid IN (", ")", ids + base, m, p);
        struct db_result args;
        enum db_err e = db_conn_query(s->conn, sql, p, m, &args);
        free(p);
        if (e != DB_OK)
            return op_dberr(s, op, e);
        for (int i = base; i < base + m; i++) {
            const char *arg = NULL;
            size_t alen = 0;
            for (size_t r = 0; r < args.nrows; r++)
                if ((uint64_t)db_cell_int(&args, r, 0) == ids[i]) {
                    arg = db_cell(&args, r, 1, &alen);
                    break;
                }
            render_job(op->out, s->hash, ids[i], funcs[i], arg ? arg : "", arg ? alen : 0, fails[i]);
            op->nfound++;
        }
        db_result_clear(&args);
    }
    return DB_OK;
}

struct cand {
    uint64_t jobid;
    int64_t grabbed_until;
    char *arg;
    size_t arglen;
    int f;
};

static enum db_err op_grab(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    uint32_t ids[SW_MAX_FUNCS];
    int fidx[SW_MAX_FUNCS], nf = 0;
    for (int i = 0; i < op->nfuncs; i++) {
        uint32_t id;
        enum db_err e = funcid_of(s, op->funcs[i], false, &id);
        if (e != DB_OK)
            return op_dberr(s, op, e);
        if (id) {
            ids[nf] = id;
            fidx[nf++] = i;
        }
    }
    if (!nf)
        return DB_OK;
    int want = op->max;
    /* One connection: our grabs never race each other, a few spare
     * candidates cover Perl workers. Several: the candidates are locked as
     * they are read, skipping rows another of our connections holds
     * (FOR UPDATE SKIP LOCKED), so parallel grabs neither collide nor
     * deadlock; without SKIP LOCKED, take more and shuffle them as
     * TheSchwartz does (a deadlock then reruns the batch). */
    bool parallel = s->store->nw > 1;
    bool skip_locked = parallel && s->skip_locked && db_conn_in_txn(s->conn);
    bool shuffle = parallel && !skip_locked;
    int spare = shuffle ? want * 3 + 4 : 4;
    int lim = want + spare < sw.cfg.batch_size ? want + spare : sw.cfg.batch_size;
    if (lim < want)
        lim = want;
    char sql[512];
    int len =
        snprintf(sql, sizeof sql,
                 "SELECT jobid, grabbed_until, LENGTH(arg), (SELECT COUNT(*) FROM error e WHERE e.jobid = job.jobid), "
                 "CASE WHEN LENGTH(arg) <= %u THEN arg END "
                 "FROM job %s WHERE funcid = ? AND run_after <= ? AND grabbed_until <= ?",
                 SW_INLINE_ARG,
                 !s->jobid_index || op->prioritize ? ""
                 : is_mysql(s)                     ? "FORCE INDEX (sw_job_funcid_jobid)"
                                                   : "INDEXED BY sw_job_funcid_jobid");
    if (op->floor.set)
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND priority >= ?");
    if (op->coalesce)
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND coalesce = ?");
    else if (op->coalesce_prefix)
        len += snprintf(sql + len, sizeof sql - (size_t)len, " AND coalesce LIKE ? ESCAPE '!'");
    snprintf(sql + len, sizeof sql - (size_t)len, " ORDER BY %sjobid LIMIT ?%s",
             op->prioritize ? "priority DESC, " : "", skip_locked ? " FOR UPDATE SKIP LOCKED" : "");
    char like[2 * SW_MAX_NAME + 2];
    if (op->coalesce_prefix)
        like_prefix(op->coalesce_prefix, like);
    struct db_result rows[SW_MAX_FUNCS];
    memset(rows, 0, sizeof rows);
    enum db_err e = DB_OK;
    unsigned start = s->grab_rr++;
    for (int k = 0; k < nf; k++) {
        struct db_value p[6];
        int np = 0;
        p[np++] = DB_INT64(ids[k]);
        p[np++] = DB_INT64(now);
        p[np++] = DB_INT64(now);
        if (op->floor.set)
            p[np++] = DB_INT64(op->floor.v);
        if (op->coalesce)
            p[np++] = TXT(op->coalesce);
        else if (op->coalesce_prefix)
            p[np++] = TXT(like);
        p[np++] = DB_INT64(lim);
        e = db_conn_query(s->conn, sql, p, np, &rows[k]);
        if (e != DB_OK) {
            op_dberr(s, op, e);
            goto out;
        }
    }
    size_t perm[SW_MAX_FUNCS][64];
    for (int k = 0; k < nf; k++) {
        size_t n = rows[k].nrows < 64 ? rows[k].nrows : 64;
        for (size_t r = 0; r < n; r++)
            perm[k][r] = r;
        for (size_t r = n; shuffle && r > 1; r--) {
            s->rnd = s->rnd * 1103515245u + 12345u;
            size_t j = (s->rnd >> 8) % r, t = perm[k][r - 1];
            perm[k][r - 1] = perm[k][j];
            perm[k][j] = t;
        }
    }
    /* Round-robin over the functions (starting at a rotating one) so a
     * small queue is served while a big one has work. */
    uint64_t got[SW_MAX_GRAB] = { 0 };
    int gotf[SW_MAX_GRAB];
    size_t gotrow[SW_MAX_GRAB];
    int ngot = 0;
    size_t bytes = 0;
    for (size_t r = 0; ngot < want && bytes < SW_MAX_REPLY; r++) {
        bool any = false;
        for (int kk = 0; kk < nf && ngot < want && bytes < SW_MAX_REPLY; kk++) {
            int k = (int)((start + (unsigned)kk) % (unsigned)nf);
            if (r >= rows[k].nrows)
                continue;
            any = true;
            size_t row = r < 64 ? perm[k][r] : r;
            uint64_t jobid = (uint64_t)db_cell_int(&rows[k], row, 0);
            int64_t old = db_cell_int(&rows[k], row, 1);
            /* Compare-and-set, as TheSchwartz: lose the race -> next candidate. */
            e = Q(s, "UPDATE job SET grabbed_until = ? WHERE jobid = ? AND grabbed_until = ?",
                  DB_INT64(now + op->grab_for), DB_INT64(jobid), DB_INT64(old));
            if (e != DB_OK) {
                op_dberr(s, op, e);
                goto out;
            }
            if (db_conn_affected(s->conn) != 1)
                continue;
            got[ngot] = jobid;
            gotf[ngot] = k;
            gotrow[ngot] = row;
            ngot++;
            bytes += (size_t)db_cell_int(&rows[k], row, 2);
        }
        if (!any)
            break;
    }
    {
        /* small arguments came with the candidates; fetch the others */
        const char *fn[SW_MAX_GRAB];
        int64_t fl[SW_MAX_GRAB];
        uint64_t big[SW_MAX_GRAB];
        int nbig = 0;
        op->nfound = 0;
        for (int i = 0; i < ngot; i++) {
            size_t alen;
            const char *arg = db_cell(&rows[gotf[i]], gotrow[i], 4, &alen);
            int64_t full = db_cell_int(&rows[gotf[i]], gotrow[i], 2);
            if (arg || full == 0) {
                render_job(op->out, s->hash, got[i], op->funcs[fidx[gotf[i]]], arg ? arg : "", arg ? alen : 0,
                           db_cell_int(&rows[gotf[i]], gotrow[i], 3));
                op->nfound++;
                continue;
            }
            fn[nbig] = op->funcs[fidx[gotf[i]]];
            fl[nbig] = db_cell_int(&rows[gotf[i]], gotrow[i], 3);
            big[nbig++] = got[i];
        }
        e = render_jobs(s, op, big, fn, fl, nbig);
    }
out:
    for (int k = 0; k < nf; k++)
        db_result_clear(&rows[k]);
    return e;
}

/* touch: a worker still on the job extends its lease (from now). Only a
 * lease that has not run out can be extended: once it has, someone else
 * may hold the job. */
static enum db_err op_touch(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    enum db_err e = Q(s, "UPDATE job SET grabbed_until = ? WHERE jobid = ? AND grabbed_until > ?",
                      DB_INT64(now + op->grab_for), DB_INT64(op->jobid), DB_INT64(now));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    /* rows matched, on MySQL too (db connects with CLIENT_FOUND_ROWS) */
    if (db_conn_affected(s->conn) == 0) {
        op_fail(op, SW_E_NOT_FOUND, "no such job, or its lease ran out");
        return DB_EOTHER;
    }
    return DB_OK;
}

/* grab_job: this job, if it exists, may run now and nobody holds it. */
static enum db_err op_grab_job(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    struct db_result rows;
    enum db_err e = QR(s, &rows,
                       "SELECT j.grabbed_until, f.funcname, (SELECT COUNT(*) FROM error e WHERE e.jobid = j.jobid) "
                       "FROM job j LEFT JOIN funcmap f ON f.funcid = j.funcid WHERE j.jobid = ?",
                       DB_INT64(op->jobid));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    if (!rows.nrows) {
        db_result_clear(&rows);
        op_fail(op, SW_E_NOT_FOUND, "no such job");
        return DB_EOTHER;
    }
    int64_t old = db_cell_int(&rows, 0, 0);
    char func[SW_MAX_NAME + 1];
    snprintf(func, sizeof func, "%s", db_cell(&rows, 0, 1, NULL) ? db_cell(&rows, 0, 1, NULL) : "");
    int64_t fails = db_cell_int(&rows, 0, 2);
    db_result_clear(&rows);
    if (old > now)
        return DB_OK; /* held by someone: no job */
    e = Q(s, "UPDATE job SET grabbed_until = ? WHERE jobid = ? AND grabbed_until = ?", DB_INT64(now + op->grab_for),
          DB_INT64(op->jobid), DB_INT64(old));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    if (db_conn_affected(s->conn) != 1)
        return DB_OK; /* lost the race */
    const char *fn[1] = { func };
    return render_jobs(s, op, &op->jobid, fn, &fails, 1);
}

static enum db_err op_completed(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    int64_t fid;
    enum db_err e =
        job_row(s, op, "DELETE FROM job WHERE jobid = ? RETURNING funcid", "no such job (finished already?)", &fid);
    if (e != DB_OK)
        return e;
    uint32_t funcid = (uint32_t)fid;
    struct sw_policy pol;
    bool have;
    int64_t keep = policy_keep(s, op, funcid, &pol, &have);
    if (keep > 0 && (e = keep_exit_status(s, op->jobid, funcid, 0, now, keep)) != DB_OK)
        return op_dberr(s, op, e);
    return DB_OK;
}

static enum db_err op_failed(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    int64_t fid;
    enum db_err e = job_row(s, op, "SELECT funcid FROM job WHERE jobid = ?", "no such job (finished already?)", &fid);
    if (e != DB_OK)
        return e;
    uint32_t funcid = (uint32_t)fid;
    const char *msg = op->message ? op->message : "";
    e = Q(s, "INSERT INTO error (error_time, jobid, message, funcid) VALUES (?, ?, ?, ?)", DB_INT64(now),
          DB_INT64(op->jobid), TXT(msg), DB_INT64(funcid));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    /* TheSchwartz trims errors older than a week on each failure. */
    e = Q(s,
          is_mysql(s) ? "DELETE FROM error WHERE error_time < ? LIMIT 1000"
                      : "DELETE FROM error WHERE rowid IN (SELECT rowid FROM error WHERE error_time < ? LIMIT 1000)",
          DB_INT64(now - ERROR_KEEP_SECONDS));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    int64_t failures;
    uint64_t id = op->jobid;
    if ((e = failures_of(s, &id, 1, &failures)) != DB_OK)
        return op_dberr(s, op, e);
    struct sw_policy pol;
    bool have;
    int64_t keep = policy_keep(s, op, funcid, &pol, &have);
    int64_t max_retries = op->max_retries.set ? op->max_retries.v : pol.max_retries;
    int64_t delay = op->retry_delay.set ? op->retry_delay.v : pol.retry_delay;
    if (!op->permanent && max_retries >= failures) {
        if (delay > 0)
            e = Q(s, "UPDATE job SET grabbed_until = 0, run_after = ? WHERE jobid = ?", DB_INT64(now + delay),
                  DB_INT64(op->jobid));
        else
            e = Q(s, "UPDATE job SET grabbed_until = 0 WHERE jobid = ?", DB_INT64(op->jobid));
        if (e != DB_OK)
            return op_dberr(s, op, e);
        op->retried = true;
        return DB_OK;
    }
    int64_t status = op->exit_status.set && op->exit_status.v ? op->exit_status.v : 1;
    if (keep > 0 && (e = keep_exit_status(s, op->jobid, funcid, status, now, keep)) != DB_OK)
        return op_dberr(s, op, e);
    if ((e = Q(s, "DELETE FROM job WHERE jobid = ?", DB_INT64(op->jobid))) != DB_OK)
        return op_dberr(s, op, e);
    return DB_OK;
}

static enum db_err op_declined(struct sw_worker *s, struct sw_op *op)
{
    enum db_err e;
    if (op->run_after.set)
        e = Q(s, "UPDATE job SET run_after = ?, grabbed_until = 0 WHERE jobid = ?", DB_INT64(op->run_after.v),
              DB_INT64(op->jobid));
    else
        e = Q(s, "UPDATE job SET grabbed_until = grabbed_until WHERE jobid = ?", DB_INT64(op->jobid));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    /* rows matched, on MySQL too (db connects with CLIENT_FOUND_ROWS) */
    if (db_conn_affected(s->conn) == 0) {
        op_fail(op, SW_E_NOT_FOUND, "no such job (finished already?)");
        return DB_EOTHER;
    }
    return DB_OK;
}

/* replace_with: the new jobs and the end of the old one in one savepoint. */
static enum db_err op_replace(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    enum db_err e = insert_jobs(s, op, now);
    if (e != DB_OK)
        return e;
    if ((e = op_completed(s, op, now)) != DB_OK)
        return e;
    if (sw.cfg.test_fault && !strcmp(sw.cfg.test_fault, "replace_with")) {
        op_fail(op, SW_E_FAULT, "test fault before commit: replace_with rolled back");
        return DB_EOTHER;
    }
    return DB_OK;
}

static enum db_err op_list(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    (void)now;
    uint32_t funcid;
    enum db_err e = funcid_of(s, op->funcs[0], false, &funcid);
    if (e != DB_OK)
        return op_dberr(s, op, e);
    if (!funcid)
        return DB_OK;
    char like[2 * SW_MAX_NAME + 2];
    const char *sql = "SELECT jobid, LENGTH(arg) FROM job WHERE funcid = ? ORDER BY jobid LIMIT ?";
    struct db_value p[3] = { DB_INT64(funcid), DB_INT64(op->limit.v), DB_INT64(0) };
    int np = 2;
    if (op->coalesce) {
        sql = "SELECT jobid, LENGTH(arg) FROM job WHERE funcid = ? AND coalesce = ? ORDER BY jobid LIMIT ?";
        p[1] = TXT(op->coalesce);
        p[2] = DB_INT64(op->limit.v);
        np = 3;
    } else if (op->coalesce_prefix) {
        like_prefix(op->coalesce_prefix, like);
        sql =
            "SELECT jobid, LENGTH(arg) FROM job WHERE funcid = ? AND coalesce LIKE ? ESCAPE '!' ORDER BY jobid LIMIT ?";
        p[1] = TXT(like);
        p[2] = DB_INT64(op->limit.v);
        np = 3;
    }
    struct db_result rows;
    if ((e = db_conn_query(s->conn, sql, p, np, &rows)) != DB_OK)
        return op_dberr(s, op, e);
    uint64_t *ids = calloc(rows.nrows + 1, sizeof *ids);
    int64_t *fails = calloc(rows.nrows + 1, sizeof *fails);
    if (!ids || !fails) {
        free(ids);
        free(fails);
        db_result_clear(&rows);
        op_fail(op, SW_E_DB_ERROR, "out of memory");
        return DB_EOTHER;
    }
    for (size_t r = 0; r < rows.nrows; r++)
        ids[r] = (uint64_t)db_cell_int(&rows, r, 0);
    /* failures in chunks the IN list allows */
    for (size_t r = 0; r < rows.nrows && e == DB_OK; r += SW_MAX_GRAB) {
        int n = (int)(rows.nrows - r < SW_MAX_GRAB ? rows.nrows - r : SW_MAX_GRAB);
        e = failures_of(s, ids + r, n, fails + r);
    }
    if (e == DB_OK) {
        /* as many as fit in SW_MAX_REPLY (at least one) */
        size_t n = 0, bytes = 0;
        while (n < rows.nrows && (n == 0 || bytes < SW_MAX_REPLY))
            bytes += (size_t)db_cell_int(&rows, n++, 1);
        const char **fn = calloc(n + 1, sizeof *fn);
        if (!fn) {
            op_fail(op, SW_E_DB_ERROR, "out of memory");
            e = DB_EOTHER;
        } else {
            for (size_t r = 0; r < n; r++)
                fn[r] = op->funcs[0];
            e = render_jobs(s, op, ids, fn, fails, (int)n);
            free(fn);
        }
    } else
        op_dberr(s, op, e);
    free(ids);
    free(fails);
    db_result_clear(&rows);
    return e;
}

static enum db_err op_inspect(struct sw_worker *s, struct sw_op *op)
{
    struct db_result rows;
    enum db_err e = QR(s, &rows,
                       "SELECT j.jobid, f.funcname, j.arg, j.uniqkey, j.insert_time, j.run_after, j.grabbed_until, "
                       "j.priority, j.coalesce FROM job j LEFT JOIN funcmap f ON f.funcid = j.funcid WHERE j.jobid = ?",
                       DB_INT64(op->jobid));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    if (!rows.nrows) {
        db_result_clear(&rows);
        op_fail(op, SW_E_NOT_FOUND, "no such job");
        return DB_EOTHER;
    }
    int64_t fails;
    uint64_t id = op->jobid;
    if ((e = failures_of(s, &id, 1, &fails)) != DB_OK) {
        db_result_clear(&rows);
        return op_dberr(s, op, e);
    }
    size_t alen;
    const char *arg = db_cell(&rows, 0, 2, &alen);
    const char *fn = db_cell(&rows, 0, 1, NULL);
    render_job(op->out, s->hash, op->jobid, fn ? fn : "", arg ? arg : "", arg ? alen : 0, fails);
    static const char *names[] = { "uniqkey", "insert_time", "run_after", "grabbed_until", "priority", "coalesce" };
    for (int c = 0; c < 6; c++) {
        const char *v = db_cell(&rows, 0, 3 + c, NULL);
        if (v)
            evbuffer_add_printf(op->out, "FIELD %s %s\r\n", names[c], v);
    }
    db_result_clear(&rows);
    if ((e = QR(s, &rows, "SELECT error_time, message FROM error WHERE jobid = ? ORDER BY error_time",
                DB_INT64(op->jobid))) != DB_OK)
        return op_dberr(s, op, e);
    for (size_t r = 0; r < rows.nrows; r++) {
        const char *m = db_cell(&rows, r, 1, NULL);
        evbuffer_add_printf(op->out, "ERROR %s :", db_cell(&rows, r, 0, NULL) ? db_cell(&rows, r, 0, NULL) : "0");
        /* messages are single-line on the wire */
        for (const char *c = m ? m : ""; *c; c++)
            evbuffer_add(op->out, (*c == '\r' || *c == '\n') ? " " : c, 1);
        evbuffer_add(op->out, "\r\n", 2);
    }
    db_result_clear(&rows);
    return DB_OK;
}

static enum db_err op_status(struct sw_worker *s, struct sw_op *op)
{
    struct db_result rows;
    enum db_err e = QR(s, &rows, "SELECT status, completion_time FROM exitstatus WHERE jobid = ?", DB_INT64(op->jobid));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    if (rows.nrows)
        evbuffer_add_printf(op->out, "STATUS %s %s\r\n", db_cell(&rows, 0, 0, NULL) ? db_cell(&rows, 0, 0, NULL) : "0",
                            db_cell(&rows, 0, 1, NULL) ? db_cell(&rows, 0, 1, NULL) : "0");
    else
        evbuffer_add_printf(op->out, "STATUS none\r\n");
    db_result_clear(&rows);
    return DB_OK;
}

static enum db_err op_funcmap(struct sw_worker *s, struct sw_op *op)
{
    struct db_result rows;
    enum db_err e = db_conn_query(s->conn, "SELECT funcid, funcname FROM funcmap ORDER BY funcid", NULL, 0, &rows);
    if (e != DB_OK)
        return op_dberr(s, op, e);
    for (size_t r = 0; r < rows.nrows; r++)
        evbuffer_add_printf(op->out, "FUNC %d %s %s\r\n", s->index, db_cell(&rows, r, 0, NULL),
                            db_cell(&rows, r, 1, NULL) ? db_cell(&rows, r, 1, NULL) : "");
    db_result_clear(&rows);
    return DB_OK;
}

static struct sw_qrow *qrow_for(struct sw_op *op, const char *func)
{
    for (int i = 0; i < op->nq; i++)
        if (!strcmp(op->qrows[i].func, func))
            return &op->qrows[i];
    struct sw_qrow *q = realloc(op->qrows, (size_t)(op->nq + 1) * sizeof *q);
    if (!q)
        return NULL;
    op->qrows = q;
    q = &op->qrows[op->nq];
    memset(q, 0, sizeof *q);
    q->func = strdup(func);
    if (!q->func)
        return NULL;
    op->nq++;
    return q;
}

static enum db_err op_queues(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    struct db_result rows;
    enum db_err e = QR(s, &rows,
                       "SELECT f.funcname, SUM(CASE WHEN j.run_after <= ? AND j.grabbed_until <= ? THEN 1 ELSE 0 END), "
                       "SUM(CASE WHEN j.grabbed_until > ? THEN 1 ELSE 0 END) FROM funcmap f LEFT JOIN job j ON "
                       "j.funcid = f.funcid GROUP BY f.funcname",
                       DB_INT64(now), DB_INT64(now), DB_INT64(now));
    if (e != DB_OK)
        return op_dberr(s, op, e);
    for (size_t r = 0; r < rows.nrows && op->nq < 100000; r++) {
        struct sw_qrow *q = qrow_for(op, db_cell(&rows, r, 0, NULL) ? db_cell(&rows, r, 0, NULL) : "");
        if (q) {
            q->ready += (uint64_t)db_cell_int(&rows, r, 1);
            q->running += (uint64_t)db_cell_int(&rows, r, 2);
        }
    }
    db_result_clear(&rows);
    e = db_conn_query(
        s->conn, "SELECT f.funcname, COUNT(*) FROM error e JOIN funcmap f ON f.funcid = e.funcid GROUP BY f.funcname",
        NULL, 0, &rows);
    if (e != DB_OK)
        return op_dberr(s, op, e);
    for (size_t r = 0; r < rows.nrows; r++) {
        struct sw_qrow *q = qrow_for(op, db_cell(&rows, r, 0, NULL) ? db_cell(&rows, r, 0, NULL) : "");
        if (q)
            q->failed += (uint64_t)db_cell_int(&rows, r, 1);
    }
    db_result_clear(&rows);
    return DB_OK;
}

static bool needs_savepoint(const struct sw_op *op)
{
    /* completed is one DELETE unless an exit status is kept too */
    return (op->kind == SW_OP_INSERT && op->njobs > 1) || op->kind == SW_OP_REPLACE || op->kind == SW_OP_FAILED ||
           (op->kind == SW_OP_COMPLETED && ((op->keep.set && op->keep.v > 0) || atomic_load(&policies_any)));
}

static enum db_err run_op(struct sw_worker *s, struct sw_op *op, int64_t now)
{
    switch (op->kind) {
    case SW_OP_INSERT: return insert_jobs(s, op, now);
    case SW_OP_GRAB: return op_grab(s, op, now);
    case SW_OP_COMPLETED: return op_completed(s, op, now);
    case SW_OP_FAILED: return op_failed(s, op, now);
    case SW_OP_DECLINED: return op_declined(s, op);
    case SW_OP_REPLACE: return op_replace(s, op, now);
    case SW_OP_LIST: return op_list(s, op, now);
    case SW_OP_INSPECT: return op_inspect(s, op);
    case SW_OP_STATUS: return op_status(s, op);
    case SW_OP_FUNCMAP: return op_funcmap(s, op);
    case SW_OP_QUEUES: return op_queues(s, op, now);
    case SW_OP_GRAB_JOB: return op_grab_job(s, op, now);
    case SW_OP_TOUCH: return op_touch(s, op, now);
    }
    return DB_EOTHER;
}

/* ---- schema ---------------------------------------------------------------------- */

/* TheSchwartz's doc/schema.sql, created if missing (a Perl install's tables
 * are used as they are). */
static const char *const schema_mysql[] = {
    "CREATE TABLE IF NOT EXISTS funcmap (funcid INT UNSIGNED PRIMARY KEY NOT NULL AUTO_INCREMENT, "
    "funcname VARCHAR(255) NOT NULL, UNIQUE(funcname)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS job (jobid BIGINT UNSIGNED PRIMARY KEY NOT NULL AUTO_INCREMENT, "
    "funcid INT UNSIGNED NOT NULL, arg MEDIUMBLOB, uniqkey VARCHAR(255) NULL, insert_time INTEGER UNSIGNED, "
    "run_after INTEGER UNSIGNED NOT NULL, grabbed_until INTEGER UNSIGNED NOT NULL, priority SMALLINT UNSIGNED, "
    "coalesce VARCHAR(255), INDEX (funcid, run_after), UNIQUE(funcid, uniqkey), INDEX (funcid, coalesce)) "
    "ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS note (jobid BIGINT UNSIGNED NOT NULL, notekey VARCHAR(255), "
    "PRIMARY KEY (jobid, notekey), value MEDIUMBLOB) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS error (error_time INTEGER UNSIGNED NOT NULL, jobid BIGINT UNSIGNED NOT NULL, "
    "message VARCHAR(255) NOT NULL, funcid INT UNSIGNED NOT NULL DEFAULT 0, INDEX (funcid, error_time), "
    "INDEX (error_time), INDEX (jobid)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS exitstatus (jobid BIGINT UNSIGNED PRIMARY KEY NOT NULL, "
    "funcid INT UNSIGNED NOT NULL DEFAULT 0, status SMALLINT UNSIGNED, completion_time INTEGER UNSIGNED, "
    "delete_after INTEGER UNSIGNED, INDEX (funcid), INDEX (delete_after)) ENGINE=InnoDB",
    NULL,
};

/* Its SQLite variant (t/schema-sqlite.sql), plus the note table and the
 * secondary indexes of the MySQL schema (Perl does not mind them). */
static const char *const schema_sqlite[] = {
    "CREATE TABLE IF NOT EXISTS funcmap (funcid INTEGER PRIMARY KEY AUTOINCREMENT, "
    "funcname VARCHAR(255) NOT NULL, UNIQUE(funcname))",
    "CREATE TABLE IF NOT EXISTS job (jobid INTEGER PRIMARY KEY AUTOINCREMENT, funcid INTEGER UNSIGNED NOT NULL, "
    "arg MEDIUMBLOB, uniqkey VARCHAR(255) NULL, insert_time INTEGER UNSIGNED, run_after INTEGER UNSIGNED NOT NULL, "
    "grabbed_until INTEGER UNSIGNED NOT NULL, priority SMALLINT UNSIGNED, coalesce VARCHAR(255), "
    "UNIQUE(funcid, uniqkey))",
    "CREATE TABLE IF NOT EXISTS note (jobid BIGINT UNSIGNED NOT NULL, notekey VARCHAR(255), value MEDIUMBLOB, "
    "PRIMARY KEY (jobid, notekey))",
    "CREATE TABLE IF NOT EXISTS error (error_time INTEGER UNSIGNED NOT NULL, jobid INTEGER NOT NULL, "
    "message VARCHAR(255) NOT NULL, funcid INT UNSIGNED NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS exitstatus (jobid INTEGER PRIMARY KEY NOT NULL, funcid INT UNSIGNED NOT NULL DEFAULT "
    "0, "
    "status SMALLINT UNSIGNED, completion_time INTEGER UNSIGNED, delete_after INTEGER UNSIGNED)",
    "CREATE INDEX IF NOT EXISTS job_funcid_runafter ON job (funcid, run_after)",
    "CREATE INDEX IF NOT EXISTS job_funcid_coalesce ON job (funcid, coalesce)",
    "CREATE INDEX IF NOT EXISTS error_funcid_time ON error (funcid, error_time)",
    "CREATE INDEX IF NOT EXISTS error_time ON error (error_time)",
    "CREATE INDEX IF NOT EXISTS error_jobid ON error (jobid)",
    "CREATE INDEX IF NOT EXISTS exitstatus_funcid ON exitstatus (funcid)",
    "CREATE INDEX IF NOT EXISTS exitstatus_delete_after ON exitstatus (delete_after)",
    NULL,
};

/* db's on_connect hook, on the worker's thread after every connect: the
 * session settings and the schema. */
static int sw_on_connect(struct db_conn *c, void *arg)
{
    struct sw_store *st = arg;
    int k = db_conn_worker(c);
    if (k < 0 || k >= st->nw)
        return -1;
    struct sw_worker *s = &st->w[k];
    s->conn = c;
    /* MySQL: bytes in, bytes out (a job's arg is opaque); READ COMMITTED:
     * each statement sees what others committed (a funcmap row another
     * connection just added, the newest lease), and InnoDB takes no gap
     * locks, so parallel grabs deadlock less. */
    if (is_mysql(s) && (db_conn_exec(c, "SET NAMES binary") != DB_OK ||
                        db_conn_exec(c, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED") != DB_OK)) {
        log_warn("schwartzd: database %d (%s): %s", s->index, s->dsn_text, db_conn_error(c));
        return -1;
    }
    for (const char *const *q = is_mysql(s) ? schema_mysql : schema_sqlite; *q; q++)
        if (db_conn_exec(c, *q) != DB_OK) {
            log_warn("schwartzd: database %d: schema: %s", s->index, db_conn_error(c));
            return -1;
        }
    fc_clear(s);
    atomic_store(&s->store->clock_checked, 0);
    /* Our one addition to TheSchwartz's schema: (funcid, jobid), so a grab
     * reads a function's runnable jobs in jobid order and stops at its
     * LIMIT instead of sorting every job of the function (the
     * (funcid, run_after) index cannot give jobid order). Best effort: a
     * server that refuses it keeps TheSchwartz's plan. */
    s->jobid_index = db_conn_exec(c, "CREATE INDEX IF NOT EXISTS sw_job_funcid_jobid ON job (funcid, jobid)") == DB_OK;
    if (!s->jobid_index)
        log_warn("schwartzd: database %d: no (funcid, jobid) index (%s): grabs sort", s->index, db_conn_error(c));
    /* MariaDB >= 10.6 and MySQL >= 8.0 take SKIP LOCKED. */
    s->skip_locked =
        is_mysql(s) && db_conn_exec(c, "SELECT jobid FROM job WHERE jobid = 0 FOR UPDATE SKIP LOCKED") == DB_OK;
    atomic_fetch_add(&st->n_reconnects, 1);
    log_info("schwartzd: database %d (%s) connected", s->index, s->dsn_text);
    return 0;
}

/* On loop 0: the database failed at the connection level; skip it for
 * retry-seconds (db reconnects when it is next used). */
static void mark_dead(struct sw_store *st, const char *why)
{
    if (sw_store_alive(st))
        log_warn("schwartzd: database %d (%s) marked dead for %ds: %s", st->index, st->dsn_text, sw.cfg.retry_seconds,
                 why);
    atomic_store(&st->dead_until, (int64_t)time(NULL) + sw.cfg.retry_seconds);
}

static void op_reset(struct sw_op *op)
{
    op->err = SW_OK;
    op->errmsg[0] = '\0';
    op->db_dead = false;
    op->nfound = 0;
    op->retried = false;
    if (op->out)
        evbuffer_drain(op->out, evbuffer_get_length(op->out));
    for (int i = 0; i < op->nq; i++)
        free(op->qrows[i].func);
    free(op->qrows);
    op->qrows = NULL;
    op->nq = 0;
}

/* Alone (not in a group), an op that writes with at most one statement (or
 * only reads) needs no BEGIN/COMMIT round trips: in autocommit the
 * statement is its own durable transaction. */
static bool autocommit_ok(const struct sw_store *st, const struct sw_op *op)
{
    switch (op->kind) {
    /* MySQL: a one-job grab is a select and one compare-and-set, which
     * commits by itself (shuffled candidates keep our connections apart) */
    case SW_OP_GRAB: return st->cfg.driver == DB_MYSQL && op->max == 1;
    case SW_OP_INSERT: return op->njobs == 1; /* funcmap insert-or-find is idempotent on its own */
    case SW_OP_COMPLETED: return !needs_savepoint(op);
    case SW_OP_TOUCH: return true;
    case SW_OP_DECLINED:
    case SW_OP_LIST:
    case SW_OP_INSPECT:
    case SW_OP_STATUS:
    case SW_OP_FUNCMAP:
    case SW_OP_QUEUES: return true;
    default: return false;
    }
}

/* SQLite: a group of grabs only (and reads) commits without its own fsync.
 * A lease lost to a power cut only lets the job run again, which a lease
 * allows anyway; the next durable commit syncs it too. Inserts,
 * completions, failures and replacements always fsync. */
static bool no_fsync_ok(const struct sw_op *op)
{
    return op->kind == SW_OP_GRAB || op->kind == SW_OP_GRAB_JOB || op->kind == SW_OP_LIST ||
           op->kind == SW_OP_INSPECT || op->kind == SW_OP_STATUS || op->kind == SW_OP_FUNCMAP ||
           op->kind == SW_OP_QUEUES;
}

/* db_run callback, on a db worker thread: one op, from its start (db runs
 * it again when the database aborted its group). */
static int run_on_worker(struct db_conn *c, void *ctx)
{
    struct sw_op *op = ctx;
    struct sw_store *st = op->store;
    struct sw_worker *s = &st->w[db_conn_worker(c)];
    s->conn = c;
    op_reset(op);
    if (s->epoch != db_conn_epoch(c)) {
        /* reconnected, or a rollback undid funcmap rows we may have cached */
        fc_clear(s);
        s->epoch = db_conn_epoch(c);
    }
    atomic_fetch_add(&st->n_ops, 1);
    enum db_err e = run_op(s, op, db_now(s));
    if (e == DB_OK)
        return 0;
    op->db_dead = e == DB_ELOST;
    if (op->err == SW_OK)
        op_fail(op, SW_E_DB_ERROR, db_conn_error(c));
    fc_clear(s); /* a funcmap row made inside its savepoint is gone */
    db_run_fail(c, op->errmsg);
    return -1;
}

/* db's done callback, on loop 0, once the op's group committed (or not). */
static void op_finished(struct db_result *res, void *arg)
{
    struct sw_op *op = arg;
    struct sw_store *st = op->store;
    if (res->status != 0 && op->err == SW_OK) {
        /* its own work went well, but its group did not commit: nothing of
         * it stands */
        op_reset(op);
        op->db_dead = res->lost;
        op_fail(op, SW_E_DB_ERROR, res->error);
    }
    if (op->db_dead) {
        op->err = SW_E_NO_DATABASE;
        mark_dead(st, op->errmsg);
    }
    if (op->err != SW_OK)
        atomic_fetch_add(&st->n_errors, 1);
    op->done(op);
}

/* On loop 0: an op db would not take. */
static void deliver_refused(void *arg)
{
    struct sw_op *op = arg;
    atomic_fetch_add(&op->store->n_errors, 1);
    op->done(op);
}

/* ---- public ----------------------------------------------------------------------- */

static void md5_hex(const char *in, char out[33])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_Digest(in, strlen(in), md, &n, EVP_md5(), NULL);
    for (unsigned i = 0; i < n && i < 16; i++)
        sprintf(out + 2 * i, "%02x", md[i]);
    out[32] = '\0';
}

int sw_stores_open(char **dsns, int n, const char *user, const char *pass)
{
    for (int i = 0; i < n; i++) {
        struct sw_store *s = calloc(1, sizeof *s);
        if (!s)
            return -1;
        char err[256];
        s->user = strdup(user ? user : "");
        s->pass = strdup(pass ? pass : "");
        s->cfg.user = s->user;
        s->cfg.password = s->pass;
        if (sw_dsn_config(dsns[i], &s->cfg, err, sizeof err) < 0) {
            log_error("schwartzd: database '%s': %s", dsns[i], err);
            free(s->user);
            free(s->pass);
            free(s);
            return -1;
        }
        /* Perl workers share the file: wait for their locks rather than fail */
        s->cfg.busy_timeout_ms = 10000;
        s->cfg.connect_timeout_s = 5;
        s->cfg.io_timeout_s = 30;
        s->index = i;
        s->dsn_text = strdup(dsns[i]);
        unsigned seed = (unsigned)time(NULL) ^ (unsigned)(i * 7919);
        /* TheSchwartz's handle prefix: md5_hex("DSN|user"). */
        char full[1200];
        snprintf(full, sizeof full, "%s|%s", dsns[i], user ? user : "");
        md5_hex(full, s->hash);
        stores[nstores++] = s;
        s->nw = s->cfg.driver == DB_MYSQL && sw.cfg.db_connections > 1 ? sw.cfg.db_connections : 1;
        s->w = calloc((size_t)s->nw, sizeof *s->w);
        if (!s->w)
            return -1;
        for (int k = 0; k < s->nw; k++) {
            struct sw_worker *w = &s->w[k];
            w->store = s;
            w->index = i;
            w->hash = s->hash;
            w->dsn_text = s->dsn_text;
            w->rnd = seed + (unsigned)k * 2654435761u;
        }
        s->cfg.workers = s->nw;
        s->cfg.max_batch = sw.cfg.group_max;
        /* A database down at start is used once it answers. */
        s->cfg.connect_later = true;
        s->cfg.on_connect = sw_on_connect;
        s->cfg.on_connect_arg = s;
        s->db = db_open(&s->cfg, err, sizeof err);
        if (!s->db) {
            log_error("schwartzd: database %d (%s): %s", i, s->dsn_text, err);
            return -1;
        }
        if (err[0]) {
            log_warn("schwartzd: database %d (%s) down: %s", i, s->dsn_text, err);
            atomic_store(&s->dead_until, (int64_t)time(NULL) + sw.cfg.retry_seconds);
        }
    }
    return 0;
}

void sw_stores_close(void)
{
    /* db_close runs what is still queued; the ops' callbacks run here */
    for (int i = 0; i < nstores; i++)
        if (stores[i]->db)
            db_close(stores[i]->db);
    for (int i = 0; i < nstores; i++) {
        struct sw_store *s = stores[i];
        for (int k = 0; k < s->nw; k++)
            fc_clear(&s->w[k]);
        free(s->w);
        free(s->dsn_text);
        db_config_clear(&s->cfg);
        free(s->user);
        free(s->pass);
        free(s);
        stores[i] = NULL;
    }
    nstores = 0;
    pthread_mutex_lock(&policy_mu);
    for (int i = 0; i < npolicies; i++)
        free(policies[i].func);
    npolicies = 0;
    pthread_mutex_unlock(&policy_mu);
}

int sw_store_count(void) { return nstores; }
struct sw_store *sw_store_get(int i) { return i >= 0 && i < nstores ? stores[i] : NULL; }
const char *sw_store_hash(const struct sw_store *s) { return s->hash; }
const char *sw_store_dsn(const struct sw_store *s) { return s->dsn_text; }
int sw_store_index(const struct sw_store *s) { return s->index; }
bool sw_store_alive(const struct sw_store *s)
{
    return atomic_load(&((struct sw_store *)s)->dead_until) <= (int64_t)time(NULL);
}

struct sw_store *sw_store_by_hash(const char *hash, size_t len)
{
    if (len != 32)
        return NULL;
    for (int i = 0; i < nstores; i++)
        if (!memcmp(stores[i]->hash, hash, 32))
            return stores[i];
    return NULL;
}

void sw_store_get_counters(const struct sw_store *cs, struct sw_store_counters *out)
{
    struct sw_store *s = (struct sw_store *)cs;
    struct db_counters c;
    db_get_counters(s->db, &c);
    out->ops = atomic_load(&s->n_ops);
    out->commits = c.commits;
    out->rollbacks = c.rollbacks;
    out->errors = atomic_load(&s->n_errors);
    out->reconnects = atomic_load(&s->n_reconnects);
    out->retries = c.reruns;
}

uint64_t sw_store_queued(const struct sw_store *cs)
{
    struct db_counters c;
    db_get_counters(((struct sw_store *)cs)->db, &c);
    return c.queued;
}

void sw_store_submit(struct sw_store *s, struct sw_op *op)
{
    op->store = s;
    op->next = NULL;
    if (!op->out && (op->kind == SW_OP_GRAB || op->kind == SW_OP_GRAB_JOB || op->kind == SW_OP_LIST ||
                     op->kind == SW_OP_INSPECT || op->kind == SW_OP_STATUS || op->kind == SW_OP_FUNCMAP))
        op->out = evbuffer_new();
    op->err = SW_OK;
    op->db_dead = false;
    int flags = DB_GROUP | (needs_savepoint(op) ? 0 : DB_NO_SAVEPOINT) | (autocommit_ok(s, op) ? DB_AUTOCOMMIT : 0) |
                (no_fsync_ok(op) ? DB_NO_FSYNC : 0);
    /* hand-off: the op runs on a db worker thread; op_finished comes back
     * on loop 0 once its group committed */
    if (db_run(s->db, 0, loop_get(0), flags, run_on_worker, op, op_finished, op) == 0)
        return;
    op_fail(op, SW_E_DB_ERROR,
            errno == EAGAIN ? "server busy: too many requests queued for this database" : "server shutting down");
    if (loop_call(loop_get(0), deliver_refused, op) < 0)
        deliver_refused(op);
}

int sw_store_order(int *order)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)time(NULL) | 1u;
    int n = 0, alive = 0;
    for (int i = 0; i < nstores; i++)
        if (sw_store_alive(stores[i]))
            order[n++] = i;
    alive = n;
    /* Fisher-Yates over the live ones: TheSchwartz's shuffled_databases. */
    for (int i = alive - 1; i > 0; i--) {
        seed = seed * 1103515245u + 12345u;
        int j = (int)((seed >> 16) % (unsigned)(i + 1));
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    /* Dead ones last: tried only when every live one failed. */
    for (int i = 0; i < nstores; i++)
        if (!sw_store_alive(stores[i]))
            order[n++] = i;
    return alive;
}
