/* Unit tests of userdb/proto_mysql.c: framing, length-encoded integers,
 * native password scrambles, handshakes both ways, reply framing, and the
 * statement classifier (routing hints, reads, pins, userdb_* functions). */
#include "tests/unit/unit.h"

#include "userdb/proto_mysql.h"

static void test_lenenc(void)
{
    uint64_t vals[] = { 0, 250, 251, 65535, 65536, 16777215, 16777216, 0xffffffffffULL };
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        uint8_t b[9];
        size_t n = ud_lenenc_put(b, vals[i]);
        uint64_t v = 0;
        CHECK_EQ_INT(ud_lenenc_get(b, n, &v), (int)n);
        CHECK(v == vals[i]);
        CHECK_EQ_INT(ud_lenenc_get(b, n - 1, &v), n == 1 ? 0 : 0);
    }
    uint8_t null = 0xfb, ff = 0xff;
    uint64_t v;
    CHECK_EQ_INT(ud_lenenc_get(&null, 1, &v), -1);
    CHECK_EQ_INT(ud_lenenc_get(&ff, 1, &v), -1);
}

static void test_scramble_known_answer(void)
{
    /* SHA1("secret") XOR SHA1(salt . SHA1(SHA1("secret"))) with a zero salt,
     * checked against ud_native_check both ways. */
    uint8_t salt[20] = { 0 }, out[20];
    ud_native_scramble(salt, "secret", out);
    CHECK(ud_native_check(salt, "secret", out, 20));
    CHECK(!ud_native_check(salt, "Secret", out, 20));
    CHECK(!ud_native_check(salt, "secret", out, 19));
    CHECK(ud_native_check(salt, "", out, 0));
    CHECK(!ud_native_check(salt, "", out, 20));
    out[3] ^= 1;
    CHECK(!ud_native_check(salt, "secret", out, 20));
}

static void test_handshake_round_trip(void)
{
    uint8_t salt[20];
    for (int i = 0; i < 20; i++)
        salt[i] = (uint8_t)('A' + i);
    uint8_t buf[256];
    size_t n = ud_enc_handshake(buf, sizeof buf, "10.11.0-userdb", 77, salt, UD_ROUTER_CAPS, 45, UD_STATUS_AUTOCOMMIT);
    CHECK(n > 0);
    struct ud_server_hs hs;
    CHECK_EQ_INT(ud_parse_server_hs(buf, n, &hs), 0);
    CHECK_EQ_INT(hs.conn_id, 77);
    CHECK_MEM(hs.salt, salt, 20);
    CHECK_STR(hs.version, "10.11.0-userdb");
    CHECK_STR(hs.plugin, "mysql_native_password");
    CHECK(hs.caps == UD_ROUTER_CAPS);
    /* A client's answer, parsed as the server side does. */
    uint8_t resp[256];
    size_t m = ud_enc_hs_response(resp, sizeof resp, UD_ROUTER_CAPS, 45, "app", "pw", salt, "db1");
    struct ud_hs_response r;
    CHECK_EQ_INT(ud_parse_hs_response(resp, m, &r), 0);
    CHECK_EQ_INT(r.user_len, 3);
    CHECK_MEM(r.user, "app", 3);
    CHECK_EQ_INT(r.db_len, 3);
    CHECK_EQ_INT(r.auth_len, 20);
    CHECK(ud_native_check(salt, "pw", r.auth, r.auth_len));
    CHECK_EQ_INT(r.plugin_len, 21);
    /* Truncations never parse. */
    for (size_t k = 0; k + 1 < m; k++) {
        struct ud_hs_response t;
        int rc = ud_parse_hs_response(resp, k, &t);
        if (rc == 0)
            CHECK(t.user_len <= k);
    }
    CHECK_EQ_INT(ud_parse_hs_response(resp, 10, &r), -1);
}

static void test_ok_err_eof(void)
{
    uint8_t b[128];
    size_t n = ud_enc_ok(b, sizeof b, 2, 300, 7, UD_STATUS_AUTOCOMMIT | UD_STATUS_IN_TRANS, 1);
    uint32_t len;
    uint8_t seq;
    CHECK_EQ_INT(ud_pkt_header(b, n, &len, &seq), 1);
    CHECK_EQ_INT(seq, 2);
    CHECK_EQ_INT(len + 4, n);
    struct ud_ok ok;
    CHECK_EQ_INT(ud_parse_ok(b + 4, len, &ok), 0);
    CHECK(ok.affected == 300 && ok.insert_id == 7 && ok.warnings == 1);
    CHECK_EQ_INT(ok.status, UD_STATUS_AUTOCOMMIT | UD_STATUS_IN_TRANS);
    n = ud_enc_err(b, sizeof b, 1, 1290, "HY000", "read only");
    uint16_t code;
    char msg[64];
    CHECK_EQ_INT(ud_parse_err(b + 4, n - 4, &code, msg, sizeof msg), 0);
    CHECK_EQ_INT(code, 1290);
    CHECK_STR(msg, "read only");
}

