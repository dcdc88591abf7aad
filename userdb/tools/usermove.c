/* usermove: move one user's rows from their cluster to another while the
 * site runs (LiveJournal's moveucluster, in C).
 *
 *   usermove -c userdbd.conf [--delete] [--drain SECONDS] USERID CLUSTERID
 *
 * It reads the router's config file (global, backend_user/_password,
 * cluster.N.master, user_table, directory_ttl) and works through the
 * global database, so several movers can run at once; an a/b pair's active
 * side comes from the global clusterstate table, as for the routers:
 *
 *  1. GET_LOCK('userdb-move-<uid>') on the global master: one mover per user.
 *  2. Open (or resume) a clustermove row; set the user's read-only flag.
 *     Routers refuse the user's writes from at most directory_ttl later;
 *     the mover waits directory_ttl + drain before it reads.
 *  3. For every user_table: in one transaction on the destination, delete
 *     the user's rows there (a partial earlier copy) and insert the source
 *     rows (streamed, multi-row INSERTs).
 *  4. Verify each table: row count, BIT_XOR and SUM of CRC32 over every
 *     column on both sides must match. Wait drain, checksum the source
 *     again: a late write (sent before the router's answer expired, slow
 *     to commit) makes the copy start over.
 *  5. In one transaction on the global master: clusterid = destination,
 *     read-only cleared, the clustermove row closed.
 *  6. With --delete: wait directory_ttl + drain again (stale readers),
 *     then delete the source rows.
 *
 * Killed anywhere before 5, the user stays on the source (read-only, the
 * move open); running it again redoes the copy and finishes. This is a
 * command-line tool: it blocks on its connections, as it should. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <mysql.h>

#include "common/config.h"
#include "userdb/userdb.h"

static struct {
    char *global;
    char *master[UD_MAX_CLUSTERS + 1][2];
    char *user, *password;
    struct ud_user_table tables[UD_MAX_USER_TABLES];
    int ntables;
    double ttl;
} conf = { .ttl = 2 };

static int verbose = 1;

static void die(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "usermove: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(code);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    if (!verbose)
        return;
    va_list ap;
    va_start(ap, fmt);
    printf("usermove: ");
    vprintf(fmt, ap);
    printf("\n");
    fflush(stdout);
    va_end(ap);
}

static void read_conf(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        die(1, "cannot read %s: %s", path, strerror(errno));
    char buf[4096];
    while (fgets(buf, sizeof buf, f)) {
        char *line = cfg_trim(buf);
        if (!*line || *line == '#')
            continue;
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        char *k = cfg_trim(line), *v = cfg_trim(eq + 1);
        int c;
        char kind[16];
        if (!strcmp(k, "global")) {
            conf.global = strdup(v);
        } else if (!strcmp(k, "backend_user")) {
            conf.user = strdup(v);
        } else if (!strcmp(k, "backend_password")) {
            conf.password = strdup(v);
        } else if (!strcmp(k, "directory_ttl")) {
            conf.ttl = atof(v);
        } else if (!strcmp(k, "user_table")) {
            struct ud_user_table t;
            memset(&t, 0, sizeof t);
            if (conf.ntables >= UD_MAX_USER_TABLES ||
                sscanf(v, "%64[A-Za-z0-9_]:%64[A-Za-z0-9_]", t.table, t.column) != 2)
                die(1, "%s: bad user_table '%s'", path, v);
            conf.tables[conf.ntables++] = t;
        } else if (sscanf(k, "cluster.%d.%15s", &c, kind) == 2 && c >= 1 && c <= UD_MAX_CLUSTERS &&
                   !strcmp(kind, "master")) {
            if (!conf.master[c][0])
                conf.master[c][0] = strdup(v);
            else if (!conf.master[c][1])
                conf.master[c][1] = strdup(v);
        }
    }
    fclose(f);
    if (!conf.global)
        die(1, "%s: no global database", path);
    if (!conf.user)
        conf.user = strdup("root");
}

static MYSQL *connect_dsn(const char *dsn_text)
{
    struct ud_dsn d;
    char err[300];
    if (ud_dsn_parse(dsn_text, &d, err, sizeof err) < 0)
        die(1, "%s", err);
    MYSQL *my = mysql_init(NULL);
    unsigned timeout = 10;
    mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout);
    if (!mysql_real_connect(my, d.socket[0] ? NULL : d.host, conf.user, conf.password ? conf.password : "", d.database,
                            (unsigned)d.port, d.socket[0] ? d.socket : NULL, 0))
        die(1, "connect %s: %s", dsn_text, mysql_error(my));
    mysql_set_character_set(my, "binary");
    return my;
}

static void q(MYSQL *my, const char *sql)
{
    if (mysql_query(my, sql))
        die(1, "%s: %s", sql, mysql_error(my));
}

/* One row of one statement; NULL when it returns no row. Caller frees. */
static MYSQL_RES *q1(MYSQL *my, const char *sql, MYSQL_ROW *row)
{
    q(my, sql);
    MYSQL_RES *r = mysql_store_result(my);
    if (!r)
        die(1, "%s: %s", sql, mysql_error(my));
    *row = mysql_fetch_row(r);
    return r;
}

