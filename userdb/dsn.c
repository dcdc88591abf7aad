/* dsn: DBI-style data source names, as in LiveJournal's config and Perl's
 * DBD::mysql: DBI:mysql:database=D;host=H;port=P, or ;mysql_socket=S, plus
 * ;weight=W for replicas. Shared by userdbd and usermove. */
#include "userdb/userdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int ud_dsn_parse(const char *s, struct ud_dsn *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    out->port = 3306;
    out->weight = 1;
    if (strncasecmp(s, "DBI:mysql:", 10) != 0 && strncasecmp(s, "DBI:MariaDB:", 12) != 0) {
        snprintf(err, errlen, "DSN '%s': want DBI:mysql:database=D;host=H;port=P", s);
        return -1;
    }
    const char *p = strchr(s + 4, ':') + 1;
    while (*p) {
        const char *semi = strchr(p, ';');
        size_t n = semi ? (size_t)(semi - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (!eq) {
            snprintf(err, errlen, "DSN '%s': '%.*s' is not key=value", s, (int)n, p);
            return -1;
        }
        size_t kl = (size_t)(eq - p), vl = n - kl - 1;
        const char *v = eq + 1;
        char val[256];
        if (vl >= sizeof val) {
            snprintf(err, errlen, "DSN '%s': value too long", s);
            return -1;
        }
        memcpy(val, v, vl);
        val[vl] = '\0';
#define KEY(k) (kl == strlen(k) && strncasecmp(p, k, kl) == 0)
        if (KEY("database") || KEY("dbname") || KEY("db")) {
            if (vl > 64) {
                snprintf(err, errlen, "DSN '%s': database name too long", s);
                return -1;
            }
            memcpy(out->database, val, vl + 1);
        } else if (KEY("host") || KEY("hostname")) {
            snprintf(out->host, sizeof out->host, "%s", val);
        } else if (KEY("port")) {
            char *end;
            long port = strtol(val, &end, 10);
            if (*end || port < 1 || port > 65535) {
                snprintf(err, errlen, "DSN '%s': bad port", s);
                return -1;
            }
            out->port = (int)port;
        } else if (KEY("mysql_socket") || KEY("socket")) {
            snprintf(out->socket, sizeof out->socket, "%s", val);
        } else if (KEY("weight")) {
            char *end;
            long w = strtol(val, &end, 10);
            if (*end || w < 0 || w > 1000000) {
                snprintf(err, errlen, "DSN '%s': weight is 0..1000000", s);
                return -1;
            }
            out->weight = (int)w;
        } else {
            snprintf(err, errlen, "DSN '%s': unknown key '%.*s'", s, (int)kl, p);
            return -1;
        }
#undef KEY
        p += n;
        if (*p == ';')
            p++;
    }
    if (!out->host[0] && !out->socket[0])
        snprintf(out->host, sizeof out->host, "127.0.0.1");
    return 0;
}

