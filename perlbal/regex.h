/* regex.h: Perl-compatible regular expressions (PCRE2) for everything a
 * Perlbal config calls a regex: plugin patterns (NotModified, Throttle,
 * Highpri, Vpaths). Perlbal's configs are written for Perl's engine
 * (`\d`, non-greedy `*?`, lookahead ...), which POSIX regcomp cannot read.
 *
 * A compiled pattern is read-only and may be matched from any loop thread;
 * each thread keeps its own match data. Replace a live pattern with
 * pb_retire-style care: the owner swaps the pointer under its lock and
 * frees the old one only when no thread can still be matching with it. */
#ifndef PB_REGEX_H
#define PB_REGEX_H

#include <stdbool.h>
#include <stddef.h>

struct pb_regex;

/* Compile pattern (Perl syntax, unanchored as Perl's =~). NULL with a
 * message in err ("... at offset N") when it does not compile. */
struct pb_regex *pb_regex_compile(const char *pattern, char *err, size_t errlen);
/* Does subject[0..len) match? (false on an engine error, e.g. the match
 * limit: a pattern never makes a request hang). */
bool pb_regex_match(const struct pb_regex *re, const char *subject, size_t len);
const char *pb_regex_source(const struct pb_regex *re);
void pb_regex_free(struct pb_regex *re);

#endif