/* Feed a packet stream (header + payload each) to a reply tracker. */
static int feed_all(struct ud_resp *r, const uint8_t *p, size_t n, size_t *packets)
{
    size_t off = 0;
    *packets = 0;
    while (off + 4 <= n) {
        uint32_t len;
        uint8_t seq;
        ud_pkt_header(p + off, 4, &len, &seq);
        int rc = ud_resp_feed(r, p + off + 4, len < 32 ? len : 32, len);
        off += 4 + len;
        (*packets)++;
        if (rc != 0)
            return off == n ? rc : -2;
    }
    return 0;
}

static void test_reply_framing(void)
{
    uint8_t b[512];
    const char *vals[3] = { "1", NULL, "3" };
    size_t n = ud_enc_result(b, sizeof b, 1, "c", vals, 3, UD_STATUS_AUTOCOMMIT);
    struct ud_resp r;
    size_t packets;
    ud_resp_start(&r, UD_RESP_QUERY);
    CHECK_EQ_INT(feed_all(&r, b, n, &packets), 1);
    CHECK_EQ_INT(packets, 1 + 1 + 1 + 3 + 1);
    CHECK(!r.error);
    /* A result set whose last EOF says "more results" keeps going. */
    ud_resp_start(&r, UD_RESP_QUERY);
    size_t m = ud_enc_result(b, sizeof b, 1, "c", vals, 1, UD_STATUS_MORE_RESULTS);
    m += ud_enc_ok(b + m, sizeof b - m, 9, 0, 0, 0, 0);
    CHECK_EQ_INT(feed_all(&r, b, m, &packets), 1);
    CHECK_EQ_INT(packets, 6);
    /* ERR ends at once. */
    ud_resp_start(&r, UD_RESP_QUERY);
    n = ud_enc_err(b, sizeof b, 1, 1146, "42S02", "no table");
    CHECK_EQ_INT(feed_all(&r, b, n, &packets), 1);
    CHECK(r.error);
    /* LOCAL INFILE requests are refused. */
    uint8_t infile[] = { 0xfb, 'f' };
    ud_resp_start(&r, UD_RESP_QUERY);
    CHECK_EQ_INT(ud_resp_feed(&r, infile, 2, 2), -1);
    /* PREPARE: OK with 1 param and 1 column -> param def, EOF, col def, EOF. */
    uint8_t prep[] = { 0x00, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0 };
    uint8_t def[] = { 3, 'd', 'e', 'f' }, eof[] = { 0xfe, 0, 0, 2, 0 };
    ud_resp_start(&r, UD_RESP_PREPARE);
    CHECK_EQ_INT(ud_resp_feed(&r, prep, sizeof prep, sizeof prep), 0);
    CHECK_EQ_INT(ud_resp_feed(&r, def, sizeof def, sizeof def), 0);
    CHECK_EQ_INT(ud_resp_feed(&r, eof, sizeof eof, sizeof eof), 0);
    CHECK_EQ_INT(ud_resp_feed(&r, def, sizeof def, sizeof def), 0);
    CHECK_EQ_INT(ud_resp_feed(&r, eof, sizeof eof, sizeof eof), 1);
    /* A 16 MiB row continues into the next packet, whatever it holds. */
    ud_resp_start(&r, UD_RESP_FETCH);
    uint8_t row[] = { 0x05 };
    CHECK_EQ_INT(ud_resp_feed(&r, row, 1, UD_MAX_PAYLOAD), 0);
    CHECK_EQ_INT(ud_resp_feed(&r, eof, sizeof eof, sizeof eof), 0); /* continuation bytes */
    CHECK_EQ_INT(ud_resp_feed(&r, eof, sizeof eof, sizeof eof), 1);
}

static void classify(const char *sql, struct ud_query *q, int want_rc)
{
    char err[128];
    CHECK_EQ_INT(ud_query_classify(sql, strlen(sql), q, err, sizeof err), want_rc);
}

