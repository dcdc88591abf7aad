/* Unit tests: djabberd's XML stream parser (framing, restricted XML,
 * bounds, parser release) and SASL (PLAIN, SCRAM-SHA-256 RFC 7677 vector,
 * SCRAM-SHA-1, base64, stored credentials). */
#include "tests/unit/unit.h"

#include "djabberd/proto_sasl.h"
#include "djabberd/proto_xml.h"

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

static const char HDR[] = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                          "xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>";

struct got {
    int streams, stanzas;
    char last[1024];
    char to[64];
};

static int on_stream(void *arg, const char *name, const char **attrs)
{
    struct got *g = arg;
    g->streams++;
    (void)name;
    for (int i = 0; attrs[i]; i += 2)
        if (!strcmp(attrs[i], "to"))
            snprintf(g->to, sizeof g->to, "%s", attrs[i + 1]);
    return 0;
}

static int on_stanza(void *arg, struct dj_stanza *st)
{
    struct got *g = arg;
    g->stanzas++;
    struct evbuffer *b = evbuffer_new();
    dj_xml_write(b, st->root);
    size_t n = evbuffer_get_length(b);
    if (n >= sizeof g->last)
        n = sizeof g->last - 1;
    evbuffer_remove(b, g->last, n);
    g->last[n] = 0;
    evbuffer_free(b);
    dj_stanza_free(st);
    return 0;
}

static const struct dj_xml_cbs cbs = { on_stream, on_stanza };
static const struct dj_xml_limits lim = { .max_stanza = 2048, .max_depth = 8, .max_attrs = 8 };

static enum dj_xml_error feed_all(struct dj_xml *x, const char *s) { return dj_xml_feed(x, s, strlen(s)); }

static void test_stream_and_stanzas(void)
{
    struct got g = { 0 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(g.streams, 1);
    CHECK_STR(g.to, "example.com");
    CHECK_EQ_INT(feed_all(x, "<message to='a@b' type='chat'><body>x &lt; y &amp; &#x41;</body></message>"), DJ_XML_OK);
    CHECK_EQ_INT(g.stanzas, 1);
    CHECK_STR(g.last, "<message to='a@b' type='chat'><body>x &lt; y &amp; A</body></message>");
    CHECK_EQ_INT(feed_all(x, "</stream:stream>"), DJ_XML_CLOSED);
    dj_xml_free(x);
}

static void test_byte_by_byte(void)
{
    struct got g = { 0 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
    const char *s = "<iq type='get' id='1'><query xmlns='jabber:iq:roster'/></iq> \n<presence/>";
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    for (size_t i = 0; s[i]; i++)
        CHECK_EQ_INT(dj_xml_feed(x, s + i, 1), DJ_XML_OK);
    CHECK_EQ_INT(g.stanzas, 2);
    CHECK_STR(g.last, "<presence/>");
    dj_xml_free(x);
}

static void test_release_and_reprime(void)
{
    struct got g = { 0 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK(dj_xml_release(x));
    CHECK(!dj_xml_has_parser(x));
    CHECK_EQ_INT(feed_all(x, "<message><body>again</body></message>"), DJ_XML_OK);
    CHECK_EQ_INT(g.stanzas, 1);
    CHECK_EQ_INT(g.streams, 1); /* the priming header is not reported */
    CHECK_STR(g.last, "<message><body>again</body></message>");
    /* half a stanza: the parser stays */
    CHECK_EQ_INT(feed_all(x, "<message><bo"), DJ_XML_OK);
    CHECK(!dj_xml_release(x));
    CHECK_EQ_INT(feed_all(x, "dy>z</body></message>"), DJ_XML_OK);
    CHECK(dj_xml_release(x));
    CHECK_EQ_INT(feed_all(x, "</stream:stream>"), DJ_XML_CLOSED);
    dj_xml_free(x);
}

static void test_restricted(void)
{
    const char *bad[] = {
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol1 '&lol;&lol;&lol;'>]><a>&lol1;</a>",
        "<!DOCTYPE x SYSTEM 'file:///etc/passwd'><x/>",
        NULL,
    };
    for (int i = 0; bad[i]; i++) {
        struct got g = { 0 };
        struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
        CHECK_EQ_INT(feed_all(x, bad[i]), DJ_XML_RESTRICTED);
        CHECK_STR(dj_xml_error_condition(DJ_XML_RESTRICTED), "restricted-xml");
        dj_xml_free(x);
    }
    const char *inside[] = { "<!-- c --><presence/>", "<?pi x?>", "<message>&undefined;</message>", NULL };
    enum dj_xml_error want[] = { DJ_XML_RESTRICTED, DJ_XML_RESTRICTED, DJ_XML_NOT_WELL_FORMED };
    for (int i = 0; inside[i]; i++) {
        struct got g = { 0 };
        struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
        CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
        CHECK_EQ_INT(feed_all(x, inside[i]), want[i]);
        CHECK_EQ_INT(g.stanzas, 0);
        dj_xml_free(x);
    }
}

static void test_bad_utf8_and_syntax(void)
{
    struct got g = { 0 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "<message><body>\xff\xfe</body></message>"), DJ_XML_NOT_WELL_FORMED);
    CHECK_EQ_INT(feed_all(x, "<presence/>"), DJ_XML_NOT_WELL_FORMED); /* sticky */
    dj_xml_free(x);
    x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "<a></b>"), DJ_XML_NOT_WELL_FORMED);
    dj_xml_free(x);
    x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "text at stream level"), DJ_XML_NOT_WELL_FORMED);
    dj_xml_free(x);
}

