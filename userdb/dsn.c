/* dsn: DBI-style data source names, as in LiveJournal's config and Perl's
 * DBD::mysql. The parsing is the core's (db_config_dsn: database/db/dbname,
 * host, port, mysql_socket, the positional DBI:mysql:D:H:P form...); what is
 * userdb's own is the replica weight (;weight=W), taken off here before the
 * rest goes to the core, and the flat struct both userdbd and usermove use.
 * A DSN for userdb must name a MySQL/MariaDB server, not SQLite. */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/db.h"
#include "common/num.h"

int ud_dsn_parse(const char *s, struct ud_dsn *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 3306;
    out->weight = 1;
    size_t n = strlen(s);
    if (n >= 1024) {
        snprintf(err, errlen, "DSN too long (%zu bytes)", n);
        return -1;
    }
    /* Copy s without its weight= (and old socket= spelled mysql_socket=). */
    char rest[1100];
    size_t o = 0;
    const char *colon = strncasecmp(s, "dbi:", 4) == 0 ? strchr(s + 4, ':') : NULL;
    size_t head = colon ? (size_t)(colon - s) + 1 : n;
    memcpy(rest, s, head);
    o = head;
    const char *p = s + head;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t kvn = semi ? (size_t)(semi - p) : strlen(p);
        if (kvn > 7 && strncasecmp(p, "weight=", 7) == 0) {
            int w;
            char val[16];
            if (kvn - 7 >= sizeof val ||
                (memcpy(val, p + 7, kvn - 7), val[kvn - 7] = '\0', parse_int_str(val, 0, 1000000, &w) != NUM_OK)) {
                snprintf(err, errlen, "DSN '%s': weight is 0..1000000", s);
                return -1;
            }
            out->weight = w;
        } else if (kvn) {
            if (o > head)
                rest[o++] = ';';
            if (kvn > 7 && strncasecmp(p, "socket=", 7) == 0) {
                memcpy(rest + o, "mysql_", 6);
                o += 6;
            }
            memcpy(rest + o, p, kvn);
            o += kvn;
        }
        p += kvn;
        if (*p == ';')
            p++;
    }
    rest[o] = '\0';
    struct db_config cfg = { 0 };
    char why[256];
    if (db_config_dsn(&cfg, rest, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s", why);
        return -1;
    }
    int rc = -1;
    if (cfg.driver != DB_MYSQL) {
        snprintf(err, errlen, "DSN '%s': want DBI:mysql:database=D;host=H;port=P", s);
    } else if (cfg.database && strlen(cfg.database) > 64) {
        snprintf(err, errlen, "DSN '%s': database name too long", s);
    } else if ((cfg.host && strlen(cfg.host) >= sizeof out->host) ||
               (cfg.socket && strlen(cfg.socket) >= sizeof out->socket)) {
        snprintf(err, errlen, "DSN '%s': value too long", s);
    } else {
        if (cfg.database)
            snprintf(out->database, sizeof out->database, "%s", cfg.database);
        if (cfg.host)
            snprintf(out->host, sizeof out->host, "%s", cfg.host);
        if (cfg.socket)
            snprintf(out->socket, sizeof out->socket, "%s", cfg.socket);
        if (cfg.port)
            out->port = cfg.port;
        if (!out->host[0] && !out->socket[0])
            snprintf(out->host, sizeof out->host, "127.0.0.1");
        rc = 0;
    }
    db_config_clear(&cfg);
    return rc;
}
