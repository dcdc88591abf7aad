/* MogileFS's own config files, shared by mogilefsd and mogstored: `key = value`
 * lines as the Perl daemons read them. Known keys go through the settings
 * table; unknown ones are warned about and ignored (MogileFS configs carry
 * keys of plugins and tools), never fatal. */
#include "mogilefs/mogilefs.h"

#include <stdio.h>
#include <string.h>

#include "common/config.h"

static char *trim(char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == '\n' || e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
        *--e = '\0';
    return p;
}

int mog_conf_read(const char *prog, const struct cfg_setting *const *tables, const char *path, bool live_only,
                  char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s", path);
        return -1;
    }
    char line[4096];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *p = trim(line);
        if (!*p || *p == '#')
            continue;
        char *eq = strchr(p, '=');
        if (!eq) {
            if (!live_only)
                fprintf(stderr, "%s: %s:%d: ignoring line without '='\n", prog, path, lineno);
            continue;
        }
        *eq = '\0';
        char *k = trim(p), *v = trim(eq + 1);
        const struct cfg_setting *known = strcmp(k, "config") ? cfg_find(tables, k) : NULL;
        if (!known) {
            if (!live_only)
                fprintf(stderr, "%s: %s:%d: unknown setting '%s' ignored\n", prog, path, lineno, k);
            continue;
        }
        if (live_only && !known->live)
            continue;
        char e2[256];
        if (cfg_set(tables, k, v, false, e2, sizeof e2) < 0) {
            snprintf(err, errlen, "%s:%d: %s", path, lineno, e2);
            rc = -1;
            break;
        }
    }
    fclose(f);
    return rc;
}
