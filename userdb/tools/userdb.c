/* userdb: a command-line client for userdbd's own functions, speaking the
 * MySQL protocol to the router through libmariadb (as any application does).
 *
 *   userdb [-h HOST] [-P PORT] [-u USER] create NAME        new user -> its id
 *   userdb [...] counter USERID AREA                        next counter id
 *   userdb [...] where USERID                               the user's cluster and read-only flag
 *
 * The password comes from $USERDB_PASSWORD (never from the command line,
 * where other users could read it). */
#include <ctype.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mysql.h>

#include "userdb/userdb.h"

/* --help (stdout, exit 0) is also the man page's text (help2man); a usage
 * error prints the same to stderr and exits 1. -h is the host, as for the
 * mysql/mariadb client. */
static void help(FILE *f, int code)
{
    fprintf(f, "Usage: userdb [-h HOST] [-P PORT] [-u USER] COMMAND [ARG]...\n"
               "Call userdbd's own functions through the router, over the MySQL protocol.\n"
               "\n"
               "Options:\n"
               "  -h HOST              the userdbd to use (default 127.0.0.1)\n"
               "  -P PORT              its port (default 7010)\n"
               "  -u USER              the client user to log in as (default userdb); the password is\n"
               "                       taken from $USERDB_PASSWORD, never from the command line\n"
               "      --help           show this help and exit\n"
               "      --version        show the version and exit\n"
               "\n"
               "Commands:\n"
               "  create NAME          create a user on one of the default clusters; prints its id\n"
               "  counter USERID AREA  the next id of the user's counter AREA\n"
               "  where USERID         the user's cluster id and read-only flag\n"
               "\n"
               "Exit status: 0 on success, 1 on a usage error or when the router refused.\n");
    exit(code);
}

static void usage(void) { help(stderr, 1); }

static int is_id(const char *s)
{
    if (!*s || strlen(s) > 10)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *user = "userdb";
    unsigned port = 7010;
    int c;
    static const struct option opts[] = { { "help", no_argument, NULL, 'H' },
                                          { "version", no_argument, NULL, 'V' },
                                          { NULL, 0, NULL, 0 } };
    while ((c = getopt_long(argc, argv, "h:P:u:", opts, NULL)) != -1) {
        switch (c) {
        case 'H': help(stdout, 0); break;
        case 'V': printf("userdb %s\n", UD_VERSION); return 0;
        case 'h': host = optarg; break;
        case 'P': port = (unsigned)atoi(optarg); break;
        case 'u': user = optarg; break;
        default: usage();
        }
    }
    argc -= optind;
    argv += optind;
    if (argc < 1)
        usage();
    const char *pw = getenv("USERDB_PASSWORD");
    MYSQL *my = mysql_init(NULL);
    if (!mysql_real_connect(my, host, user, pw ? pw : "", NULL, port, NULL, 0)) {
        fprintf(stderr, "userdb: %s\n", mysql_error(my));
        return 1;
    }
    char sql[512], q[300];
    if (!strcmp(argv[0], "create") && argc == 2) {
        size_t n = strlen(argv[1]);
        if (n == 0 || n > 64)
            usage();
        mysql_real_escape_string(my, q, argv[1], (unsigned long)n);
        snprintf(sql, sizeof sql, "/* user=new */ SELECT userdb_create_user('%s')", q);
    } else if (!strcmp(argv[0], "counter") && argc == 3 && is_id(argv[1])) {
        size_t n = strlen(argv[2]);
        if (n == 0 || n > 16)
            usage();
        mysql_real_escape_string(my, q, argv[2], (unsigned long)n);
        snprintf(sql, sizeof sql, "/* user=%s */ SELECT userdb_counter('%s')", argv[1], q);
    } else if (!strcmp(argv[0], "where") && argc == 2 && is_id(argv[1])) {
        snprintf(sql, sizeof sql, "SELECT clusterid, readonly FROM user WHERE userid = %s", argv[1]);
    } else {
        usage();
    }
    if (mysql_query(my, sql)) {
        fprintf(stderr, "userdb: %s\n", mysql_error(my));
        mysql_close(my);
        return 1;
    }
    MYSQL_RES *res = mysql_store_result(my);
    MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
    int rc = 0;
    if (!row) {
        fprintf(stderr, "userdb: no such user\n");
        rc = 1;
    } else if (!strcmp(argv[0], "where")) {
        printf("cluster %s%s\n", row[0], row[1] && strcmp(row[1], "0") ? " readonly" : "");
    } else {
        printf("%s\n", row[0]);
    }
    if (res)
        mysql_free_result(res);
    mysql_close(my);
    return rc;
}
