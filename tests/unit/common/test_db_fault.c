/* Fault injection for common/db's SQLite group commit: a full filesystem
 * (a small tmpfs mounted for the test: needs root, as `make test` runs)
 * and I/O errors injected by a VFS shim. Whatever fails, the promise is the
 * same: a write reported done is in the database after a reopen, a write
 * reported failed is not, later writes never commit outside their
 * transaction, and the handle works again once the fault is gone. */
#include "common/db.h"
#include "tests/unit/unit.h"

#include <errno.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[64];

/* ---- a VFS shim that fails writes to the WAL on demand ---- */

static sqlite3_vfs *real_vfs;
static sqlite3_vfs shim_vfs;
static atomic_int fail_wal_writes; /* > 0: fail every WAL write while set */
static atomic_int allow_then_fail; /* > 0: WAL writes left before a one-shot failure window */
static atomic_int window;          /* WAL writes to fail in that window */
static atomic_int injected;

struct shim_file {
    sqlite3_file base;
    bool wal;
    sqlite3_file *real; /* follows this struct in the same allocation */
};

#define REAL(f) (((struct shim_file *)(f))->real)

static int shim_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int shim_read(sqlite3_file *f, void *b, int n, sqlite3_int64 o)
{
    return REAL(f)->pMethods->xRead(REAL(f), b, n, o);
}
static int shim_write(sqlite3_file *f, const void *b, int n, sqlite3_int64 o)
{
    if (((struct shim_file *)f)->wal) {
        bool fail = atomic_load(&fail_wal_writes) != 0;
        if (!fail && atomic_load(&allow_then_fail) > 0 && atomic_fetch_sub(&allow_then_fail, 1) == 1)
            fail = false; /* the last allowed write; the window opens next */
        else if (!fail && atomic_load(&allow_then_fail) <= 0 && atomic_load(&window) > 0) {
            atomic_fetch_sub(&window, 1);
            fail = true;
        }
        if (fail) {
            atomic_fetch_add(&injected, 1);
            return SQLITE_IOERR_WRITE;
        }
    }
    return REAL(f)->pMethods->xWrite(REAL(f), b, n, o);
}
static int shim_truncate(sqlite3_file *f, sqlite3_int64 s) { return REAL(f)->pMethods->xTruncate(REAL(f), s); }
static int shim_sync(sqlite3_file *f, int fl) { return REAL(f)->pMethods->xSync(REAL(f), fl); }
static int shim_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int shim_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int shim_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int shim_reserved(sqlite3_file *f, int *r) { return REAL(f)->pMethods->xCheckReservedLock(REAL(f), r); }
static int shim_fcntl(sqlite3_file *f, int op, void *a) { return REAL(f)->pMethods->xFileControl(REAL(f), op, a); }
static int shim_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int shim_chars(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int shim_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int shim_shmlock(sqlite3_file *f, int off, int n, int fl)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, fl);
}
static void shim_shmbarrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int shim_shmunmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
static int shim_fetch(sqlite3_file *f, sqlite3_int64 o, int n, void **pp)
{
    return REAL(f)->pMethods->xFetch(REAL(f), o, n, pp);
}
static int shim_unfetch(sqlite3_file *f, sqlite3_int64 o, void *p)
{
    return REAL(f)->pMethods->xUnfetch(REAL(f), o, p);
}

static const sqlite3_io_methods shim_io = {
    3,
    shim_close,
    shim_read,
    shim_write,
    shim_truncate,
    shim_sync,
    shim_size,
    shim_lock,
    shim_unlock,
    shim_reserved,
    shim_fcntl,
    shim_sector,
    shim_chars,
    shim_shmmap,
    shim_shmlock,
    shim_shmbarrier,
    shim_shmunmap,
    shim_fetch,
    shim_unfetch,
};

