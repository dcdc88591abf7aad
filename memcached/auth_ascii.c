/* auth_ascii: password files (read at start and on HUP, checked in
 * constant time) and memcached's text-protocol authentication, -Y (see
 * auth.h). The login step runs in place of the text parser until the
 * connection has logged in; it never touches the store. */
#include "memcached/auth.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/log.h"
#include "memcached/session.h"

struct mc_pw_entry {
    char *user, *pass;
    size_t ulen, plen;
};

#define PW_LINE_MAX 4096

static void free_entries(struct mc_pw_entry *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i].user);
        explicit_bzero(v[i].pass, v[i].plen);
        free(v[i].pass);
    }
    free(v);
}

long mc_pwfile_load(struct mc_pwfile *pf, const char *path, bool strict, char *err, size_t errlen)
{
    /* A small file read on the calling thread: main at start, loop 0 on
     * HUP (rare; the file is a handful of lines). */
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "Could not open %s for reading: %s", path, strerror(errno));
        return -1;
    }
    struct mc_pw_entry *v = NULL;
    size_t n = 0, cap = 0;
    char line[PW_LINE_MAX + 2];
    long rc = 0;
    unsigned lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "%s line %u: longer than %d bytes", path, lineno, PW_LINE_MAX);
            rc = -1;
            break;
        }
        len = strcspn(line, "\r\n");
        line[len] = 0;
        if (len == 0)
            continue;
        char *colon = strchr(line, ':');
        if (!colon) {
            if (!strict)
                continue;
            snprintf(err, errlen, "%s has a malformed entry (line %u). Should be 'user:password'", path, lineno);
            rc = -1;
            break;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct mc_pw_entry *nv = realloc(v, nc * sizeof *nv);
            if (!nv) {
                snprintf(err, errlen, "Out of memory reading password file: %s", path);
                rc = -1;
                break;
            }
            v = nv;
            cap = nc;
        }
        struct mc_pw_entry *e = &v[n];
        e->ulen = (size_t)(colon - line);
        e->plen = strlen(colon + 1);
        e->user = strndup(line, e->ulen);
        e->pass = strdup(colon + 1);
        if (!e->user || !e->pass) {
            free(e->user);
            free(e->pass);
            snprintf(err, errlen, "Out of memory reading password file: %s", path);
            rc = -1;
            break;
        }
        n++;
    }
    fclose(f);
    explicit_bzero(line, sizeof line);
    if (rc < 0) {
        free_entries(v, n);
        return -1;
    }
    pthread_rwlock_wrlock(&pf->lock);
    struct mc_pw_entry *old = pf->v;
    size_t oldn = pf->n;
    pf->v = v;
    pf->n = n;
    pthread_rwlock_unlock(&pf->lock);
    free_entries(old, oldn);
    return (long)n;
}

/* Equal in time that depends only on the longer length, not on where
 * the first difference is. */
static unsigned ct_differ(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen > blen ? alen : blen;
    unsigned diff = alen != blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(unsigned char)((i < alen ? a[i] : 0) ^ (i < blen ? b[i] : 0));
    return diff;
}

bool mc_pwfile_check(struct mc_pwfile *pf, const char *user, size_t ulen, const char *pass, size_t plen)
{
    unsigned ok = 0;
    pthread_rwlock_rdlock(&pf->lock);
    for (size_t i = 0; i < pf->n; i++) {
        const struct mc_pw_entry *e = &pf->v[i];
        unsigned d = ct_differ(e->user, e->ulen, user, ulen) | ct_differ(e->pass, e->plen, pass, plen);
        ok |= d == 0;
    }
    pthread_rwlock_unlock(&pf->lock);
    return ok != 0;
}

/* ------------------------------------------------------------------ */
/* -Y */

static struct mc_pwfile ascii_users = MC_PWFILE_INIT;

