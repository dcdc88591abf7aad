/* plugins/include.c: Perlbal's Include plugin — `INCLUDE = glob [glob ...]`
 * runs the config files the patterns match, in order (each pattern sorted),
 * as if their lines were typed here. A pattern that matches nothing is an
 * error, as in Perlbal; includes nest at most PB_INCLUDE_DEPTH deep. */
#include <glob.h>
#include <stdio.h>
#include <string.h>

#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

#define PB_INCLUDE_DEPTH 8

static __thread int include_depth;

static int include_command(const char *svcname, int argc, const char *const *argv, void (*out)(void *, const char *),
                           void *arg, char *err, size_t errlen)
{
    (void)svcname;
    (void)out;
    (void)arg;
    int npat = 0;
    if (include_depth >= PB_INCLUDE_DEPTH) {
        snprintf(err, errlen, "INCLUDE nested too deep (max %d)", PB_INCLUDE_DEPTH);
        return -1;
    }
    /* copy the patterns first: running a file re-enters the language
     * parser, whose buffer argv points into */
    char words[2048];
    size_t wl = 0;
    words[0] = 0;
    for (int i = 1; i < argc; i++) {
        int n = snprintf(words + wl, sizeof words - wl, "%s ", argv[i]);
        if (n < 0 || (size_t)n >= sizeof words - wl) {
            snprintf(err, errlen, "INCLUDE line too long");
            return -1;
        }
        wl += (size_t)n;
    }
    char *save = NULL;
    for (char *pat = strtok_r(words, " \t=", &save); pat; pat = strtok_r(NULL, " \t=", &save)) {
        npat++;
        glob_t g;
        int r = glob(pat, GLOB_ERR, NULL, &g);
        if (r != 0) {
            if (r != GLOB_NOMATCH)
                globfree(&g);
            snprintf(err, errlen, "Can't find any files matching '%s'", pat);
            return -1;
        }
        for (size_t k = 0; k < g.gl_pathc; k++) {
            char e[512];
            include_depth++;
            int rc = pb_manage_run_file(g.gl_pathv[k], e, sizeof e);
            include_depth--;
            if (rc < 0) {
                snprintf(err, errlen, "%s", e);
                globfree(&g);
                return -1;
            }
        }
        globfree(&g);
    }
    if (!npat) {
        snprintf(err, errlen, "usage: INCLUDE = <glob> [<glob> ...]");
        return -1;
    }
    return 0;
}

static const char *const include_cmds[] = { "include", NULL };

const struct pb_plugin pb_plugin_include = { .name = "include", .commands = include_cmds, .command = include_command };
