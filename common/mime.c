/* mime: /etc/mime.types, loaded at start-up into a sorted array searched by
 * extension. See mime.h. The file's format: a media type, then the
 * extensions that map to it, blank-separated; '#' starts a comment. An
 * extension listed twice keeps its first type, as Apache and nginx read it. */
#include "common/mime.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct mime_entry {
    char ext[16];
    const char *type; /* points into types_text */
};

static struct mime_entry *entries;
static unsigned nentries;
static char *types_text;

static int entry_cmp(const void *a, const void *b)
{
    const struct mime_entry *x = a, *y = b;
    return strcmp(x->ext, y->ext);
}

/* Stable dedupe after sorting: the first-listed type of an extension wins,
 * so sort on (ext, position) and keep the first of each run. */
struct mime_pos {
    struct mime_entry e;
    unsigned pos;
};

static int pos_cmp(const void *a, const void *b)
{
    const struct mime_pos *x = a, *y = b;
    int c = strcmp(x->e.ext, y->e.ext);
    return c ? c : (x->pos < y->pos ? -1 : x->pos > y->pos);
}

static void mime_load(const char *path)
{
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return;
    }
    if (size > MIME_MAX_FILE)
        size = MIME_MAX_FILE;
    char *text = malloc((size_t)size + 1);
    struct mime_pos *tmp = calloc(MIME_MAX_ENTRIES, sizeof *tmp);
    if (!text || !tmp) {
        free(text);
        free(tmp);
        fclose(f);
        return;
    }
    size_t len = fread(text, 1, (size_t)size, f);
    fclose(f);
    text[len] = '\0';
    unsigned n = 0;
    for (char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL, *type = strtok_r(line, " \t\r", &save);
        if (!type || !strchr(type, '/') || strlen(type) > 127)
            continue;
        for (char *ext; (ext = strtok_r(NULL, " \t\r", &save)) != NULL && n < MIME_MAX_ENTRIES;) {
            size_t el = strlen(ext);
            if (el == 0 || el >= sizeof tmp[n].e.ext)
                continue;
            for (size_t i = 0; i < el; i++)
                tmp[n].e.ext[i] = (char)tolower((unsigned char)ext[i]);
            tmp[n].e.ext[el] = '\0';
            tmp[n].e.type = type;
            tmp[n].pos = n;
            n++;
        }
    }
    qsort(tmp, n, sizeof *tmp, pos_cmp);
    struct mime_entry *out = malloc((n ? n : 1) * sizeof *out);
    if (!out) {
        free(text);
        free(tmp);
        return;
    }
    unsigned k = 0;
    for (unsigned i = 0; i < n; i++)
        if (k == 0 || strcmp(out[k - 1].ext, tmp[i].e.ext) != 0)
            out[k++] = tmp[i].e;
    free(tmp);
    entries = out;
    nentries = k;
    types_text = text; /* the types point into it; kept for the process's life */
}

/* At start-up, before any loop runs: the file is read once, never on a loop. */
__attribute__((constructor)) static void mime_init(void)
{
    const char *override = getenv("STACK_MIME_TYPES"); /* tests point it at their own table */
    mime_load(override && *override ? override : MIME_TYPES_PATH);
}

const char *mime_type_of(const char *ext)
{
    if (!ext || !nentries)
        return NULL;
    struct mime_entry key;
    size_t el = strlen(ext);
    if (el == 0 || el >= sizeof key.ext)
        return NULL;
    for (size_t i = 0; i <= el; i++)
        key.ext[i] = (char)tolower((unsigned char)ext[i]);
    const struct mime_entry *e = bsearch(&key, entries, nentries, sizeof *entries, entry_cmp);
    return e ? e->type : NULL;
}

unsigned mime_types_count(void) { return nentries; }