/* A statement on the destination inside the copy: deadlocks and lock
 * waits (other movers' gap locks on the same table) make the copy retry. */
static int qd(MYSQL *my, const char *sql)
{
    if (mysql_query(my, sql) == 0)
        return 0;
    unsigned e = mysql_errno(my);
    if (e == 1213 || e == 1205)
        return -1;
    die(1, "%.200s: %s", sql, mysql_error(my));
}

/* Copy one table's rows for uid from src to dst in one transaction.
 * Returns the rows copied, or -1 if the destination asked for a retry. */
static long long copy_table(MYSQL *src, MYSQL *dst, const struct ud_user_table *t, unsigned uid)
{
    char sql[512];
    if (qd(dst, "START TRANSACTION") < 0)
        return -1;
    snprintf(sql, sizeof sql, "DELETE FROM `%s` WHERE `%s` = %u", t->table, t->column, uid);
    if (qd(dst, sql) < 0) {
        mysql_query(dst, "ROLLBACK");
        return -1;
    }
    snprintf(sql, sizeof sql, "SELECT * FROM `%s` WHERE `%s` = %u", t->table, t->column, uid);
    q(src, sql);
    MYSQL_RES *res = mysql_use_result(src);
    if (!res)
        die(1, "%s: %s", sql, mysql_error(src));
    unsigned ncols = mysql_num_fields(res);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    long long rows = 0;
    int failed = 0;
    MYSQL_ROW row;
    while (!failed && (row = mysql_fetch_row(res))) {
        unsigned long *lens = mysql_fetch_lengths(res);
        size_t need = 64;
        for (unsigned i = 0; i < ncols; i++)
            need += 2 * lens[i] + 4;
        if (len && len + need > (1u << 20)) { /* flush about every MiB */
            failed = qd(dst, buf) < 0;
            len = 0;
        }
        if (need + 256 > cap) {
            cap = need + 256 + (1 << 20);
            buf = realloc(buf, cap);
        }
        if (len == 0)
            len = (size_t)snprintf(buf, cap, "INSERT INTO `%s` VALUES ", t->table);
        else
            buf[len++] = ',';
        buf[len++] = '(';
        for (unsigned i = 0; i < ncols; i++) {
            if (i)
                buf[len++] = ',';
            if (!row[i]) {
                memcpy(buf + len, "NULL", 4);
                len += 4;
            } else {
                buf[len++] = '\'';
                len += mysql_real_escape_string(dst, buf + len, row[i], lens[i]);
                buf[len++] = '\'';
            }
        }
        buf[len++] = ')';
        buf[len] = '\0';
        rows++;
    }
    if (!failed && mysql_errno(src))
        die(1, "reading %s: %s", t->table, mysql_error(src));
    mysql_free_result(res); /* reads what is left of the stream */
    if (!failed && len)
        failed = qd(dst, buf) < 0;
    free(buf);
    if (!failed)
        failed = qd(dst, "COMMIT") < 0;
    if (failed) {
        mysql_query(dst, "ROLLBACK");
        return -1;
    }
    return rows;
}

