/* proto_manage: the Perlbal management/config language, parsed (pure).
 *
 * One line in, one struct out: which command, and pointers to its arguments
 * inside the struct's own normalised copy of the line. Perlbal's rules are
 * kept: '#' starts a comment, whitespace is collapsed, everything up to the
 * first '=' is case-insensitive (lower-cased), values keep their case.
 * Executing a command is cmd_manage.c's job; this file never touches state. */
#ifndef PB_CMD_H
#define PB_CMD_H

#include <stdbool.h>
#include <stddef.h>

#define PB_CMD_MAX_LINE 4096
#define PB_CMD_MAX_ARGS 16

enum pb_cmd_kind {
    PB_CMD_EMPTY = 0, /* blank or comment */
    PB_CMD_CREATE,    /* a1 = "service"|"pool", a2 = name */
    PB_CMD_POOL,      /* a1 = pool, a2 = "add"|"remove", a3 = host[:port] */
    PB_CMD_SET,       /* a1 = object or NULL (implied), a2 = key, a3 = value */
    PB_CMD_DEFAULT,   /* a2 = key, a3 = value */
    PB_CMD_USE,       /* a1 = name */
    PB_CMD_ENABLE,    /* a1 = service */
    PB_CMD_DISABLE,   /* a1 = service */
    PB_CMD_HEADER,    /* a1 = service, a2 = "insert"|"remove", a3 = header, a4 = value or NULL */
    PB_CMD_LOAD,      /* a1 = plugin */
    PB_CMD_UNLOAD,    /* a1 = plugin */
    PB_CMD_SERVER,    /* a2 = key, a3 = value */
    PB_CMD_VHOST,     /* a1 = selector or NULL, a2 = host pattern, a3 = target service */
    PB_CMD_WORD,      /* any other command: word + argv (show, nodes, uptime, ...) */
};

struct pb_cmd {
    enum pb_cmd_kind kind;
    const char *word; /* the command word, lower case */
    const char *a1, *a2, *a3, *a4;
    int argc; /* words of the line (PB_CMD_WORD) */
    const char *argv[PB_CMD_MAX_ARGS];
    char err[160];
    char text[PB_CMD_MAX_LINE + 8]; /* normalised line; the pointers above point here */
    char orig[PB_CMD_MAX_LINE + 8]; /* same, case kept (HEADER values) */
};

/* Returns 0 (cmd filled; PB_CMD_EMPTY for nothing to do) or -1 with cmd->err
 * (usage message as Perlbal words it). */
int pb_cmd_parse(const char *line, size_t len, struct pb_cmd *cmd);

/* A non-empty run of letters, digits and '_': what Perlbal takes as a
 * service, pool or plugin name. */
bool pb_is_word(const char *s);

#endif