static void test_bounds(void)
{
    struct got g = { 0 };
    struct dj_xml *x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    char *big = malloc(10000);
    memset(big, 'a', 9999);
    big[9999] = 0;
    CHECK_EQ_INT(feed_all(x, "<message><body>"), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, big), DJ_XML_POLICY);
    dj_xml_free(x);
    /* an unterminated attribute value counts too */
    x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "<message a='"), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, big), DJ_XML_POLICY);
    dj_xml_free(x);
    free(big);
    /* depth and attribute count */
    x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "<a><b><c><d><e><f><g><h><i><j>"), DJ_XML_POLICY);
    dj_xml_free(x);
    x = dj_xml_new(&lim, &cbs, &g);
    CHECK_EQ_INT(feed_all(x, HDR), DJ_XML_OK);
    CHECK_EQ_INT(feed_all(x, "<a a1='' a2='' a3='' a4='' a5='' a6='' a7='' a8='' a9=''/>"), DJ_XML_POLICY);
    dj_xml_free(x);
}

static void test_tree_helpers(void)
{
    struct dj_stanza *st = dj_stanza_new();
    struct dj_node *m = dj_node_new(st, NULL, "message");
    dj_node_set_attr(st, m, "to", "a@b");
    dj_node_set_attr(st, m, "from", "c@d/\"e'");
    dj_node_set_attr(st, m, "to", "x@y");
    struct dj_node *b = dj_node_new(st, m, "body");
    dj_node_text(st, b, "1<2", 3);
    dj_node_text(st, b, "&3", 2);
    CHECK_STR(dj_node_attr(m, "to"), "x@y");
    CHECK(dj_node_child(m, "body", NULL) == b);
    size_t l;
    CHECK_STR(dj_node_text_of(st, b, &l), "1<2&3");
    struct evbuffer *out = evbuffer_new();
    dj_xml_write(out, m);
    char s[256];
    size_t n = evbuffer_remove(out, s, sizeof s - 1);
    s[n] = 0;
    CHECK_STR(s, "<message to='x@y' from='c@d/&quot;e&apos;'><body>1&lt;2&amp;3</body></message>");
    evbuffer_free(out);
    dj_stanza_free(st);
}

static void test_plain(void)
{
    const char msg[] = "\0juliet\0r0m30";
    const char *z, *c, *p;
    size_t zl, cl, pl;
    CHECK_EQ_INT(dj_sasl_plain_parse(msg, sizeof msg - 1, &z, &zl, &c, &cl, &p, &pl), 0);
    CHECK_EQ_INT(zl, 0);
    CHECK_EQ_INT(cl, 6);
    CHECK(!memcmp(c, "juliet", 6));
    CHECK_EQ_INT(pl, 5);
    CHECK_EQ_INT(dj_sasl_plain_parse("juliet", 6, &z, &zl, &c, &cl, &p, &pl), -1);
    CHECK_EQ_INT(dj_sasl_plain_parse("\0\0pw", 4, &z, &zl, &c, &cl, &p, &pl), -1);
}

static void test_b64(void)
{
    char out[64];
    unsigned char dec[64];
    CHECK_EQ_INT(dj_b64_encode((const unsigned char *)"n,,", 3, out, sizeof out), 4);
    CHECK_STR(out, "biws");
    CHECK_EQ_INT(dj_b64_decode("Zm9vYg==", 8, dec, sizeof dec), 4);
    CHECK(!memcmp(dec, "foob", 4));
    CHECK_EQ_INT(dj_b64_decode("Zm9v!", 5, dec, sizeof dec), -1);
    CHECK_EQ_INT(dj_b64_decode("Zg==Zg", 6, dec, sizeof dec), -1);
}

