/* proto_text: gearmand's admin text protocol as pure functions — splitting
 * a line into words and classifying it into one of gearmand 1.1's commands.
 * The commands themselves run in cmd_text.c; nothing here touches a socket,
 * a global or the job state. */
#include "gearmand/proto.h"

#include <string.h>
#include <strings.h>

int gm_text_split(char *line, size_t len, char **tok, int max)
{
    int n = 0;
    size_t i = 0;
    line[len] = '\0';
    while (i < len && n < max) {
        while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
            i++;
        if (i >= len)
            break;
        tok[n++] = line + i;
        while (i < len && line[i] != ' ' && line[i] != '\t' && line[i] != '\r')
            i++;
        if (i < len)
            line[i++] = '\0';
    }
    return n;
}

static void set_args(struct gm_text *out, int ntok, char **tok, int first, int min, int maxa, enum gm_text_cmd cmd)
{
    int n = ntok - first;
    if (n < min || n > maxa) {
        out->cmd = GM_TEXT_BAD_ARGS;
        return;
    }
    out->cmd = cmd;
    out->argc = n;
    for (int i = 0; i < n; i++)
        out->arg[i] = tok[first + i];
}

void gm_text_classify(int ntok, char **tok, struct gm_text *out)
{
    memset(out, 0, sizeof *out);
    if (ntok <= 0) {
        out->cmd = GM_TEXT_NONE;
        return;
    }
    const char *w = tok[0];
    const char *w1 = ntok > 1 ? tok[1] : "";
    /* gearmand ignores extra words after argument-less commands. */
    if (!strcasecmp(w, "workers"))
        out->cmd = GM_TEXT_WORKERS;
    else if (!strcasecmp(w, "status"))
        out->cmd = GM_TEXT_STATUS;
    else if (!strcasecmp(w, "prioritystatus"))
        out->cmd = GM_TEXT_PRIORITYSTATUS;
    else if (!strcasecmp(w, "version"))
        out->cmd = GM_TEXT_VERSION;
    else if (!strcasecmp(w, "getpid"))
        out->cmd = GM_TEXT_GETPID;
    else if (!strcasecmp(w, "verbose"))
        out->cmd = GM_TEXT_VERBOSE;
    else if (!strcasecmp(w, "maxqueue"))
        set_args(out, ntok, tok, 1, 1, 4, GM_TEXT_MAXQUEUE);
    else if (!strcasecmp(w, "shutdown")) {
        out->cmd = GM_TEXT_SHUTDOWN;
        out->graceful = ntok > 1 && !strcasecmp(w1, "graceful");
        /* anything but "graceful" is refused (text.c) */
        out->argc = ntok - 1 > 4 ? 4 : ntok - 1;
        for (int i = 0; i < out->argc; i++)
            out->arg[i] = tok[1 + i];
    } else if (!strcasecmp(w, "show")) {
        if (ntok < 2)
            out->cmd = GM_TEXT_OTHER; /* gearmand: ERR UNKNOWN_COMMAND */
        else if (!strcasecmp(w1, "jobs") && ntok == 2)
            out->cmd = GM_TEXT_SHOW_JOBS;
        else if (!strcasecmp(w1, "unique") && ntok == 3 && !strcasecmp(tok[2], "jobs"))
            out->cmd = GM_TEXT_SHOW_UNIQUE_JOBS; /* a word more: UNKNOWN_SHOW_ARGUMENTS, as gearmand */
        else
            out->cmd = GM_TEXT_SHOW_UNKNOWN;
    } else if (!strcasecmp(w, "cancel") && ntok > 2 && !strcasecmp(w1, "job")) {
        /* gearmand: "cancel job" alone is an unknown command, a word too
         * many ERR UNKNOWN_ERROR (gm_text_run) */
        if (ntok == 3)
            set_args(out, ntok, tok, 2, 1, 1, GM_TEXT_CANCEL_JOB);
        else {
            /* refused for the count; the words are kept (at most 4) so
             * every arg[i] below argc points into the line */
            out->cmd = GM_TEXT_CANCEL_JOB;
            out->argc = ntok - 2 > 4 ? 4 : ntok - 2;
            for (int i = 0; i < out->argc; i++)
                out->arg[i] = tok[2 + i];
        }
    } else if (!strcasecmp(w, "create") && ntok > 1 && !strcasecmp(w1, "function"))
        set_args(out, ntok, tok, 2, 1, 1, GM_TEXT_CREATE_FUNCTION);
    else if (!strcasecmp(w, "drop") && ntok > 1 && !strcasecmp(w1, "function"))
        set_args(out, ntok, tok, 2, 1, 1, GM_TEXT_DROP_FUNCTION);
    else
        out->cmd = GM_TEXT_OTHER;
}