static int shim_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out)
{
    (void)vfs;
    struct shim_file *s = (struct shim_file *)f;
    s->real = (sqlite3_file *)(s + 1);
    s->wal = (flags & SQLITE_OPEN_WAL) != 0;
    int rc = real_vfs->xOpen(real_vfs, name, s->real, flags, out);
    f->pMethods = rc == SQLITE_OK && s->real->pMethods ? &shim_io : NULL;
    return rc;
}

static void shim_install(void)
{
    real_vfs = sqlite3_vfs_find(NULL);
    shim_vfs = *real_vfs;
    shim_vfs.zName = "fault-shim";
    shim_vfs.szOsFile = (int)sizeof(struct shim_file) + real_vfs->szOsFile;
    shim_vfs.xOpen = shim_open;
    sqlite3_vfs_register(&shim_vfs, 1); /* the default from now on: db_open uses it */
}

/* ---- a burst of grouped writes and its audit ---- */

enum { N = 80 };

struct wr {
    int id;
    int status;
    atomic_bool called;
};
static struct wr writes[N];

static void wr_cb(struct db_result *res, void *arg)
{
    struct wr *w = arg;
    w->status = res->status;
    atomic_store(&w->called, true);
}

static int batch; /* db_config.max_batch for the next open (0 = default) */

static struct db *open_at(const char *path)
{
    struct db_config cfg = { .driver = DB_SQLITE, .path = path, .max_batch = batch };
    char err[256] = "";
    struct db *db = db_open(&cfg, err, sizeof err);
    if (!db)
        fprintf(stderr, "db_open %s: %s\n", path, err);
    return db;
}

/* Queue N grouped inserts of blob_len bytes each behind a held write lock,
 * so they run as groups, calling between(i) before write i. */
static void burst(struct db *db, const char *path, int first_id, size_t blob_len, void (*between)(int))
{
    sqlite3 *other = NULL;
    CHECK_EQ_INT(sqlite3_open(path, &other), SQLITE_OK);
    sqlite3_busy_timeout(other, 5000);
    CHECK_EQ_INT(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    char *blob = malloc(blob_len);
    memset(blob, 'b', blob_len);
    for (int i = 0; i < N; i++) {
        if (between)
            between(i);
        writes[i].id = first_id + i;
        writes[i].status = 99;
        atomic_store(&writes[i].called, false);
        struct db_value v[2] = { DB_INT64(first_id + i), DB_BLOBN(blob, blob_len) };
        CHECK_EQ_INT(db_query(db, NULL, DB_GROUP, "INSERT INTO w (id, data) VALUES (?, ?)", v, 2, wr_cb, &writes[i]),
                     0);
    }
    free(blob);
    CHECK_EQ_INT(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    struct db_result *r = NULL;
    db_query_sync(db, "SELECT 1", NULL, 0, &r); /* after the burst: every callback has run */
    db_result_free(r);
}

/* Reopen and compare what the callbacks said with what is there. */
static void audit(const char *path, int *ok_out, int *failed_out)
{
    struct db *db = open_at(path);
    CHECK(db != NULL);
    if (!db)
        return;
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "SELECT id FROM w", NULL, 0, &r), 0);
    int ok = 0, failed = 0, lies = 0, hidden = 0;
    for (int i = 0; i < N; i++) {
        CHECK(atomic_load(&writes[i].called));
        bool present = false;
        for (size_t k = 0; r && k < r->nrows; k++)
            if (db_cell_int(r, k, 0) == writes[i].id)
                present = true;
        if (writes[i].status == 0) {
            ok++;
            lies += !present; /* said durable, is not */
        } else {
            failed++;
            hidden += present; /* said failed, committed anyway (outside its transaction) */
        }
    }
    db_result_free(r);
    CHECK_EQ_INT(lies, 0);
    CHECK_EQ_INT(hidden, 0);
    *ok_out = ok;
    *failed_out = failed;
    db_close(db);
}

static char mnt[96];