static void test_classify(void)
{
    struct ud_query q;
    classify("/* user=42 */ SELECT * FROM t", &q, 0);
    CHECK(q.hint == UD_HINT_USER && q.user_id == 42 && q.is_read && !q.pins);
    classify("  /*user=7*/ -- x\n UPDATE t SET a=1", &q, 0);
    CHECK(q.hint == UD_HINT_USER && q.user_id == 7 && !q.is_read);
    classify("SELECT 1", &q, 0);
    CHECK(q.hint == UD_HINT_NONE && q.is_read);
    classify("/* user=1 */ SELECT * FROM t FOR UPDATE", &q, 0);
    CHECK(!q.is_read);
    /* the one-pass scan for what makes a SELECT a write or a pin */
    classify("select * from t where a = 1 for update", &q, 0);
    CHECK(!q.is_read && !q.pins);
    classify("SELECT * FROM t Lock In Share Mode", &q, 0);
    CHECK(!q.is_read && !q.pins);
    classify("SELECT get_lock('x', 1)", &q, 0);
    CHECK(!q.is_read && q.pins);
    classify("SELECT @a:=1", &q, 0);
    CHECK(q.is_read && q.pins);
    classify("SELECT a INTO @b FROM t", &q, 0);
    CHECK(!q.is_read && !q.pins);
    classify("SELECT fortune, lockers, gets, ':' FROM t WHERE x = 'GET_LOC'", &q, 0);
    CHECK(q.is_read && !q.pins);
    classify("SELECT 1 FOR UPDAT", &q, 0);
    CHECK(q.is_read && !q.pins);
    classify("/* user=x */ SELECT 1", &q, -1);
    classify("/* user=0 */ SELECT 1", &q, -1);
    classify("/* user=99999999999 */ SELECT 1", &q, -1);
    classify("/* user=new */ SELECT userdb_create_user('o''neil')", &q, 0);
    CHECK(q.hint == UD_HINT_NEW && q.special == UD_SPECIAL_CREATE_USER);
    CHECK_STR(q.arg, "o'neil");
    classify("/* user=3 */ select USERDB_COUNTER( \"L\" ) ;", &q, 0);
    CHECK(q.special == UD_SPECIAL_COUNTER);
    CHECK_STR(q.arg, "L");
    classify("/* user=3 */ SELECT userdb_counter(L)", &q, -1);
    classify("/* user=3 */ SELECT userdb_counter('L') + 1", &q, -1);
    classify("SET autocommit = 0", &q, 0);
    CHECK_EQ_INT(q.autocommit, 0);
    classify("set @@session.autocommit=ON;", &q, 0);
    CHECK_EQ_INT(q.autocommit, 1);
    classify("SET NAMES latin1", &q, 0);
    CHECK(q.pins && q.autocommit == -1);
    classify("SET autocommit=0, @x=1", &q, 0);
    CHECK(q.pins && q.autocommit == -1);
    classify("CREATE TEMPORARY TABLE t (a int)", &q, 0);
    CHECK(q.pins);
    classify("LOCK TABLES t WRITE", &q, 0);
    CHECK(q.pins);
    classify("SELECT GET_LOCK('a', 1)", &q, 0);
    CHECK(q.pins && !q.is_read);
    classify("/* unterminated", &q, 0);
    CHECK(q.hint == UD_HINT_NONE);
    classify("", &q, 0);
    classify("KILL 42", &q, 0);
    CHECK(q.kill == 1 && q.kill_id == 42);
    classify("kill query 7;", &q, 0);
    CHECK(q.kill == 2 && q.kill_id == 7);
    classify("KILL CONNECTION 9", &q, 0);
    CHECK(q.kill == 1 && q.kill_id == 9);
    classify("KILL USER bob", &q, 0);
    CHECK(q.kill == 0);
}

static void test_sql_quote(void)
{
    char out[64];
    size_t n = ud_sql_quote(out, sizeof out, "a'b\\c\0d", 7);
    CHECK_EQ_INT(n, strlen("'a\\'b\\\\c\\0d'"));
    CHECK_STR(out, "'a\\'b\\\\c\\0d'");
    CHECK_EQ_INT(ud_sql_quote(out, 4, "abc", 3), 0);
}

static void test_change_user(void)
{
    struct ud_hs_response r;
    uint32_t caps = UD_CLIENT_SECURE_CONNECTION | UD_CLIENT_PLUGIN_AUTH;
    /* user, 20-byte auth, db, charset 45, plugin, empty attributes */
    uint8_t p[128];
    size_t n = 0;
    memcpy(p + n, "app", 4), n += 4;
    p[n++] = 20;
    memset(p + n, 'x', 20), n += 20;
    memcpy(p + n, "lj", 3), n += 3;
    p[n++] = 45, p[n++] = 0;
    memcpy(p + n, "mysql_native_password", 22), n += 22;
    p[n++] = 0;
    CHECK_EQ_INT(ud_parse_change_user(p, n, caps, &r), 0);
    CHECK(r.user_len == 3 && memcmp(r.user, "app", 3) == 0);
    CHECK(r.auth_len == 20 && r.auth == p + 5);
    CHECK(r.db_len == 2 && memcmp(r.db, "lj", 2) == 0);
    CHECK(r.charset == 45);
    CHECK(r.plugin_len == 21 && memcmp(r.plugin, "mysql_native_password", 21) == 0);
    /* an old client: user and auth only */
    CHECK_EQ_INT(ud_parse_change_user(p, 25, caps, &r), 0);
    CHECK(r.db == NULL && r.plugin == NULL);
    /* truncated: no NUL after the user, auth longer than what is left */
    CHECK_EQ_INT(ud_parse_change_user(p, 3, caps, &r), -1);
    CHECK_EQ_INT(ud_parse_change_user(p, 10, caps, &r), -1);
    /* no NUL after the database */
    CHECK_EQ_INT(ud_parse_change_user(p, 26, caps, &r), -1);
}

int main(void)
{
    RUN(test_lenenc);
    RUN(test_scramble_known_answer);
    RUN(test_handshake_round_trip);
    RUN(test_ok_err_eof);
    RUN(test_reply_framing);
    RUN(test_classify);
    RUN(test_sql_quote);
    RUN(test_change_user);
    return unit_done();
}
