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

int main(void)
{
    RUN(test_report);
    RUN(test_session);
    RUN(test_flv_and_version);
    return unit_done();
}
