/* store: the default plugins — the users_file auth plugin (`user:password`
 * lines) and the storage plugins on the core db module (SQLite by default,
 * MariaDB/MySQL in production): accounts (SCRAM keys only, never the
 * password), rosters with their version, offline messages (XEP-0160, with
 * XEP-0203 delay stamps) and vCards.
 *
 * Every query runs on the db worker thread; answers come back on the loop
 * (no event loop ever waits on the database). Writes are group-committed
 * and a hook finishes only after the commit, so a client hears "ok" only
 * for what is durable. */
#include "djabberd/djabberd.h"
#include "djabberd/hooks.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>

#include "common/db.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/work.h"

/* ---- password hashing off the loop ------------------------------------------------------------ */

struct hash_job {
    struct dj_creds creds;
    bool check, ok;
    size_t pwlen;
    void (*done)(void *arg, bool ok, const struct dj_creds *made);
    void *arg;
    char pw[];
};

static void hash_run(void *arg)
{
    /* on a work thread: PBKDF2 (4096 iterations x 2 hashes when making) */
    struct hash_job *j = arg;
    if (j->check)
        j->ok = dj_creds_check(&j->creds, j->pw, j->pwlen);
    else
        j->ok = dj_creds_make(&j->creds, j->pw, j->pwlen, 0) == 0;
}

static void hash_done(void *arg)
{
    struct hash_job *j = arg;
    j->done(j->arg, j->ok, j->check ? NULL : &j->creds);
    OPENSSL_cleanse(j, sizeof *j + j->pwlen);
    free(j);
}

int dj_creds_async(const struct dj_creds *check, const char *pw, size_t pwlen,
                   void (*done)(void *arg, bool ok, const struct dj_creds *made), void *arg)
{
    struct hash_job *j = calloc(1, sizeof *j + pwlen + 1);
    if (!j)
        return -1;
    if (check)
        j->creds = *check;
    j->check = check != NULL;
    j->pwlen = pwlen;
    memcpy(j->pw, pw, pwlen);
    j->done = done;
    j->arg = arg;
    struct core_loop *l = loop_current();
    if (!dj.hash_pool || work_submit(dj.hash_pool, l ? l : loop_get(0), hash_run, hash_done, j) < 0) {
        OPENSSL_cleanse(j, sizeof *j + pwlen);
        free(j);
        return -1;
    }
    return 0;
}

/* ---- users_file ------------------------------------------------------------------------------ */

struct uf_entry {
    char *key; /* "user@vhost", or "user@" for every vhost */
    char *password;
    struct dj_creds creds;
    bool derived;
};

static struct uf_entry *uf;
static size_t nuf;
static unsigned uf_generation; /* bumped by every (re)load */

static int uf_cmp(const void *a, const void *b)
{
    return strcmp(((const struct uf_entry *)a)->key, ((const struct uf_entry *)b)->key);
}

static void uf_clear(struct uf_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].key);
        if (e[i].password) {
            OPENSSL_cleanse(e[i].password, strlen(e[i].password));
            free(e[i].password);
        }
    }
    free(e);
}

size_t dj_users_file_count(void) { return nuf; }

int dj_users_file_load(const char *path, char *err, size_t errlen)
{
    if (!path || !*path) {
        uf_clear(uf, nuf);
        uf = NULL;
        nuf = 0;
        uf_generation++;
        return 0;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "users_file %s: %s", path, strerror(errno));
        return -1;
    }
    struct uf_entry *t = NULL;
    size_t n = 0, cap = 0;
    char line[2048];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strcspn(line, "\r\n");
        line[l] = 0;
        if (!line[0] || line[0] == '#')
            continue;
        char *colon = strchr(line, ':');
        if (!colon || colon == line || !colon[1]) {
            snprintf(err, errlen, "users_file %s:%d: expected user:password", path, lineno);
            fclose(f);
            uf_clear(t, n);
            return -1;
        }
        *colon = 0;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            struct uf_entry *nt = realloc(t, cap * sizeof *t);
            if (!nt) {
                fclose(f);
                uf_clear(t, n);
                snprintf(err, errlen, "out of memory");
                return -1;
            }
            t = nt;
        }
        struct uf_entry *e = &t[n++];
        memset(e, 0, sizeof *e);
        char key[2100];
        for (char *p = line; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p += 32;
        snprintf(key, sizeof key, "%s%s", line, strchr(line, '@') ? "" : "@");
        e->key = strdup(key);
        e->password = strdup(colon + 1);
        OPENSSL_cleanse(colon + 1, strlen(colon + 1));
    }
    fclose(f);
    qsort(t, n, sizeof *t, uf_cmp);
    uf_clear(uf, nuf);
    uf = t;
    nuf = n;
    uf_generation++;
    return 0;
}

