/* regex.c: PCRE2 behind a small interface (see regex.h). Patterns are
 * JIT-compiled when the platform allows; a match is bounded by PCRE2's
 * match and depth limits set low enough that a pathological pattern costs
 * a request milliseconds, not the loop. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perlbal/regex.h"

struct pb_regex {
    pcre2_code *code;
    char *source;
};

/* per thread: the match data (one pair of offsets is all we ask for) and
 * the limits */
static __thread pcre2_match_data *tls_md;
static __thread pcre2_match_context *tls_mctx;

struct pb_regex *pb_regex_compile(const char *pattern, char *err, size_t errlen)
{
    int ec = 0;
    PCRE2_SIZE off = 0;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &ec, &off, NULL);
    if (!code) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        snprintf(err, errlen, "invalid regular expression '%s': %s at offset %zu", pattern, (char *)msg, (size_t)off);
        return NULL;
    }
    (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    struct pb_regex *re = calloc(1, sizeof *re);
    if (!re || !(re->source = strdup(pattern))) {
        free(re);
        pcre2_code_free(code);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    re->code = code;
    return re;
}

bool pb_regex_match(const struct pb_regex *re, const char *subject, size_t len)
{
    if (!re)
        return false;
    if (!tls_md) {
        tls_md = pcre2_match_data_create(1, NULL);
        tls_mctx = pcre2_match_context_create(NULL);
        if (!tls_md || !tls_mctx)
            return false;
        pcre2_set_match_limit(tls_mctx, 100000);
        pcre2_set_depth_limit(tls_mctx, 1000);
    }
    int rc = pcre2_match(re->code, (PCRE2_SPTR)subject, len, 0, 0, tls_md, tls_mctx);
    return rc >= 0;
}

const char *pb_regex_source(const struct pb_regex *re) { return re ? re->source : ""; }

void pb_regex_free(struct pb_regex *re)
{
    if (!re)
        return;
    pcre2_code_free(re->code);
    free(re->source);
    free(re);
}