/* RFC 7677 section 3 */
static void test_scram_sha256_vector(void)
{
    unsigned char salt[16];
    CHECK_EQ_INT(dj_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof salt), 16);
    struct dj_creds c;
    CHECK_EQ_INT(dj_creds_derive(&c, "pencil", 6, salt, 4096), 0);
    struct dj_scram s;
    const char *cond;
    const char *first = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA256, NULL, 0, first, strlen(first), &cond), 0);
    CHECK_STR(s.user, "user");
    strcpy(s.nonce, "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
    CHECK_EQ_INT(dj_scram_server_first(&s, &c), 0);
    CHECK_STR(s.server_first, "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096");
    const char *final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    char out[128];
    CHECK_EQ_INT(dj_scram_client_final(&s, &c, final, strlen(final), out, sizeof out, &cond), 0);
    CHECK_STR(out, "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    /* a wrong proof */
    const char *wrong = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                        "p=AHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    CHECK_EQ_INT(dj_scram_client_final(&s, &c, wrong, strlen(wrong), out, sizeof out, &cond), -1);
    CHECK_STR(cond, "not-authorized");
    /* channel binding asked for on a stream without TLS */
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA256, NULL, 0, "p=tls-unique,,n=u,r=x", 21, &cond), -1);
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA256, NULL, 0, "n,,n=a=2Cb=3D,r=x", 17, &cond), 0);
    CHECK_STR(s.user, "a,b=");
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA256, NULL, 0, "n,,n=a=XXb,r=x", 14, &cond), -1);
}

/* -PLUS: the binding data travels in c=; a 'y' client is refused when we
 * could bind (downgrade), and binding without -PLUS or without data fails. */
static void test_scram_plus(void)
{
    unsigned char salt[16] = { 1, 2, 3 };
    struct dj_creds c;
    CHECK_EQ_INT(dj_creds_derive(&c, "pw", 2, salt, 64), 0);
    const unsigned char cb[12] = "finished-12";
    struct dj_scram s;
    const char *cond;
    const char *first = "p=tls-unique,,n=user,r=abc";
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1_PLUS, cb, 12, first, strlen(first), &cond), 0);
    CHECK_STR(s.gs2, "p=tls-unique,,");
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1, cb, 12, "y,,n=user,r=abc", 15, &cond), -1);
    CHECK_STR(cond, "not-authorized");
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1, NULL, 0, "y,,n=user,r=abc", 15, &cond), 0);
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1_PLUS, cb, 12, "n,,n=user,r=abc", 15, &cond), -1);
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1, cb, 12, first, strlen(first), &cond), -1);
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1_PLUS, NULL, 0, first, strlen(first), &cond), -1);
    /* a client-final whose c= lacks the binding data is refused */
    CHECK_EQ_INT(dj_scram_client_first(&s, DJ_SASL_SCRAM_SHA1_PLUS, cb, 12, first, strlen(first), &cond), 0);
    CHECK_EQ_INT(dj_scram_server_first(&s, &c), 0);
    char fin[256], out[128];
    snprintf(fin, sizeof fin, "c=cD10bHMtdW5pcXVlLCw=,r=%s,p=AAAAAAAAAAAAAAAAAAAAAAAAAAA=", s.nonce);
    CHECK_EQ_INT(dj_scram_client_final(&s, &c, fin, strlen(fin), out, sizeof out, &cond), -1);
    CHECK_STR(cond, "not-authorized");
}

static void test_creds_text(void)
{
    struct dj_creds c, d;
    CHECK_EQ_INT(dj_creds_make(&c, "secret", 6, 64), 0);
    CHECK(dj_creds_check(&c, "secret", 6));
    CHECK(!dj_creds_check(&c, "Secret", 6));
    char text[300];
    size_t n = dj_creds_format(&c, text, sizeof text);
    CHECK(n > 0 && strstr(text, "secret") == NULL);
    CHECK_EQ_INT(dj_creds_parse(&d, text, n), 0);
    CHECK(!memcmp(&c, &d, sizeof c));
    CHECK_EQ_INT(dj_creds_parse(&d, "64$zz", 5), -1);
}

int main(void)
{
    RUN(test_stream_and_stanzas);
    RUN(test_byte_by_byte);
    RUN(test_release_and_reprime);
    RUN(test_restricted);
    RUN(test_bad_utf8_and_syntax);
    RUN(test_bounds);
    RUN(test_tree_helpers);
    RUN(test_plain);
    RUN(test_b64);
    RUN(test_scram_sha256_vector);
    RUN(test_scram_plus);
    RUN(test_creds_text);
    dj_xml_pool_clear();
    return unit_done();
}
