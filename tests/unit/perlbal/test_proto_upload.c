/* Unit tests for perlbal/proto_upload: upload-status datagrams and the
 * request-target arguments plugins read (client_up_sess, FLV start=, v=). */
#include "perlbal/proto_upload.h"

#include <string.h>

#include "tests/unit/unit.h"

static int report(const char *s, struct pb_upload_report *r) { return pb_upload_report_parse(s, strlen(s), r); }

static void test_report(void)
{
    struct pb_upload_report r;
    CHECK_EQ_INT(report("UPLOAD:abc12:10:200:1700000000:1700000003", &r), 0);
    CHECK_STR(r.sess, "abc12");
    CHECK(r.done == 10 && r.total == 200 && r.start == 1700000000 && r.now == 1700000003);
    /* as Perlbal's regex: 5..50 word characters, four numbers, nothing after */
    CHECK_EQ_INT(report("UPLOAD:abcd:1:2:3:4", &r), -1);
    char longname[80] = "UPLOAD:";
    memset(longname + 7, 'a', 51);
    strcpy(longname + 58, ":1:2:3:4");
    CHECK_EQ_INT(report(longname, &r), -1); /* 51 characters */
    strcpy(longname + 57, ":1:2:3:4");      /* 50 */
    CHECK_EQ_INT(report(longname, &r), 0);
    CHECK_EQ_INT((int)strlen(r.sess), 50);
    CHECK_EQ_INT(report("UPLOAD:abc-12:1:2:3:4", &r), -1);
    CHECK_EQ_INT(report("UPLOAD:abc12:1:2:3", &r), -1);
    CHECK_EQ_INT(report("UPLOAD:abc12:1:2:3:4\n", &r), -1);
    CHECK_EQ_INT(report("UPLOAD:abc12:1:2:3:", &r), -1);
    CHECK_EQ_INT(report("UPLOAD:abc12:-1:2:3:4", &r), -1);
    CHECK_EQ_INT(report("UPLOAD:abc12:1234567890123456789:2:3:4", &r), -1); /* over 18 digits */
    CHECK_EQ_INT(report("upload:abc12:1:2:3:4", &r), -1);
    CHECK_EQ_INT(pb_upload_report_parse("UPLOAD:abc12:1:2:3:45", 20, &r), 0); /* only len bytes count */
    CHECK(r.now == 4);
}

static void test_session(void)
{
    char s[PB_UPLOAD_SESS_MAX + 1];
    const char *t = "/up?x=1&client_up_sess=abc_123&y";
    CHECK(pb_upload_session_of(t, strlen(t), s));
    CHECK_STR(s, "abc_123");
    t = "/up?client_up_sess=abcd";
    CHECK(!pb_upload_session_of(t, strlen(t), s)); /* too short */
    t = "/upclient_up_sess=abcdef";
    CHECK(!pb_upload_session_of(t, strlen(t), s)); /* no ? or & before it */
    t = "/__upload_status?client_up_sess=sess_42x";
    CHECK(pb_upload_session_of(t, strlen(t), s));
    CHECK_STR(s, "sess_42x");
    char longt[128] = "/?client_up_sess=";
    memset(longt + 17, 'b', 60);
    longt[77] = 0;
    CHECK(!pb_upload_session_of(longt, strlen(longt), s)); /* 60 word characters: no \b after 50 */
}

static void test_flv_and_version(void)
{
    const char *t = "/v/m.flv?x=1&start=1000";
    CHECK(pb_flv_start_of(t, strlen(t)) == 1000);
    t = "/v/m.mp4?start=1000";
    CHECK(pb_flv_start_of(t, strlen(t)) == 0);
    t = "/v/m.flv?start=10a";
    CHECK(pb_flv_start_of(t, strlen(t)) == 0);
    t = "/v/m.flv";
    CHECK(pb_flv_start_of(t, strlen(t)) == 0);
    t = "/a.txt?v=123";
    CHECK(pb_uri_version(t, strlen(t)) == 123);
    t = "/a.txt?nov=123";
    CHECK(pb_uri_version(t, strlen(t)) == 0);
    t = "/a.txt?v=12x";
    CHECK(pb_uri_version(t, strlen(t)) == 0);
    t = "/a.txt?x=1&v=7&y=2";
    CHECK(pb_uri_version(t, strlen(t)) == 7);
}

static void test_palimg(void)
{
    struct pb_pal_spec p;
    CHECK_EQ_INT(pb_pal_parse_spec("1ffeedd", 7, &p), 0);
    CHECK(p.set[1] && p.rgb[1][0] == 0xff && p.rgb[1][2] == 0xdd && !p.set[0]);
    CHECK_EQ_INT(pb_pal_parse_spec("1FFEEDD", 7, &p), 404); /* lower case only, as Perlbal */
    CHECK_EQ_INT(pb_pal_parse_spec("1ffeed", 6, &p), 404);  /* a multiple of 7 */
    CHECK_EQ_INT(pb_pal_parse_spec("g00000000030000ff", 17, &p), 0);
    CHECK(p.set[0] && p.set[3] && !p.set[4] && p.rgb[1][2] == 85 && p.rgb[3][2] == 255);
    CHECK_EQ_INT(pb_pal_parse_spec("g0011111100222222", 17, &p), 404); /* from == to */
    CHECK_EQ_INT(pb_pal_parse_spec("t808080", 7, &p), 0);
    CHECK(p.tint && p.tint_c[0] == 0x80 && p.tint_dark[0] == 0);
    /* a GIF with a 2-entry table: entry 1 replaced, nothing past it touched */
    unsigned char gif[19] = { 'G', 'I', 'F', '8', '9', 'a', 1, 0, 1, 0, 0x80, 0, 0, 1, 2, 3, 4, 5, 6 };
    CHECK_EQ_INT(pb_pal_parse_spec("1aabbcc", 7, &p), 0);
    CHECK(pb_pal_gif(&p, gif, sizeof gif));
    CHECK(gif[13] == 1 && gif[16] == 0xaa && gif[18] == 0xcc);
    CHECK(!pb_pal_gif(&p, gif, 17)); /* the table is not all there */
    unsigned char notpng[16] = "not a png file";
    CHECK(!pb_pal_png(&p, notpng, sizeof notpng));
}

int main(void)
{
    RUN(test_palimg);
    RUN(test_report);
    RUN(test_session);
    RUN(test_flv_and_version);
    return unit_done();
}
