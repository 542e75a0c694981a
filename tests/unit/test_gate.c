/*
 * test_gate.c - the request gate: path normalisation, what it refuses,
 * hop-by-hop and identity fields, trusted proxies.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "proxy/request_gate.h"

static const char *norm(const char *in, bool merge, char *out)
{
    const char *why = NULL;
    size_t n = weir__path_normalize((weir_str){in, strlen(in)}, merge, out, &why);
    if (n == 0)
        return NULL;
    out[n] = '\0';
    return out;
}

Test(gate, path_normalization)
{
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"/a/b", "/a/b"},
        {"/a//b", "/a/b"},
        {"/a/./b", "/a/b"},
        {"/a/../b", "/b"},
        {"/public/../admin", "/admin"},
        {"/%61dmin", "/admin"},
        {"/%75sers/42", "/users/42"},
        {"/a/%2e%2E/b", "/b"},
        {"/a/.", "/a/"},
        {"/a/..", "/"},
        {"/a%2fb", "/a%2Fb"},
        {"/a%2Fb", "/a%2Fb"},
        {"/.hidden", "/.hidden"},
        {"/a/..b", "/a/..b"},
        {"/a/b/../../c", "/c"},
        {"/%7euser", "/~user"},
        {"//", "/"},
        {"//users/42", "/users/42"},
        {"/a%20b", "/a%20b"},
        {"/caf\xc3\xa9", "/caf\xc3\xa9"},
        {"/", "/"},
        {"/a/.../b", "/a/.../b"},
        {"/a;v=1/b", "/a;v=1/b"},
        {"/a/..x;y/b", "/a/..x;y/b"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[64];
        const char *got = norm(cases[i].in, true, out);
        cr_expect(got && strcmp(got, cases[i].out) == 0, "%s -> '%s', want %s", cases[i].in,
                  got ? got : "(refused)", cases[i].out);
    }
}

Test(gate, keep_slashes)
{
    char out[64];
    cr_expect_str_eq(norm("//a//b", false, out), "//a//b");
    cr_expect_str_eq(norm("/a//../b", false, out), "/a/b");
}

Test(gate, refused_paths)
{
    static const char *const bad[] = {
        "/..",
        "/../b",
        "/a/../../b",
        "/a/b/../../../c",
        "/x%2",
        "/x%zz",
        "/x%",
        "/a%00b",
        "/a#frag",
        "/static/..%2fadmin",
        "/static/..%2Fadmin",
        "/a/.%2f..",
        "/a\\..\\b",
        "/a/..%5cb",
        "/%2e%2e/x",
        "a/b",
        "",
        "/static/%2e%2e%2fadmin",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[64];
        cr_expect_null(norm(bad[i], true, out), "%s was accepted", bad[i]);
    }
}

Test(gate, target_keeps_the_query)
{
    weir_arena a;
    char mem[512];
    weir__arena_init(&a, mem, sizeof(mem));
    weir_str out;
    const char *why;
    cr_assert_eq(weir__gate_target(&a, WEIR_STR("/a//b/../c?x=/../y"), true, &out, &why), WEIR_OK);
    cr_expect(out.len == 12 && memcmp(out.ptr, "/a/c?x=/../y", 12) == 0, "%.*s", (int)out.len,
              out.ptr);
    weir_str plain = WEIR_STR("/plain/path?q");
    cr_assert_eq(weir__gate_target(&a, plain, true, &out, &why), WEIR_OK);
    cr_expect_eq(out.ptr, plain.ptr, "a normal path is not copied");
    cr_expect_eq(weir__gate_target(&a, WEIR_STR("/../x?q"), true, &out, &why), WEIR_ERR_INVAL);
    cr_expect_eq(weir__gate_target(&a, WEIR_STR("/x?q#frag"), true, &out, &why), WEIR_ERR_INVAL);
    weir__arena_reset(&a);
}

/* A request message over an arena, with the given fields. */
typedef struct req {
    weir_msg m;
    weir_arena a;
    char mem[4096];
} req;

