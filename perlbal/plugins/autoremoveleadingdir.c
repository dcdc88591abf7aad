/* plugins/autoremoveleadingdir.c: Perlbal's autoremoveleadingdir plugin — web_server: strip the docroot's last
 * directory from the URI. */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/conn.h"
#include "common/line.h"
#include "common/log.h"
#include "common/loop.h"
#include "perlbal/perlbal.h"
#include "perlbal/plugin.h"

static void autoremove_path(struct pb_service *svc, char *path, size_t cap)
{
    (void)cap;
    const char *d = svc->docroot;
    if (!d)
        return;
    size_t dl = strlen(d);
    while (dl > 0 && d[dl - 1] == '/')
        dl--;
    size_t b = dl;
    while (b > 0 && d[b - 1] != '/')
        b--;
    size_t tl = dl - b;
    if (tl == 0)
        return;
    for (size_t i = b; i < dl; i++)
        if (!isalnum((unsigned char)d[i]) && d[i] != '_' && d[i] != '-')
            return;
    /* "/tail" or "/tail/..." loses "/tail" (a whole path segment only) */
    if (path[0] == '/' && !strncmp(path + 1, d + b, tl) && (path[1 + tl] == '/' || path[1 + tl] == 0)) {
        if (path[1 + tl] == 0) {
            path[0] = '/';
            path[1] = 0;
        } else {
            memmove(path, path + 1 + tl, strlen(path + 1 + tl) + 1);
        }
    }
}

const struct pb_plugin pb_plugin_autoremoveleadingdir = { .name = "autoremoveleadingdir",
                                                          .serve_path = autoremove_path };