static struct uf_entry *uf_find(int vhost, const char *user)
{
    char key[2100];
    struct uf_entry k = { .key = key };
    for (int pass = 0; pass < 2; pass++) {
        snprintf(key, sizeof key, "%s@%s", user, pass == 0 ? dj.vhosts[vhost].name : "");
        struct uf_entry *e = nuf ? bsearch(&k, uf, nuf, sizeof *uf, uf_cmp) : NULL;
        if (e)
            return e;
    }
    return NULL;
}

struct uf_wait {
    struct dj_hook_creds *h;
    unsigned gen;
};

static void uf_derived(void *arg, bool ok, const struct dj_creds *made)
{
    struct uf_wait *w = arg;
    struct dj_hook_creds *h = w->h;
    unsigned gen = w->gen;
    free(w);
    if (!ok) {
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    h->creds = *made;
    /* keep them, unless a reload replaced the accounts meanwhile */
    struct uf_entry *e = gen == uf_generation ? uf_find(h->vhost, h->user) : NULL;
    if (e && !e->derived) {
        e->creds = *made;
        e->derived = true;
    }
    dj_hook_finish(&h->call, DJ_OK);
}

static void uf_get_creds(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_creds *h = (struct dj_hook_creds *)call;
    struct uf_entry *e = uf_find(h->vhost, h->user);
    if (!e) {
        dj_hook_decline(call);
        return;
    }
    if (h->exists_only) {
        dj_hook_finish(call, DJ_OK);
        return;
    }
    if (e->derived) {
        h->creds = e->creds;
        dj_hook_finish(call, DJ_OK);
        return;
    }
    /* SCRAM keys are made once per account, on the hashing threads */
    struct uf_wait *w = malloc(sizeof *w);
    if (!w) {
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    w->h = h;
    w->gen = uf_generation;
    if (dj_creds_async(NULL, e->password, strlen(e->password), uf_derived, w) < 0) {
        free(w);
        dj_hook_finish(call, DJ_ERROR);
    }
}

static void uf_check_plain(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_creds *h = (struct dj_hook_creds *)call;
    struct uf_entry *e = uf_find(h->vhost, h->user);
    if (!e) {
        dj_hook_decline(call);
        return;
    }
    size_t pl = strlen(e->password);
    bool ok = pl == h->password_len && CRYPTO_memcmp(e->password, h->password, pl) == 0;
    dj_hook_finish(call, ok ? DJ_OK : DJ_REJECT);
}

static void uf_register(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_register *h = (struct dj_hook_register *)call;
    /* a name from the file cannot be registered again in the database */
    if (uf_find(h->vhost, h->user))
        dj_hook_finish(call, DJ_CONFLICT);
    else
        dj_hook_decline(call);
}

/* ---- the database -------------------------------------------------------------------------------- */

static const char schema_sqlite[] =
    "CREATE TABLE IF NOT EXISTS dj_users (vhost VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,"
    " creds VARCHAR(300) NOT NULL, created BIGINT NOT NULL, PRIMARY KEY (vhost, username));"
    "CREATE TABLE IF NOT EXISTS dj_roster (owner VARCHAR(255) NOT NULL, contact VARCHAR(255) NOT NULL,"
    " name VARCHAR(1024), grp TEXT, subscription INT NOT NULL, PRIMARY KEY (owner, contact));"
    "CREATE TABLE IF NOT EXISTS dj_roster_ver (owner VARCHAR(255) PRIMARY KEY, ver BIGINT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS dj_offline (id INTEGER PRIMARY KEY AUTOINCREMENT, owner VARCHAR(255) NOT NULL,"
    " stamp BIGINT NOT NULL, xml BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS dj_offline_owner ON dj_offline (owner, id);"
    "CREATE TABLE IF NOT EXISTS dj_vcard (owner VARCHAR(255) PRIMARY KEY, xml BLOB NOT NULL)";

static const char schema_mysql[] =
    "CREATE TABLE IF NOT EXISTS dj_users (vhost VARCHAR(255) NOT NULL, username VARCHAR(255) NOT NULL,"
    " creds VARCHAR(300) NOT NULL, created BIGINT NOT NULL, PRIMARY KEY (vhost, username)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS dj_roster (owner VARCHAR(255) NOT NULL, contact VARCHAR(255) NOT NULL,"
    " name VARCHAR(1024), grp TEXT, subscription INT NOT NULL, PRIMARY KEY (owner, contact)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS dj_roster_ver (owner VARCHAR(255) PRIMARY KEY, ver BIGINT NOT NULL) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS dj_offline (id BIGINT AUTO_INCREMENT PRIMARY KEY, owner VARCHAR(255) NOT NULL,"
    " stamp BIGINT NOT NULL, xml MEDIUMBLOB NOT NULL, KEY dj_offline_owner (owner, id)) ENGINE=InnoDB;"
    "CREATE TABLE IF NOT EXISTS dj_vcard (owner VARCHAR(255) PRIMARY KEY, xml MEDIUMBLOB NOT NULL) ENGINE=InnoDB";

static struct core_loop *here(void)
{
    struct core_loop *l = loop_current();
    return l ? l : loop_get(0);
}

/* accounts */
static void db_creds_done(struct db_result *res, void *arg)
{
    struct dj_hook_creds *h = arg;
    if (res->status != 0) {
        log_warn("djabberd: account lookup failed: %s", res->error);
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    if (res->nrows == 0) {
        dj_hook_decline(&h->call);
        return;
    }
    size_t len;
    const char *c = db_cell(res, 0, 0, &len);
    if (!h->exists_only && (!c || dj_creds_parse(&h->creds, c, len) < 0)) {
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    dj_hook_finish(&h->call, DJ_OK);
}

static void db_get_creds(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_creds *h = (struct dj_hook_creds *)call;
    const char *vh = dj.vhosts[h->vhost].name;
    struct db_value p[2] = { DB_TEXTN(vh, strlen(vh)), DB_TEXTN(h->user, strlen(h->user)) };
    if (db_query(dj.db, here(), 0, "SELECT creds FROM dj_users WHERE vhost=? AND username=?", p, 2, db_creds_done, h) <
        0)
        dj_hook_finish(call, DJ_ERROR);
}

static void db_register_done(struct db_result *res, void *arg)
{
    struct dj_hook_register *h = arg;
    if (res->status != 0) {
        /* the primary key refuses a second account of the same name */
        bool dup = strstr(res->error, "UNIQUE") || strstr(res->error, "Duplicate") || strstr(res->error, "unique");
        dj_hook_finish(&h->call, dup ? DJ_CONFLICT : DJ_ERROR);
        return;
    }
    dj_hook_finish(&h->call, DJ_OK);
}

static void db_register_hashed(void *arg, bool ok, const struct dj_creds *made);

static void db_register(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_register *h = (struct dj_hook_register *)call;
    if (dj_creds_async(NULL, h->password, strlen(h->password), db_register_hashed, h) < 0)
        dj_hook_finish(call, DJ_ERROR);
}

static void db_register_hashed(void *arg, bool ok, const struct dj_creds *made)
{
    struct dj_hook_register *h = arg;
    if (!ok) {
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    char text[300];
    size_t tl = dj_creds_format(made, text, sizeof text);
    const char *vh = dj.vhosts[h->vhost].name;
    struct db_value p[4] = { DB_TEXTN(vh, strlen(vh)), DB_TEXTN(h->user, strlen(h->user)), DB_TEXTN(text, tl),
                             DB_INT64(time(NULL)) };
    if (db_query(dj.db, here(), DB_GROUP, "INSERT INTO dj_users (vhost, username, creds, created) VALUES (?,?,?,?)", p,
                 4, db_register_done, h) < 0)
        dj_hook_finish(&h->call, DJ_ERROR);
}

/* rosters */
struct roster_load {
    struct dj_hook_roster *h;
    bool failed;
};

static void db_roster_ver_done(struct db_result *res, void *arg)
{
    struct dj_hook_roster *h = arg;
    if (res->status != 0 || h->nrows < 0) {
        h->nrows = 0;
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    h->ver = res->nrows ? db_cell_int(res, 0, 0) : 0;
    dj_hook_finish(&h->call, DJ_OK);
}

static char *cell_dup(const struct db_result *r, size_t row, int col)
{
    size_t l;
    const char *c = db_cell(r, row, col, &l);
    return c ? strndup(c, l) : NULL;
}

static void db_roster_rows_done(struct db_result *res, void *arg)
{
    struct dj_hook_roster *h = arg;
    if (res->status != 0) {
        log_warn("djabberd: roster load failed: %s", res->error);
        h->nrows = -1;
        return;
    }
    size_t n = res->nrows > (size_t)dj.cfg.max_roster ? (size_t)dj.cfg.max_roster : res->nrows;
    h->rows = calloc(n ? n : 1, sizeof *h->rows);
    if (!h->rows)
        return;
    for (size_t i = 0; i < n; i++) {
        h->rows[i].jid = cell_dup(res, i, 0);
        h->rows[i].name = cell_dup(res, i, 1);
        h->rows[i].groups = cell_dup(res, i, 2);
        h->rows[i].sub = (int)db_cell_int(res, i, 3);
    }
    h->nrows = (int)n;
}

static void db_roster_load(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_roster *h = (struct dj_hook_roster *)call;
    struct db_value p[1] = { DB_TEXTN(h->bare, strlen(h->bare)) };
    /* one worker runs requests in order: the rows arrive before the version */
    if (db_query(dj.db, here(), 0, "SELECT contact, name, grp, subscription FROM dj_roster WHERE owner=?", p, 1,
                 db_roster_rows_done, h) < 0 ||
        db_query(dj.db, here(), 0, "SELECT ver FROM dj_roster_ver WHERE owner=?", p, 1, db_roster_ver_done, h) < 0)
        dj_hook_finish(call, DJ_ERROR);
}

struct store_ctx {
    struct dj_hook_roster_item *h;
    bool failed;
};

static void db_roster_item_done(struct db_result *res, void *arg)
{
    struct store_ctx *x = arg;
    if (res->status != 0) {
        log_warn("djabberd: roster store failed: %s", res->error);
        x->failed = true;
    }
}

static void db_roster_ver_store_done(struct db_result *res, void *arg)
{
    struct store_ctx *x = arg;
    bool failed = x->failed || res->status != 0;
    struct dj_hook_roster_item *h = x->h;
    free(x);
    dj_hook_finish(&h->call, failed ? DJ_ERROR : DJ_OK);
}

static void db_roster_store(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_roster_item *h = (struct dj_hook_roster_item *)call;
    struct store_ctx *x = calloc(1, sizeof *x);
    if (!x) {
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    x->h = h;
    struct db_value own = DB_TEXTN(h->bare, strlen(h->bare));
    struct db_value con = DB_TEXTN(h->row.jid, strlen(h->row.jid));
    int rc;
    if (h->removed) {
        struct db_value p[2] = { own, con };
        rc = db_query(dj.db, here(), DB_GROUP, "DELETE FROM dj_roster WHERE owner=? AND contact=?", p, 2,
                      db_roster_item_done, x);
    } else {
        struct db_value p[5] = { own, con,
                                 h->row.name ? DB_TEXTN(h->row.name, strlen(h->row.name)) : (struct db_value){ 0 },
                                 h->row.groups ? DB_TEXTN(h->row.groups, strlen(h->row.groups))
                                               : (struct db_value){ 0 },
                                 DB_INT64(h->row.sub) };
        rc = db_query(dj.db, here(), DB_GROUP,
                      "REPLACE INTO dj_roster (owner, contact, name, grp, subscription) VALUES (?,?,?,?,?)", p, 5,
                      db_roster_item_done, x);
    }
    struct db_value pv[2] = { own, DB_INT64(h->ver) };
    if (rc < 0 || db_query(dj.db, here(), DB_GROUP, "REPLACE INTO dj_roster_ver (owner, ver) VALUES (?,?)", pv, 2,
                           db_roster_ver_store_done, x) < 0) {
        /* the handle is closing: x may still be referenced by a queued request */
        dj_hook_finish(call, DJ_ERROR);
    }
}

/* offline messages */
static void db_offline_store_done(struct db_result *res, void *arg)
{
    struct dj_hook_blob *h = arg;
    if (res->status != 0)
        log_warn("djabberd: offline store failed: %s", res->error);
    dj_hook_finish(&h->call, res->status != 0 ? DJ_ERROR : res->affected == 0 ? DJ_REJECT : DJ_OK);
}

static void db_offline_store(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_blob *h = (struct dj_hook_blob *)call;
    struct db_value p[5] = { DB_TEXTN(h->bare, strlen(h->bare)), DB_INT64(h->stamp), DB_BLOBN(h->xml, h->len),
                             DB_TEXTN(h->bare, strlen(h->bare)), DB_INT64(dj.cfg.max_offline) };
    /* bounded per user in the same statement: no row past max_offline */
    if (db_query(dj.db, here(), DB_GROUP,
                 "INSERT INTO dj_offline (owner, stamp, xml) SELECT ?, ?, ? FROM "
                 "(SELECT COUNT(*) AS n FROM dj_offline WHERE owner=?) c WHERE c.n < ?",
                 p, 5, db_offline_store_done, h) < 0)
        dj_hook_finish(call, DJ_ERROR);
}

/* The fetch claims its rows: it reads the account's messages and deletes
 * them one by one in the same transaction, and hands over only the rows its
 * own DELETE removed. Two fetches for one account (a second resource, the
 * re-fetch a cluster peer asks for, a fetch on another node) can then never
 * both deliver a message; a row stored after the read is simply not taken
 * (it stays for the next fetch). Runs on the db worker thread. */
struct fetch_rows {
    char *bare;
    char **xml;
    int64_t *stamps;
    int n;
};

static void fetch_rows_clear(struct fetch_rows *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->xml[i]);
    free(f->xml);
    free(f->stamps);
    f->xml = NULL;
    f->stamps = NULL;
    f->n = 0;
}

static int db_offline_claim(struct db_conn *c, void *ctx)
{
    struct fetch_rows *f = ctx;
    fetch_rows_clear(f); /* a rerun starts again */
    struct db_value p[1] = { DB_TEXTN(f->bare, strlen(f->bare)) };
    struct db_result res = { 0 };
    if (db_conn_query(c, "SELECT id, stamp, xml FROM dj_offline WHERE owner=? ORDER BY id", p, 1, &res) != DB_OK) {
        db_result_clear(&res);
        return -1;
    }
    if (res.nrows) {
        f->xml = calloc(res.nrows, sizeof *f->xml);
        f->stamps = calloc(res.nrows, sizeof *f->stamps);
        if (!f->xml || !f->stamps) {
            db_result_clear(&res);
            db_run_fail(c, "out of memory");
            return -1;
        }
    }
    for (size_t i = 0; i < res.nrows; i++) {
        struct db_value d[1] = { DB_INT64(db_cell_int(&res, i, 0)) };
        if (db_conn_query(c, "DELETE FROM dj_offline WHERE id=?", d, 1, NULL) != DB_OK) {
            db_result_clear(&res);
            return -1;
        }
        if (db_conn_affected(c) != 1)
            continue; /* another fetch took it */
        char *x = cell_dup(&res, i, 2);
        if (!x)
            continue;
        f->xml[f->n] = x;
        f->stamps[f->n] = db_cell_int(&res, i, 1);
        f->n++;
    }
    db_result_clear(&res);
    return 0;
}

static void db_offline_claimed(struct db_result *res, void *arg)
{
    struct dj_hook_list *h = arg;
    struct fetch_rows *f = h->ctx;
    h->ctx = NULL;
    if (res->status != 0) {
        log_warn("djabberd: offline fetch failed: %s", res->error);
        fetch_rows_clear(f); /* rolled back: the rows are still stored */
        free(f);
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    /* committed: these rows are gone from the store and are ours to deliver */
    h->xml = f->xml;
    h->stamps = f->stamps;
    h->n = f->n;
    free(f);
    dj_hook_finish(&h->call, DJ_OK);
}

static void db_offline_fetch(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_list *h = (struct dj_hook_list *)call;
    struct fetch_rows *f = calloc(1, sizeof *f);
    if (!f) {
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    f->bare = h->bare; /* lives until the hook finishes */
    h->ctx = f;
    if (db_run(dj.db, 0, here(), DB_GROUP, db_offline_claim, f, db_offline_claimed, h) < 0) {
        h->ctx = NULL;
        free(f);
        dj_hook_finish(call, DJ_ERROR);
    }
}

/* vCards */
static void db_vcard_got(struct db_result *res, void *arg)
{
    struct dj_hook_blob *h = arg;
    if (res->status != 0) {
        dj_hook_finish(&h->call, DJ_ERROR);
        return;
    }
    if (res->nrows == 0) {
        dj_hook_finish(&h->call, DJ_NOTFOUND);
        return;
    }
    size_t l;
    const char *c = db_cell(res, 0, 0, &l);
    h->xml = c ? strndup(c, l) : NULL;
    h->len = c ? l : 0;
    dj_hook_finish(&h->call, h->xml ? DJ_OK : DJ_NOTFOUND);
}

static void db_vcard_get(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_blob *h = (struct dj_hook_blob *)call;
    struct db_value p[1] = { DB_TEXTN(h->bare, strlen(h->bare)) };
    if (db_query(dj.db, here(), 0, "SELECT xml FROM dj_vcard WHERE owner=?", p, 1, db_vcard_got, h) < 0)
        dj_hook_finish(call, DJ_ERROR);
}

static void db_write_done(struct db_result *res, void *arg)
{
    struct dj_hook_blob *h = arg;
    dj_hook_finish(&h->call, res->status ? DJ_ERROR : DJ_OK);
}

static void db_vcard_set(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_blob *h = (struct dj_hook_blob *)call;
    struct db_value p[2] = { DB_TEXTN(h->bare, strlen(h->bare)), DB_BLOBN(h->xml, h->len) };
    if (db_query(dj.db, here(), DB_GROUP, "REPLACE INTO dj_vcard (owner, xml) VALUES (?,?)", p, 2, db_write_done, h) <
        0)
        dj_hook_finish(call, DJ_ERROR);
}

/* ---- the offline-storage delivery plugin (last in the deliver chain) ------------------------------------ */

struct offline_store {
    struct dj_hook_creds exists;
    struct dj_hook_blob blob;
    struct dj_hook_deliver *d;
    size_t charged; /* bytes counted in offline_inflight */
    char user[DJ_JID_MAX + 1];
};

/* Offline messages on their way to the database, all accounts together:
 * a flood of messages to absent users is refused ("wait") past this, so the
 * db queue cannot hold an unbounded amount of message text. */
#define DJ_OFFLINE_INFLIGHT_MAX (8u << 20)
static size_t offline_inflight;

static void offline_stored(struct dj_hook_call *call)
{
    struct offline_store *o = (struct offline_store *)((char *)call - offsetof(struct offline_store, blob));
    struct dj_hook_deliver *d = o->d;
    enum dj_hook_status st = call->status; /* call lives in o */
    offline_inflight -= o->charged;
    if (st == DJ_OK)
        dj.n.messages_offline++;
    free(o->blob.xml);
    free(o->blob.bare);
    free(o);
    if (st == DJ_OK)
        dj_hook_finish(&d->call, DJ_OK);
    else if (st == DJ_REJECT)
        dj_hook_decline(&d->call); /* full: the sender gets service-unavailable */
    else
        dj_hook_finish(&d->call, DJ_ERROR);
}

static void offline_exists(struct dj_hook_call *call)
{
    struct offline_store *o = (struct offline_store *)call;
    struct dj_hook_deliver *d = o->d;
    if (call->status != DJ_OK) {
        offline_inflight -= o->charged;
        free(o);
        dj_hook_decline(&d->call); /* no such account */
        return;
    }
    /* XEP-0203: stamp when and by whom the message was delayed */
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (!d->redelivery) { /* a message stored once before keeps its first stamp */
        struct dj_node *delay = dj_node_new(d->st, d->st->root, "delay");
        struct dj_jid j;
        dj_jid_parse(d->to, &j);
        dj_node_set_attr(d->st, delay, "xmlns", "urn:xmpp:delay");
        dj_node_set_attr(d->st, delay, "from", j.domain);
        dj_node_set_attr(d->st, delay, "stamp", stamp);
    }
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, d->st->root);
    o->blob.len = evbuffer_get_length(b);
    o->blob.xml = malloc(o->blob.len + 1);
    evbuffer_remove(b, o->blob.xml, o->blob.len);
    o->blob.xml[o->blob.len] = 0;
    evbuffer_free(b);
    o->blob.bare = strdup(d->to);
    o->blob.stamp = now;
    dj_hook_run(DJ_HOOK_OFFLINE_STORE, &o->blob.call, offline_stored);
}

static void offline_deliver(struct dj_hook_call *call, void *arg)
{
    (void)arg;
    struct dj_hook_deliver *d = (struct dj_hook_deliver *)call;
    const char *type = dj_node_attr(d->st->root, "type");
    if (strcmp(d->st->root->name, "message") || (type && strcmp(type, "chat") && strcmp(type, "normal"))) {
        dj_hook_decline(call);
        return;
    }
    struct dj_jid j;
    if (dj_jid_parse(d->to, &j) < 0 || !j.node[0] || dj_vhost_find(j.domain) < 0) {
        dj_hook_decline(call);
        return;
    }
    size_t cost = d->st->bytes + 256;
    if (offline_inflight + cost > DJ_OFFLINE_INFLIGHT_MAX) {
        dj.n.offline_refused++;
        dj_hook_finish(call, DJ_ERROR); /* the sender gets resource-constraint (wait) */
        return;
    }
    struct offline_store *o = calloc(1, sizeof *o);
    if (!o) {
        dj_hook_finish(call, DJ_ERROR);
        return;
    }
    o->charged = cost;
    offline_inflight += cost;
    o->d = d;
    snprintf(o->user, sizeof o->user, "%s", j.node);
    o->exists.vhost = dj_vhost_find(j.domain);
    o->exists.user = o->user;
    o->exists.exists_only = true;
    dj_hook_run(DJ_HOOK_GET_CREDS, &o->exists.call, offline_exists);
}

/* ---- wiring --------------------------------------------------------------------------------------------- */

int dj_store_open(char *err, size_t errlen)
{
    /* password hashing (PBKDF2) never runs on the loop; a bounded queue */
    dj.hash_pool = work_pool_new("dj-hash", 1, 4096);
    if (!dj.hash_pool) {
        snprintf(err, errlen, "cannot start the hashing thread: %s", strerror(errno));
        return -1;
    }
    dj_hook_register(DJ_HOOK_CHECK_PLAIN, "users_file", uf_check_plain, NULL);
    dj_hook_register(DJ_HOOK_GET_CREDS, "users_file", uf_get_creds, NULL);
    dj_hook_register(DJ_HOOK_REGISTER, "users_file", uf_register, NULL);
    if (dj_users_file_load(dj.cfg.users_file, err, errlen) < 0)
        return -1;
    struct db_config cfg = { 0 };
    if (db_config_dsn(&cfg, dj.cfg.storage, err, errlen) < 0) {
        db_config_clear(&cfg);
        return -1;
    }
    dj.db = db_open(&cfg, err, errlen);
    enum db_driver driver = cfg.driver;
    db_config_clear(&cfg);
    if (!dj.db)
        return -1;
    if (db_exec_script(dj.db, driver == DB_SQLITE ? schema_sqlite : schema_mysql, err, errlen) < 0) {
        db_close(dj.db);
        dj.db = NULL;
        return -1;
    }
    dj_hook_register(DJ_HOOK_GET_CREDS, "db", db_get_creds, NULL);
    if (dj.cfg.inband_registration)
        dj_hook_register(DJ_HOOK_REGISTER, "db", db_register, NULL);
    dj_hook_register(DJ_HOOK_ROSTER_LOAD, "db", db_roster_load, NULL);
    dj_hook_register(DJ_HOOK_ROSTER_STORE, "db", db_roster_store, NULL);
    dj_hook_register(DJ_HOOK_OFFLINE_STORE, "db", db_offline_store, NULL);
    dj_hook_register(DJ_HOOK_OFFLINE_FETCH, "db", db_offline_fetch, NULL);
    dj_hook_register(DJ_HOOK_VCARD_GET, "db", db_vcard_get, NULL);
    dj_hook_register(DJ_HOOK_VCARD_SET, "db", db_vcard_set, NULL);
    /* "MUST be loaded last": offline storage ends the deliver chain */
    dj_hook_register(DJ_HOOK_DELIVER, "offline", offline_deliver, NULL);
    return 0;
}

void dj_store_close(void)
{
    if (dj.hash_pool)
        work_pool_free(dj.hash_pool);
    dj.hash_pool = NULL;
    if (dj.db)
        db_close(dj.db);
    dj.db = NULL;
    dj_users_file_load(NULL, NULL, 0);
}