int mc_auth_ascii_load(char *err, size_t errlen)
{
    long n = mc_pwfile_load(&ascii_users, mc_settings.auth_file, true, err, errlen);
    if (n < 0)
        return -1;
    log_info("ascii auth: %ld users loaded from %s", n, mc_settings.auth_file);
    return 0;
}

#define AUTH_LINE_MAX 2048 /* memcached closes a login line with no end within 2 KiB */
#define AUTH_DATA_MAX 4096 /* ours: the "user password" block */

/* Space-separated tokens of p[0..n), empty ones skipped (memcached's
 * tokenizer); at most max. */
static int tokens(const char *p, size_t n, const char **tok, size_t *tlen, int max)
{
    int k = 0;
    size_t i = 0;
    while (i < n && k < max) {
        while (i < n && p[i] == ' ')
            i++;
        if (i >= n)
            break;
        size_t start = i;
        while (i < n && p[i] != ' ')
            i++;
        tok[k] = p + start;
        tlen[k] = i - start;
        k++;
    }
    return k;
}

/* A decimal (what memcached's strtoul takes: digits, then the end or
 * white space such as the line's \r). */
static bool parse_size(const char *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < n && p[i] >= '0' && p[i] <= '9'; i++) {
        if (v > (UINT32_MAX - 9) / 10)
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (i == 0 || (i < n && p[i] != '\r' && p[i] != ' ' && p[i] != '\t'))
        return false;
    *out = v;
    return true;
}

int mc_auth_ascii_step(struct session *s, struct evbuffer *in, size_t len, bool *progress)
{
    if (len < 2)
        return 0;
    size_t look = len < AUTH_LINE_MAX + 1 ? len : AUTH_LINE_MAX + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ssize_t)look);
    if (!p)
        return 0;
    const char *lf = memchr(p, '\n', look);
    if (!lf) {
        if (len > AUTH_LINE_MAX) { /* junk: memcached closes */
            *progress = true;
            return -1;
        }
        return 0;
    }
    size_t line_len = (size_t)(lf - p);
    const char *tok[6];
    size_t tl[6];
    int nt = tokens(p, line_len, tok, tl, 6);
    uint64_t size = 0;
    if (nt < 5 || tl[0] != 3 || memcmp(tok[0], "set", 3) != 0 || !parse_size(tok[4], tl[4], &size)) {
        *progress = true;
        evbuffer_drain(in, line_len + 1);
        mc_out_line(s, "CLIENT_ERROR unauthenticated");
        return 0;
    }
    if (size + 2 > AUTH_DATA_MAX) {
        /* more than any user and password: answered, then closed (the
         * stream cannot be followed without reading all of it) */
        *progress = true;
        mc_out_line(s, "CLIENT_ERROR bad authentication token format");
        return 1;
    }
    size_t need = line_len + 1 + (size_t)size + 2;
    if (len < need)
        return 0;
    p = (const char *)evbuffer_pullup(in, (ssize_t)need);
    if (!p)
        return 0;
    *progress = true;
    const char *data = p + line_len + 1;
    const char *reply;
    if (data[size] != '\r' || data[size + 1] != '\n') {
        reply = "CLIENT_ERROR bad command line termination";
    } else if ((nt = tokens(data, (size_t)size, tok, tl, 2)) < 2) {
        reply = "CLIENT_ERROR bad authentication token format";
    } else if (mc_pwfile_check(&ascii_users, tok[0], tl[0], tok[1], tl[1])) {
        reply = "STORED";
        s->auth_ascii = false;
        MC_STAT_ADD(&s->th->st, auth_cmds, 1);
    } else {
        reply = "CLIENT_ERROR authentication failure";
        MC_STAT_ADD(&s->th->st, auth_cmds, 1);
        MC_STAT_ADD(&s->th->st, auth_errors, 1);
        mc_sess_auth_failed(s);
    }
    evbuffer_drain(in, need);
    mc_out_line(s, reply);
    return 0;
}
