/* proto_manage: parse one line of Perlbal's config/management language (pure). */
#include "perlbal/proto_manage.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

bool pb_is_word(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

static bool is_key(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '.')
            return false;
    return true;
}

static int usage(struct pb_cmd *c, const char *msg)
{
    snprintf(c->err, sizeof c->err, "%s", msg);
    return -1;
}

/* Split s in place on single spaces (the line is already collapsed). */
static int split(char *s, const char **argv, int max)
{
    int n = 0;
    while (*s) {
        if (n == max)
            return -1;
        argv[n++] = s;
        char *sp = strchr(s, ' ');
        if (!sp)
            break;
        *sp = 0;
        s = sp + 1;
    }
    return n;
}

/* "key = value" tail parse: left of '=' into words, right trimmed. */
static int split_assign(char *s, char **left, char **right)
{
    char *eq = strchr(s, '=');
    if (!eq)
        return -1;
    char *r = eq + 1;
    while (*r == ' ')
        r++;
    char *le = eq;
    while (le > s && le[-1] == ' ')
        le--;
    *le = 0;
    if (!*r)
        return -1;
    *left = s;
    *right = r;
    return 0;
}

int pb_cmd_parse(const char *line, size_t len, struct pb_cmd *c)
{
    c->kind = PB_CMD_EMPTY;
    c->word = c->a1 = c->a2 = c->a3 = c->a4 = NULL;
    c->argc = 0;
    c->err[0] = 0;
    c->text[0] = 0;
    if (len > PB_CMD_MAX_LINE)
        return usage(c, "line too long");
    /* normalise: drop comment, collapse whitespace, trim */
    size_t o = 0;
    bool space = false;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)line[i];
        if (ch == '#' || ch == 0)
            break;
        if (ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f') {
            space = o > 0;
            continue;
        }
        if (ch < 0x20 || ch == 0x7f)
            return usage(c, "invalid command");
        if (space)
            c->text[o++] = ' ';
        space = false;
        c->text[o++] = (char)ch;
    }
    c->text[o] = 0;
    if (o == 0)
        return 0;
    memcpy(c->orig, c->text, o + 1);
    /* lower-case up to the first '=' */
    for (size_t i = 0; i < o && c->text[i] != '='; i++)
        c->text[i] = (char)tolower((unsigned char)c->text[i]);

    char *t = c->text;
    char *sp = strchr(t, ' ');
    size_t wl = sp ? (size_t)(sp - t) : o;
    char *rest = sp ? sp + 1 : t + o;
    /* the command word must be \w+ */
    for (size_t i = 0; i < wl; i++)
        if (!isalnum((unsigned char)t[i]) && t[i] != '_')
            return usage(c, "invalid command");
    t[wl] = 0;
    c->word = t;
    const char *w = t;
    const char *args[PB_CMD_MAX_ARGS];
    char *l, *r;

    if (!strcmp(w, "create")) {
        int n = split(rest, args, PB_CMD_MAX_ARGS);
        if (n != 2 || (strcmp(args[0], "service") && strcmp(args[0], "pool")) || !pb_is_word(args[1]))
            return usage(c, "usage: CREATE {service|pool} <name>");
        c->kind = PB_CMD_CREATE;
        c->a1 = args[0];
        c->a2 = args[1];
        return 0;
    }
    if (!strcmp(w, "pool")) {
        int n = split(rest, args, PB_CMD_MAX_ARGS);
        if (n != 3)
            return usage(c, "usage: POOL <name> {add|remove} <ip>[:<port>]");
        const char *name = args[0], *verb = args[1];
        if (!strcmp(name, "add") || !strcmp(name, "remove")) {
            name = args[1];
            verb = args[0];
        }
        if (strcmp(verb, "add") && strcmp(verb, "remove"))
            return usage(c, "Invalid command:  must be 'add' or 'remove'");
        if (!pb_is_word(name))
            return usage(c, "usage: POOL <name> {add|remove} <ip>[:<port>]");
        c->kind = PB_CMD_POOL;
        c->a1 = name;
        c->a2 = verb;
        c->a3 = args[2];
        return 0;
    }
    if (!strcmp(w, "set") || !strcmp(w, "default") || !strcmp(w, "server")) {
        const char *u = !strcmp(w, "set")       ? "usage: SET [<service>] <param> = <value>"
                        : !strcmp(w, "default") ? "usage: DEFAULT <param> = <value>"
                                                : "usage: SERVER <param> = <value>";
        if (split_assign(rest, &l, &r) < 0)
            return usage(c, u);
        int n = split(l, args, PB_CMD_MAX_ARGS);
        c->a3 = r;
        if (!strcmp(w, "set")) {
            c->kind = PB_CMD_SET;
            if (n == 2 && pb_is_word(args[0]) && is_key(args[1])) {
                c->a1 = args[0];
                c->a2 = args[1];
            } else if (n == 1 && is_key(args[0])) {
                char *dot = strchr((char *)args[0], '.');
                if (dot && dot != args[0] && dot[1]) {
                    *dot = 0;
                    c->a1 = args[0];
                    c->a2 = dot + 1;
                } else {
                    c->a2 = args[0];
                }
            } else {
                return usage(c, u);
            }
            if (!is_key(c->a2))
                return usage(c, u);
            return 0;
        }
        /* server keys may carry "(ip)" (max_reproxy_connections(1.2.3.4)) */
        if (n != 1)
            return usage(c, u);
        c->kind = !strcmp(w, "default") ? PB_CMD_DEFAULT : PB_CMD_SERVER;
        c->a2 = args[0];
        return 0;
    }
    if (!strcmp(w, "use") || !strcmp(w, "enable") || !strcmp(w, "disable") || !strcmp(w, "load") ||
        !strcmp(w, "unload")) {
        int n = split(rest, args, PB_CMD_MAX_ARGS);
        if (n != 1 || !pb_is_word(args[0])) {
            if (!strcmp(w, "use"))
                return usage(c, "usage: USE <service_or_pool_name>");
            if (!strcmp(w, "enable") || !strcmp(w, "disable"))
                return usage(c, "Usage: {ENABLE|DISABLE} <service>");
            return usage(c, "usage: LOAD <plugin>");
        }
        c->kind = !strcmp(w, "use")       ? PB_CMD_USE
                  : !strcmp(w, "enable")  ? PB_CMD_ENABLE
                  : !strcmp(w, "disable") ? PB_CMD_DISABLE
                  : !strcmp(w, "load")    ? PB_CMD_LOAD
                                          : PB_CMD_UNLOAD;
        c->a1 = args[0];
        return 0;
    }
    if (!strcmp(w, "header")) {
        /* header <svc> insert|remove <Header>[: <value>], case kept */
        const char *u = "Usage: HEADER <service> {INSERT|REMOVE} <header>[: <value>]";
        char *s = c->orig + (rest - c->text);
        char *p1 = strchr(s, ' ');
        if (!p1)
            return usage(c, u);
        *p1 = 0;
        char *verb = p1 + 1;
        char *p2 = strchr(verb, ' ');
        if (!p2)
            return usage(c, u);
        *p2 = 0;
        char *hdr = p2 + 1;
        for (char *q = s; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        for (char *q = verb; *q; q++)
            *q = (char)tolower((unsigned char)*q);
        if (!pb_is_word(s) || (strcmp(verb, "insert") && strcmp(verb, "remove")))
            return usage(c, u);
        char *colon = strchr(hdr, ':');
        char *val = NULL;
        if (colon) {
            char *he = colon;
            while (he > hdr && he[-1] == ' ')
                he--;
            *he = 0;
            val = colon + 1;
            while (*val == ' ')
                val++;
            if (!*val)
                val = NULL;
        }
        if (!*hdr)
            return usage(c, u);
        for (char *q = hdr; *q; q++)
            if (*q == ' ')
                return usage(c, u);
        if (!strcmp(verb, "insert") && !val)
            return usage(c, u);
        c->kind = PB_CMD_HEADER;
        c->a1 = s;
        c->a2 = verb;
        c->a3 = hdr;
        c->a4 = val;
        return 0;
    }
    if (!strcmp(w, "vhost")) {
        const char *u = "usage: VHOST [<service>] <host_or_pattern> = <dest_service>";
        if (split_assign(rest, &l, &r) < 0)
            return usage(c, u);
        int n = split(l, args, PB_CMD_MAX_ARGS);
        if (n == 2) {
            if (!pb_is_word(args[0]))
                return usage(c, u);
            c->a1 = args[0];
            c->a2 = args[1];
        } else if (n == 1) {
            c->a2 = args[0];
        } else {
            return usage(c, u);
        }
        for (const char *q = c->a2; *q; q++)
            if (!isalnum((unsigned char)*q) && !strchr("-_.*;:", *q))
                return usage(c, "invalid host pattern");
        if (!pb_is_word(r))
            return usage(c, u);
        c->kind = PB_CMD_VHOST;
        c->a3 = r;
        return 0;
    }
    /* generic: word + arguments */
    c->kind = PB_CMD_WORD;
    c->argv[0] = c->word;
    int n = *rest ? split(rest, args, PB_CMD_MAX_ARGS - 1) : 0;
    if (n < 0)
        return usage(c, "too many arguments");
    for (int i = 0; i < n; i++)
        c->argv[i + 1] = args[i];
    c->argc = n + 1;
    return 0;
}