/* COUNT, BIT_XOR and SUM of CRC32 over every column of the user's rows. */
static void checksum(MYSQL *my, const struct ud_user_table *t, unsigned uid, char *out, size_t outlen)
{
    char sql[8192];
    snprintf(sql, sizeof sql, "SHOW COLUMNS FROM `%s`", t->table);
    q(my, sql);
    MYSQL_RES *r = mysql_store_result(my);
    if (!r)
        die(1, "%s: %s", sql, mysql_error(my));
    size_t n = (size_t)snprintf(sql, sizeof sql,
                                "SELECT COUNT(*), COALESCE(BIT_XOR(c), 0), COALESCE(SUM(c), 0) "
                                "FROM (SELECT CRC32(CONCAT_WS(',' ");
    MYSQL_ROW row;
    while ((row = mysql_fetch_row(r)) && n < sizeof sql - 300)
        n += (size_t)snprintf(sql + n, sizeof sql - n, ", IFNULL(HEX(`%s`), 'N')", row[0]);
    mysql_free_result(r);
    snprintf(sql + n, sizeof sql - n, ")) AS c FROM `%s` WHERE `%s` = %u) AS x", t->table, t->column, uid);
    MYSQL_RES *res = q1(my, sql, &row);
    snprintf(out, outlen, "%s/%s/%s", row[0], row[1], row[2]);
    mysql_free_result(res);
}

/* The active side of a cluster's a/b pair, as routers see it (clusterstate). */
static const char *active_master(MYSQL *g, long c)
{
    char sql[128];
    MYSQL_ROW row;
    snprintf(sql, sizeof sql, "SELECT active FROM clusterstate WHERE clusterid = %ld", c);
    MYSQL_RES *r = q1(g, sql, &row);
    int side = row && row[0] && row[0][0] == 'b' && conf.master[c][1] ? 1 : 0;
    mysql_free_result(r);
    return conf.master[c][side];
}

/* --help (stdout, exit 0) is also the man page's text (help2man); a usage
 * error prints the same to stderr and exits 1. */
static void help(FILE *f, int code)
{
    fprintf(f, "Usage: usermove -c FILE [--delete] [--drain SECONDS] [-q] USERID CLUSTERID\n"
               "Move one user's rows to another cluster while the site runs.\n"
               "\n"
               "The user is made read-only (routers refuse its writes within directory_ttl), its rows in every\n"
               "user_table are copied to CLUSTERID in one transaction and verified (row counts and CRC32\n"
               "checksums), then the global directory points at the new cluster. Killed before that, the\n"
               "user stays where it was; running usermove again finishes the move.\n"
               "\n"
               "Options:\n"
               "  -c, --config=FILE    the userdbd config file (global, backend_user, backend_password,\n"
               "                       cluster.N.master, user_table, directory_ttl)\n"
               "      --delete         then delete the user's rows on the old cluster\n"
               "      --drain=SECONDS  extra wait for readers of the old location (default 1)\n"
               "  -q, --quiet          print nothing but errors\n"
               "  -h, --help           show this help and exit\n"
               "  -V, --version        show the version and exit\n"
               "\n"
               "Exit status: 0 when the user was moved (or already was on CLUSTERID), 1 otherwise.\n");
    exit(code);
}

static void usage(void) { help(stderr, 1); }