static void make(req *r, const char *method, const char *target, const char *const *fields)
{
    memset(&r->m, 0, sizeof(r->m));
    weir__arena_init(&r->a, r->mem, sizeof(r->mem));
    weir__headers_init(&r->m.headers, &r->a);
    r->m.method = (weir_str){method, strlen(method)};
    r->m.target = (weir_str){target, strlen(target)};
    r->m.version = 11;
    for (size_t i = 0; fields && fields[i]; i += 2)
        weir__headers_push(&r->m.headers, (weir_str){fields[i], strlen(fields[i])},
                           (weir_str){fields[i + 1], strlen(fields[i + 1])});
}

static weir_proxy_options defaults(void)
{
    weir_proxy_options o;
    memset(&o, 0, sizeof(o));
    o.max_uri_bytes = 8192;
    return o;
}

static bool has(const weir_msg *m, const char *name)
{
    return weir__headers_find(&m->headers, name, 0) >= 0;
}

Test(gate, connection_cannot_remove_what_weir_adds)
{
    static const char *const f[] = {"Host",
                                    "h",
                                    "Connection",
                                    "close, X-Forwarded-For, X-Real-IP, Via, X-Gateway",
                                    "X-Forwarded-For",
                                    "1.1.1.1",
                                    "X-Gateway",
                                    "client",
                                    "X-Other",
                                    "kept",
                                    NULL};
    req r;
    make(&r, "GET", "/", f);
    weir_proxy_options o = defaults();
    weir_gate g;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_assert_eq(g.status, 0);
    cr_expect(!has(&r.m, "connection"));
    cr_expect(!has(&r.m, "x-forwarded-for"), "the client's own XFF is nominated: it goes");
    cr_expect(!has(&r.m, "x-gateway"));
    cr_expect(has(&r.m, "x-other"));
    cr_expect(has(&r.m, "host"));
}

Test(gate, connection_naming_framing_is_refused)
{
    static const char *const names[] = {"Host", "Content-Length", "transfer-encoding"};
    for (size_t i = 0; i < 3; i++) {
        const char *f[] = {"Host", "h", "Connection", names[i], NULL};
        req r;
        make(&r, "GET", "/", f);
        weir_proxy_options o = defaults();
        weir_gate g;
        weir__gate_request(&r.m, &r.a, &o, false, &g);
        cr_expect_eq(g.status, 400, "Connection: %s", names[i]);
    }
}

Test(gate, identity_fields_from_untrusted_peers_go)
{
    static const char *const f[] = {"Host",
                                    "h",
                                    "X-Real-IP",
                                    "6.6.6.6",
                                    "X-Forwarded-Proto",
                                    "https",
                                    "X-Forwarded-Host",
                                    "evil",
                                    "Forwarded",
                                    "for=6.6.6.6",
                                    "X-Forwarded-For",
                                    "6.6.6.6",
                                    NULL};
    req r;
    make(&r, "GET", "/", f);
    weir_proxy_options o = defaults();
    weir_gate g;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect(!has(&r.m, "x-real-ip") && !has(&r.m, "x-forwarded-proto") &&
              !has(&r.m, "x-forwarded-host") && !has(&r.m, "forwarded"));
    cr_expect(has(&r.m, "x-forwarded-for"), "appended to, not dropped");

    make(&r, "GET", "/", f);
    weir__gate_request(&r.m, &r.a, &o, true, &g);
    cr_expect(has(&r.m, "x-forwarded-proto") && has(&r.m, "forwarded"), "a trusted proxy's stay");
    cr_expect(!has(&r.m, "x-real-ip"), "X-Real-IP is always weir's");
}