static void test_full_filesystem(void)
{
    snprintf(mnt, sizeof mnt, "%s/small", dir);
    CHECK_EQ_INT(mkdir(mnt, 0700), 0);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=512k") != 0) {
        fprintf(stderr, "mount tmpfs on %s: %s (this test needs root)\n", mnt, strerror(errno));
        CHECK(0);
        return;
    }
    char path[160];
    snprintf(path, sizeof path, "%s/full.db", mnt);
    batch = 8; /* groups of 8 x 16 KiB: the first few fit */
    struct db *db = open_at(path);
    CHECK(db != NULL);
    if (db) {
        char err[256];
        CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE w (id INTEGER PRIMARY KEY, data BLOB)", err, sizeof err), 0);
        burst(db, path, 1, 16 * 1024, NULL); /* 80 x 16 KiB into 512 KiB */
        db_close(db);
        int ok = 0, failed = 0;
        audit(path, &ok, &failed);
        CHECK(ok > 0);
        CHECK(failed > 0);
        /* room again: the same database takes writes again */
        CHECK_EQ_INT(mount("tmpfs", mnt, "tmpfs", MS_REMOUNT, "size=8m"), 0);
        db = open_at(path);
        CHECK(db != NULL);
        if (db) {
            struct db_result *r = NULL;
            struct db_value v[2] = { DB_INT64(1000), DB_BLOBN("x", 1) };
            CHECK_EQ_INT(db_query_sync(db, "INSERT INTO w (id, data) VALUES (?, ?)", v, 2, &r), 0);
            db_result_free(r);
            db_close(db);
        }
    }
    CHECK_EQ_INT(umount(mnt), 0);
    batch = 0;
}

static void flip_fault(int i)
{
    if (i == N / 3)
        atomic_store(&fail_wal_writes, 1);
}

static void test_injected_io_error(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/io.db", dir);
    struct db *db = open_at(path);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE w (id INTEGER PRIMARY KEY, data BLOB)", err, sizeof err), 0);
    /* writes queue behind a lock; the WAL starts failing a third of the way
     * in (before the worker runs any of them: all land on the fault) */
    burst(db, path, 1, 8 * 1024, flip_fault);
    CHECK(atomic_load(&injected) > 0);
    atomic_store(&fail_wal_writes, 0);
    /* the same handle recovers once the disk does */
    struct db_value v[2] = { DB_INT64(5000), DB_BLOBN("x", 1) };
    struct db_result *r = NULL;
    CHECK_EQ_INT(db_query_sync(db, "INSERT INTO w (id, data) VALUES (?, ?)", v, 2, &r), 0);
    db_result_free(r);
    db_close(db);
    int ok = 0, failed = 0;
    audit(path, &ok, &failed);
    CHECK(failed > 0);
    CHECK(ok + failed == N);
}

/* The disk fails for a moment in the middle of a group transaction (big
 * rows and a tiny page cache make SQLite write the WAL before COMMIT). */
static void test_io_error_mid_group(void)
{
    char path[160];
    snprintf(path, sizeof path, "%s/mid.db", dir);
    struct db *db = open_at(path);
    CHECK(db != NULL);
    if (!db)
        return;
    char err[256];
    CHECK_EQ_INT(db_exec_script(db, "CREATE TABLE w (id INTEGER PRIMARY KEY, data BLOB); PRAGMA cache_size = 8", err,
                                sizeof err),
                 0);
    atomic_store(&injected, 0);
    atomic_store(&window, 3);
    atomic_store(&allow_then_fail, 40);
    burst(db, path, 20000, 32 * 1024, NULL);
    CHECK(atomic_load(&injected) > 0);
    atomic_store(&window, 0);
    atomic_store(&allow_then_fail, 0);
    db_close(db);
    int ok = 0, failed = 0;
    audit(path, &ok, &failed);
    CHECK(failed > 0);
    CHECK(ok > 0); /* the writes after the failure went on in a new transaction */
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/test_db_fault.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    shim_install();
    RUN(test_full_filesystem);
    RUN(test_injected_io_error);
    RUN(test_io_error_mid_group);
    umount(mnt); /* in case a check above returned early */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return unit_done();
}