int main(int argc, char **argv)
{
    const char *cfg = NULL;
    bool del = false;
    double drain = 1;
    static const struct option opts[] = { { "config", required_argument, NULL, 'c' },
                                          { "delete", no_argument, NULL, 'd' },
                                          { "drain", required_argument, NULL, 'D' },
                                          { "quiet", no_argument, NULL, 'q' },
                                          { "help", no_argument, NULL, 'h' },
                                          { "version", no_argument, NULL, 'V' },
                                          { NULL, 0, NULL, 0 } };
    int ch;
    while ((ch = getopt_long(argc, argv, "c:qhV", opts, NULL)) != -1) {
        switch (ch) {
        case 'h': help(stdout, 0); break;
        case 'V': printf("usermove %s\n", UD_VERSION); return 0;
        case 'c': cfg = optarg; break;
        case 'd': del = true; break;
        case 'D': drain = atof(optarg); break;
        case 'q': verbose = 0; break;
        default: usage();
        }
    }
    if (!cfg || argc - optind != 2)
        usage();
    char *end;
    unsigned long uid = strtoul(argv[optind], &end, 10);
    if (*end || uid == 0 || uid > 0xffffffffUL)
        die(1, "bad user id '%s'", argv[optind]);
    long dest = strtol(argv[optind + 1], &end, 10);
    if (*end || dest < 1 || dest > UD_MAX_CLUSTERS)
        die(1, "bad cluster id '%s'", argv[optind + 1]);
    read_conf(cfg);
    if (!conf.master[dest][0])
        die(1, "cluster %ld has no master in %s", dest, cfg);
    if (conf.ntables == 0)
        die(1, "%s names no user_table: nothing to copy", cfg);

    MYSQL *g = connect_dsn(conf.global);
    char sql[512];
    MYSQL_ROW row;
    MYSQL_RES *r;

    /* 1. One mover per user, across hosts. */
    snprintf(sql, sizeof sql, "SELECT GET_LOCK('userdb-move-%lu', 0)", uid);
    r = q1(g, sql, &row);
    if (!row || !row[0] || strcmp(row[0], "1"))
        die(2, "another mover holds user %lu", uid);
    mysql_free_result(r);

    snprintf(sql, sizeof sql, "SELECT clusterid, readonly FROM user WHERE userid = %lu", uid);
    r = q1(g, sql, &row);
    if (!row)
        die(1, "no user %lu", uid);
    long cur = atol(row[0]);
    bool ro = atoi(row[1]) != 0;
    mysql_free_result(r);

    /* 2. Resume an open move, or start one. */
    long cmid = 0, src = cur;
    snprintf(sql, sizeof sql,
             "SELECT cmid, sclust, dclust FROM clustermove WHERE userid = %lu AND timedone IS NULL ORDER BY cmid DESC "
             "LIMIT 1",
             uid);
    r = q1(g, sql, &row);
    if (row) {
        cmid = atol(row[0]);
        src = atol(row[1]);
        if (atol(row[2]) != dest)
            die(1, "user %lu has an unfinished move to cluster %s; finish that first", uid, row[2]);
        if (src != cur)
            die(1, "user %lu: open move says cluster %ld but the directory says %ld", uid, src, cur);
        say("resuming move %ld of user %lu from cluster %ld", cmid, uid, src);
    }
    mysql_free_result(r);
    if (!cmid && cur == dest) {
        say("user %lu is already on cluster %ld", uid, dest);
        mysql_close(g);
        return 0;
    }
    if (!conf.master[src][0])
        die(1, "cluster %ld (the source) has no master in %s", src, cfg);
    if (!cmid) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO clustermove (userid, sclust, dclust, timestart) VALUES (%lu, %ld, %ld, UNIX_TIMESTAMP())",
                 uid, src, dest);
        q(g, sql);
        cmid = (long)mysql_insert_id(g);
        say("move %ld: user %lu from cluster %ld to %ld", cmid, uid, src, dest);
    }
    if (!ro) {
        snprintf(sql, sizeof sql, "UPDATE user SET readonly = 1 WHERE userid = %lu", uid);
        q(g, sql);
    }
    /* Routers may act on their cached, writable view for directory_ttl;
     * a statement they let through may still be running for drain. */
    usleep((useconds_t)((conf.ttl + drain) * 1e6));

    /* 3 + 4. Copy and verify; then, drain later, check that the source
     * has not changed since. A write a router sent just before its cached
     * answer expired may commit on the source after the copy read it (a
     * slow or loaded backend): then the copy is redone, the user still
     * read-only, until the source stays still for a whole drain. */
    MYSQL *s = connect_dsn(active_master(g, src));
    MYSQL *d = connect_dsn(active_master(g, dest));
    static char sums[UD_MAX_USER_TABLES][128];
    for (int round = 0;; round++) {
        for (int i = 0; i < conf.ntables; i++) {
            long long n = -1;
            for (int attempt = 0; attempt < 20 && n < 0; attempt++) {
                if (attempt)
                    usleep((useconds_t)(20000 * attempt + rand() % 20000));
                n = copy_table(s, d, &conf.tables[i], (unsigned)uid);
            }
            if (n < 0)
                die(3,
                    "%s: the destination kept reporting deadlocks; user %lu stays on cluster %ld, read-only, move "
                    "%ld open: run again",
                    conf.tables[i].table, uid, src, cmid);
            char b[128];
            checksum(s, &conf.tables[i], (unsigned)uid, sums[i], sizeof sums[i]);
            checksum(d, &conf.tables[i], (unsigned)uid, b, sizeof b);
            if (strcmp(sums[i], b))
                die(3,
                    "%s: checksums differ after the copy (source %s, destination %s); user %lu stays on cluster "
                    "%ld, read-only, move %ld open: run again",
                    conf.tables[i].table, sums[i], b, uid, src, cmid);
            say("%s: %lld rows copied, checksum %s", conf.tables[i].table, n, sums[i]);
        }
        usleep((useconds_t)(drain * 1e6));
        int changed = -1;
        for (int i = 0; i < conf.ntables && changed < 0; i++) {
            char a[128];
            checksum(s, &conf.tables[i], (unsigned)uid, a, sizeof a);
            if (strcmp(a, sums[i]))
                changed = i;
        }
        if (changed < 0)
            break;
        if (round >= 9)
            die(3,
                "%s: the source kept changing after the copy; user %lu stays on cluster %ld, read-only, move %ld "
                "open: run again",
                conf.tables[changed].table, uid, src, cmid);
        say("%s: a write landed on the source after the copy; copying again", conf.tables[changed].table);
    }

    /* 5. The flip. */
    q(g, "START TRANSACTION");
    snprintf(sql, sizeof sql, "UPDATE user SET clusterid = %ld, readonly = 0 WHERE userid = %lu AND clusterid = %ld",
             dest, uid, src);
    q(g, sql);
    if (mysql_affected_rows(g) != 1)
        die(1, "user %lu is no longer on cluster %ld; not flipping", uid, src);
    snprintf(sql, sizeof sql, "UPDATE clustermove SET timedone = UNIX_TIMESTAMP(), state = 'done' WHERE cmid = %ld",
             cmid);
    q(g, sql);
    q(g, "COMMIT");
    say("user %lu is on cluster %ld", uid, dest);

    /* 6. Optionally delete the source copy, once no router can still read it. */
    if (del) {
        usleep((useconds_t)((conf.ttl + drain) * 1e6));
        for (int i = 0; i < conf.ntables; i++) {
            snprintf(sql, sizeof sql, "DELETE FROM `%s` WHERE `%s` = %lu", conf.tables[i].table, conf.tables[i].column,
                     uid);
            int tries = 0;
            while (qd(s, sql) < 0 && ++tries < 20)
                usleep((useconds_t)(20000 * tries));
        }
        snprintf(sql, sizeof sql, "UPDATE clustermove SET state = 'deleted' WHERE cmid = %ld", cmid);
        q(g, sql);
        say("source rows deleted");
    }
    snprintf(sql, sizeof sql, "DO RELEASE_LOCK('userdb-move-%lu')", uid);
    q(g, sql);
    mysql_close(s);
    mysql_close(d);
    mysql_close(g);
    return 0;
}