Test(gate, underscores_dropped_unless_allowed)
{
    static const char *const f[] = {"Host", "h", "Transfer_Encoding", "chunked", "X_User",
                                    "a",    NULL};
    req r;
    make(&r, "GET", "/", f);
    weir_proxy_options o = defaults();
    weir_gate g;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect(!has(&r.m, "transfer_encoding") && !has(&r.m, "x_user"));
    make(&r, "GET", "/", f);
    o.underscores_in_headers = true;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect(has(&r.m, "x_user"));
}

Test(gate, target_forms)
{
    static const struct {
        const char *method, *target;
        int status;
    } cases[] = {
        {"CONNECT", "example.com:443", 405},
        {"GET", "*", 400},
        {"OPTIONS", "*", 0},
        {"GET", "example.com:443", 400},
        {"TRACE", "/", 405},
        {"GET", "/a/../../b", 400},
        {"GET", "/ok", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        req r;
        make(&r, cases[i].method, cases[i].target, NULL);
        weir_proxy_options o = defaults();
        weir_gate g;
        weir__gate_request(&r.m, &r.a, &o, false, &g);
        cr_expect_eq(g.status, cases[i].status, "%s %s: %d", cases[i].method, cases[i].target,
                     g.status);
    }
}

Test(gate, long_target_is_414)
{
    static char t[9000];
    t[0] = '/';
    memset(t + 1, 'a', sizeof(t) - 2);
    req r;
    make(&r, "GET", t, NULL);
    weir_proxy_options o = defaults();
    weir_gate g;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect_eq(g.status, 414);
}

Test(gate, get_with_body_closes)
{
    req r;
    make(&r, "GET", "/", NULL);
    r.m.body = WEIR_BODY_KNOWN;
    r.m.content_length = 3;
    weir_proxy_options o = defaults();
    weir_gate g;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect(g.close);
    make(&r, "POST", "/", NULL);
    r.m.body = WEIR_BODY_KNOWN;
    weir__gate_request(&r.m, &r.a, &o, false, &g);
    cr_expect(!g.close);
}

Test(gate, forwarded_client_is_rightmost_untrusted)
{
    weir_proxy_options o = defaults();
    cr_assert_eq(weir_cidr_parse("10.0.0.0/8", &o.trusted_proxies[0]), WEIR_OK);
    cr_assert_eq(weir_cidr_parse("::1", &o.trusted_proxies[1]), WEIR_OK);
    o.n_trusted_proxies = 2;
    static const struct {
        const char *xff1, *xff2, *want;
    } cases[] = {
        {"1.1.1.1, 10.0.0.2", NULL, "1.1.1.1"},
        {"6.6.6.6, 2.2.2.2, 10.1.1.1", NULL, "2.2.2.2"},
        {"6.6.6.6", "2.2.2.2, 10.0.0.9", "2.2.2.2"},
        {"10.0.0.1, 10.0.0.2", NULL, "10.0.0.1"},
        {"garbage, 3.3.3.3", NULL, "3.3.3.3"},
        {"3.3.3.3, garbage", NULL, ""},
        {"[2001:db8::1]:443, ::1", NULL, "2001:db8::1"},
        {"4.4.4.4:1234", NULL, "4.4.4.4"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *f[] = {"X-Forwarded-For", cases[i].xff1,
                           cases[i].xff2 ? "X-Forwarded-For" : NULL, cases[i].xff2, NULL};
        req r;
        make(&r, "GET", "/", f);
        char out[64];
        size_t n = weir__gate_forwarded_client(&r.m.headers, &o, out, sizeof(out));
        out[n] = '\0';
        cr_expect_str_eq(out, cases[i].want, "case %zu", i);
    }
}

Test(gate, cidr_match)
{
    weir_cidr c[2];
    cr_assert_eq(weir_cidr_parse("192.168.1.77/24", &c[0]), WEIR_OK);
    cr_assert_eq(weir_cidr_parse("2001:db8::/32", &c[1]), WEIR_OK);
    cr_expect_neq(weir_cidr_parse("1.2.3.4/33", &c[0]), WEIR_OK);
    cr_expect_neq(weir_cidr_parse("nope", &c[0]), WEIR_OK);
    cr_expect_neq(weir_cidr_parse("1.2.3.4/", &c[0]), WEIR_OK);
    cr_assert_eq(weir_cidr_parse("192.168.1.77/24", &c[0]), WEIR_OK);
    struct sockaddr_in a4 = {.sin_family = AF_INET};
    inet_pton(AF_INET, "192.168.1.200", &a4.sin_addr);
    cr_expect(weir__cidr_match(c, 2, (struct sockaddr *)&a4));
    inet_pton(AF_INET, "192.168.2.1", &a4.sin_addr);
    cr_expect(!weir__cidr_match(c, 2, (struct sockaddr *)&a4));
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6};
    inet_pton(AF_INET6, "::ffff:192.168.1.5", &a6.sin6_addr);
    cr_expect(weir__cidr_match(c, 2, (struct sockaddr *)&a6), "IPv4-mapped");
    inet_pton(AF_INET6, "2001:db8:1::5", &a6.sin6_addr);
    cr_expect(weir__cidr_match(c, 2, (struct sockaddr *)&a6));
    inet_pton(AF_INET6, "2001:db9::5", &a6.sin6_addr);
    cr_expect(!weir__cidr_match(c, 2, (struct sockaddr *)&a6));
}

Test(gate, request_ids)
{
    cr_expect(weir__request_id_ok(WEIR_STR("0123abcd-ef")));
    cr_expect(weir__request_id_ok(WEIR_STR("trace:1.2")));
    cr_expect(!weir__request_id_ok(WEIR_STR("../../evil")));
    cr_expect(!weir__request_id_ok(WEIR_STR("a b")));
    cr_expect(!weir__request_id_ok(WEIR_STR("")));
    cr_expect(!weir__request_id_ok(WEIR_STR("a\"b")));
    char longid[65];
    memset(longid, 'a', 65);
    cr_expect(!weir__request_id_ok((weir_str){longid, 65}));
    cr_expect(weir__request_id_ok((weir_str){longid, 64}));
}

Test(gate, response_nominations)
{
    static const char *const f[] = {"Connection",
                                    "X-Secret, Content-Length",
                                    "X-Secret",
                                    "s",
                                    "Content-Length",
                                    "3",
                                    "Set-Cookie",
                                    "a=b",
                                    NULL};
    req r;
    make(&r, "GET", "/", f);
    weir__gate_response(&r.m);
    cr_expect(!has(&r.m, "x-secret") && !has(&r.m, "connection"));
    cr_expect(has(&r.m, "content-length") && has(&r.m, "set-cookie"));
}

Test(gate, response_nominations_many_tokens_and_keep_alive_only)
{
    /* More tokens than the gate collects: each field is looked up in the
     * Connection fields themselves; the last one still goes. */
    char conn[512] = "keep-alive";
    for (int i = 0; i < 20; i++)
        snprintf(conn + strlen(conn), sizeof(conn) - strlen(conn), ", X-N%d", i);
    const char *f[] = {"Connection", conn, "X-N19", "gone", "X-Kept", "k", NULL};
    req r;
    make(&r, "GET", "/", f);
    weir__gate_response(&r.m);
    cr_expect(!has(&r.m, "x-n19") && !has(&r.m, "connection") && has(&r.m, "x-kept"));
    /* Only keep-alive (and close): nothing but the Connection field goes,
     * in two fields too. */
    const char *g[] = {"Connection", "keep-alive", "Connection", "close", "X-A",
                       "a",          "Keep-Alive", "timeout=5",  NULL};
    req r2;
    make(&r2, "GET", "/", g);
    weir__gate_response(&r2.m);
    cr_expect(!has(&r2.m, "connection") && has(&r2.m, "x-a") && has(&r2.m, "keep-alive"));
}
