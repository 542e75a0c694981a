/*
 * test_h1_parse.c - HTTP/1.x head parser and framing rules.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/h1_parse.h"

#define MAX_H 64

typedef struct parsed_req {
    int r;
    weir_h1_request req;
    weir_header headers[MAX_H];
} parsed_req;

typedef struct parsed_resp {
    int r;
    weir_h1_response resp;
    weir_header headers[MAX_H];
} parsed_resp;

static int parse_req(const char *s, size_t len, parsed_req *out)
{
    size_t scan = 0;
    memset(out, 0, sizeof(*out));
    out->req.headers = out->headers;
    out->r = weir_h1_parse_request(s, len, &out->req, MAX_H, &scan);
    return out->r;
}

static int parse_resp(const char *s, size_t len, parsed_resp *out)
{
    size_t scan = 0;
    memset(out, 0, sizeof(*out));
    out->resp.headers = out->headers;
    out->r = weir_h1_parse_response(s, len, &out->resp, MAX_H, &scan);
    return out->r;
}

static bool str_is(weir_str s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0;
}

#define assert_str(s, lit)                                                                         \
    cr_assert(str_is((s), (lit)), "expected \"%s\", got \"%.*s\"", (lit), (int)(s).len, (s).ptr)

/* ---- valid requests --------------------------------------------------- */

Test(h1_request, simple_get)
{
    static const char m[] = "GET /index.html?a=1 HTTP/1.1\r\nHost: example.com\r\n"
                            "Accept: */*\r\n\r\nBODY";
    parsed_req p;
    cr_assert_eq(parse_req(m, sizeof(m) - 1, &p), (int)sizeof(m) - 1 - 4);
    assert_str(p.req.method, "GET");
    assert_str(p.req.target, "/index.html?a=1");
    cr_assert_eq(p.req.minor_version, 1);
    cr_assert_eq(p.req.n_headers, 2);
    assert_str(p.headers[0].name, "Host");
    assert_str(p.headers[0].value, "example.com");
    assert_str(p.headers[1].name, "Accept");
    assert_str(p.headers[1].value, "*/*");
    /* zero-copy: slices point into the input */
    cr_assert_eq(p.req.method.ptr, m);
}

Test(h1_request, http10_no_headers)
{
    static const char m[] = "POST /x HTTP/1.0\r\n\r\n";
    parsed_req p;
    cr_assert_eq(parse_req(m, sizeof(m) - 1, &p), (int)sizeof(m) - 1);
    cr_assert_eq(p.req.minor_version, 0);
    cr_assert_eq(p.req.n_headers, 0);
}

Test(h1_request, lf_only_and_mixed_line_endings)
{
    static const char m1[] = "GET / HTTP/1.1\nHost: a\nX: y\n\n";
    static const char m2[] = "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\n";
    static const char m3[] = "GET / HTTP/1.1\nHost: a\r\n\r\n";
    parsed_req p;
    cr_assert_eq(parse_req(m1, sizeof(m1) - 1, &p), (int)sizeof(m1) - 1);
    cr_assert_eq(p.req.n_headers, 2);
    assert_str(p.headers[1].value, "y");
    cr_assert_eq(parse_req(m2, sizeof(m2) - 1, &p), (int)sizeof(m2) - 1);
    cr_assert_eq(p.req.n_headers, 2);
    cr_assert_eq(parse_req(m3, sizeof(m3) - 1, &p), (int)sizeof(m3) - 1);
    assert_str(p.headers[0].value, "a");
}

Test(h1_request, leading_empty_lines_skipped)
{
    static const char m[] = "\r\n\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    parsed_req p;
    cr_assert_eq(parse_req(m, sizeof(m) - 1, &p), (int)sizeof(m) - 1);
    assert_str(p.req.method, "GET");
    cr_assert_eq(p.req.n_headers, 1);
    /* only empty lines so far: not a head yet */
    cr_assert_eq(parse_req("\r\n\r\n\r\n", 6, &p), WEIR_H1_INCOMPLETE);
    cr_assert_eq(parse_req("\n\n\n\n", 4, &p), WEIR_H1_INCOMPLETE);
}

Test(h1_request, empty_and_trimmed_values)
{
    static const char m[] = "GET / HTTP/1.1\r\nA:\r\nB:    \r\nC: \t v a l \t \r\nD:x\r\n"
                            "E: \xc3\xa9t\xe9\r\n\r\n";
    parsed_req p;
    cr_assert_eq(parse_req(m, sizeof(m) - 1, &p), (int)sizeof(m) - 1);
    cr_assert_eq(p.req.n_headers, 5);
    assert_str(p.headers[0].value, "");
    assert_str(p.headers[1].value, "");
    assert_str(p.headers[2].value, "v a l");
    assert_str(p.headers[3].value, "x");
    assert_str(p.headers[4].value, "\xc3\xa9t\xe9"); /* obs-text is allowed */
}

Test(h1_request, many_headers_and_limit)
{
    char m[8192];
    size_t len = (size_t)sprintf(m, "GET / HTTP/1.1\r\n");
    for (int i = 0; i < MAX_H; i++)
        len += (size_t)sprintf(m + len, "X-Header-%d: value %d\r\n", i, i);
    len += (size_t)sprintf(m + len, "\r\n");

    parsed_req p;
    cr_assert_eq(parse_req(m, len, &p), (int)len);
    cr_assert_eq(p.req.n_headers, MAX_H);
    assert_str(p.headers[MAX_H - 1].name, "X-Header-63");
    assert_str(p.headers[MAX_H - 1].value, "value 63");

    /* one more than the array holds */
    weir_header h[MAX_H - 1];
    weir_h1_request req = {.headers = h};
    size_t scan = 0;
    cr_assert_eq(weir_h1_parse_request(m, len, &req, MAX_H - 1, &scan), WEIR_H1_E_TOO_MANY_HEADERS);

    /* max_headers 0 works for a head without fields */
    weir_h1_request req0 = {0};
    scan = 0;
    cr_assert_eq(weir_h1_parse_request("GET / HTTP/1.1\r\n\r\n", 18, &req0, 0, &scan), 18);
    scan = 0;
    cr_assert_eq(weir_h1_parse_request("GET / HTTP/1.1\r\nA: b\r\n\r\n", 24, &req0, 0, &scan),
                 WEIR_H1_E_TOO_MANY_HEADERS);
}

Test(h1_request, methods_and_targets)
{
    static const char *ok[] = {
        "M-SEARCH * HTTP/1.1\r\n\r\n",        "CONNECT example.com:443 HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",         "GET http://a.example/b?c#d HTTP/1.1\r\n\r\n",
        "GET /caf\xc3\xa9 HTTP/1.1\r\n\r\n",  "get /lowercase-method-is-a-token HTTP/1.1\r\n\r\n",
        "!#$%&'*+-.^_`|~ / HTTP/1.1\r\n\r\n", "GET /{}\"<>\\ HTTP/1.0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        parsed_req p;
        size_t len = strlen(ok[i]);
        cr_assert_eq(parse_req(ok[i], len, &p), (int)len, "case %zu: %s", i, weir_h1_strerror(p.r));
    }
}

Test(h1_request, pipelined_message_not_included)
{
    static const char m[] = "GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n";
    parsed_req p;
    cr_assert_eq(parse_req(m, sizeof(m) - 1, &p), 19);
    cr_assert_eq(parse_req(m + 19, sizeof(m) - 1 - 19, &p), 19);
    assert_str(p.req.target, "/2");
}

/* ---- incremental parsing ---------------------------------------------- */

static const char *const incremental_cases[] = {
    "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\n\n",
    "\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    "\n\nGET / HTTP/1.0\nA: b\r\n\n",
    "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",   /* bare CR */
    "GET / HTTP/1.1\r\n folded\r\n\r\n",      /* obs-fold */
    "GET / HTTP/1.1\r\nHost : a\r\n\r\n",     /* ws before colon */
    "GET / HTTP/1.1\r\n\r\r\n\r\n",           /* bare CR in the "empty" line */
    "GET / HTTP/1.2\r\nHost: a\r\n\r\n",      /* version */
    "GET / HTTP/1.1\r\nA: b\r\n\r\nGET / HT", /* pipelined tail */
    "\r\r\n\r\nGET / HTTP/1.1\r\n\r\n",       /* bare CR among leading lines */
};

/* Every prefix is INCOMPLETE (or already the final result), and growing the
 * buffer one byte at a time while keeping `scan` gives the same result. */
Test(h1_request, partial_input_every_split_point)
{
    for (size_t c = 0; c < sizeof(incremental_cases) / sizeof(incremental_cases[0]); c++) {
        const char *m = incremental_cases[c];
        size_t len = strlen(m);
        parsed_req whole;
        parse_req(m, len, &whole);
        cr_assert_neq(whole.r, WEIR_H1_INCOMPLETE, "case %zu", c);

        for (size_t k = 0; k <= len; k++) {
            /* a fresh parse of the prefix, then the rest with the same scan */
            weir_header h[MAX_H];
            weir_h1_request req = {.headers = h};
            size_t scan = 0;
            int r1 = weir_h1_parse_request(m, k, &req, MAX_H, &scan);
            if (r1 == WEIR_H1_INCOMPLETE) {
                cr_assert_leq(scan, k);
                r1 = weir_h1_parse_request(m, len, &req, MAX_H, &scan);
            }
            cr_assert_eq(r1, whole.r, "case %zu split %zu: %d vs %d", c, k, r1, whole.r);
            if (r1 > 0) {
                cr_assert_eq(req.n_headers, whole.req.n_headers);
                cr_assert_eq(req.target.ptr, whole.req.target.ptr);
                cr_assert_eq(req.target.len, whole.req.target.len);
            }
        }

        /* one byte at a time */
        weir_header h[MAX_H];
        weir_h1_request req = {.headers = h};
        size_t scan = 0;
        int r = WEIR_H1_INCOMPLETE;
        size_t k;
        for (k = 1; k <= len && r == WEIR_H1_INCOMPLETE; k++)
            r = weir_h1_parse_request(m, k, &req, MAX_H, &scan);
        cr_assert_eq(r, whole.r, "case %zu bytewise", c);
    }
}

Test(h1_response, partial_input_every_split_point)
{
    static const char m[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nok";
    size_t len = sizeof(m) - 1, head = len - 2;
    for (size_t k = 0; k <= len; k++) {
        weir_header h[MAX_H];
        weir_h1_response resp = {.headers = h};
        size_t scan = 0;
        int r = weir_h1_parse_response(m, k, &resp, MAX_H, &scan);
        cr_assert_eq(r, k < head ? WEIR_H1_INCOMPLETE : (int)head, "split %zu", k);
        r = weir_h1_parse_response(m, len, &resp, MAX_H, &scan);
        cr_assert_eq(r, (int)head);
        cr_assert_eq(resp.status, 200);
        cr_assert_eq(resp.n_headers, 2);
    }
}

/* A 64 KiB head fed one byte at a time: the search for the end must resume
 * where it stopped, which `scan` shows: after every call it has caught up
 * with the data, so each call looks at O(1) old bytes (no timing asserts). */
Test(h1_request, big_head_bytewise_is_linear)
{
    size_t cap = 70 * 1024, len = 0, n_fields = 0;
    char *m = malloc(cap);
    cr_assert_not_null(m);
    len += (size_t)sprintf(m, "GET / HTTP/1.1\r\n");
    while (len < 64 * 1024) {
        len += (size_t)sprintf(m + len, "X-Filler-%zu: %0100zu\r\n", n_fields, n_fields);
        n_fields++;
    }
    len += (size_t)sprintf(m + len, "\r\n");

    weir_header *h = calloc(n_fields, sizeof(*h));
    cr_assert_not_null(h);
    weir_h1_request req = {.headers = h};
    size_t scan = 0, calls = 0;
    int r = WEIR_H1_INCOMPLETE;
    for (size_t k = 1; k <= len && r == WEIR_H1_INCOMPLETE; k++) {
        r = weir_h1_parse_request(m, k, &req, n_fields, &scan);
        calls++;
        if (r == WEIR_H1_INCOMPLETE)
            cr_assert_eq(scan, k, "scan %zu fell behind at %zu", scan, k);
    }
    cr_assert_eq(r, (int)len);
    cr_assert_eq(calls, len);
    cr_assert_eq(req.n_headers, n_fields);
    cr_assert_gt(n_fields, 500);
    free(h);
    free(m);
}

/* ---- malformed requests ----------------------------------------------- */

typedef struct bad_case {
    const char *msg;
    size_t len; /* 0: strlen */
    int expect;
} bad_case;

#define BAD(s, e)                                                                                  \
    {                                                                                              \
        s, sizeof(s) - 1, e                                                                        \
    }

static const bad_case bad_requests[] = {
    /* request line */
    BAD("GET  / HTTP/1.1\r\n\r\n", WEIR_H1_E_TARGET),
    BAD("GET /  HTTP/1.1\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/1.1 \r\n\r\n", WEIR_H1_E_VERSION),
    BAD(" GET / HTTP/1.1\r\n\r\n", WEIR_H1_E_METHOD),
    BAD("G(T / HTTP/1.1\r\n\r\n", WEIR_H1_E_METHOD),
    BAD("GE\"T / HTTP/1.1\r\n\r\n", WEIR_H1_E_METHOD),
    BAD("G\x80T / HTTP/1.1\r\n\r\n", WEIR_H1_E_METHOD),
    BAD("GET\t/ HTTP/1.1\r\n\r\n", WEIR_H1_E_METHOD),
    BAD("GET\r\n\r\n", WEIR_H1_E_SYNTAX),
    BAD("GET /\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET /a\x7f HTTP/1.1\r\n\r\n", WEIR_H1_E_TARGET),
    BAD("GET /a\tb HTTP/1.1\r\n\r\n", WEIR_H1_E_TARGET),
    BAD("GET /a\x01 HTTP/1.1\r\n\r\n", WEIR_H1_E_TARGET),
    BAD("GET \r\n\r\n", WEIR_H1_E_TARGET),
    BAD("GET / HTTP/1.2\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/2.0\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/0.9\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / http/1.1\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/1.10\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/1\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("GET / HTTP/1.1\r\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET /\r HTTP/1.1\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GE\rT / HTTP/1.1\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("\rGET / HTTP/1.1\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET /\0 HTTP/1.1\r\n\r\n", WEIR_H1_E_NUL),
    BAD("G\0T / HTTP/1.1\r\n\r\n", WEIR_H1_E_NUL),
    BAD("GET / HTTP/1.1\0\r\n\r\n", WEIR_H1_E_NUL),
    /* field lines */
    BAD("GET / HTTP/1.1\r\nHost : a\r\n\r\n", WEIR_H1_E_WS_BEFORE_COLON),
    BAD("GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", WEIR_H1_E_WS_BEFORE_COLON),
    BAD("GET / HTTP/1.1\r\nContent-Length : 5\r\n\r\n", WEIR_H1_E_WS_BEFORE_COLON),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", WEIR_H1_E_OBS_FOLD),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\tb\r\n\r\n", WEIR_H1_E_OBS_FOLD),
    BAD("GET / HTTP/1.1\r\n Host: a\r\n\r\n", WEIR_H1_E_OBS_FOLD),
    BAD("GET / HTTP/1.1\r\n: a\r\n\r\n", WEIR_H1_E_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHo(st: a\r\n\r\n", WEIR_H1_E_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHo st: a\r\n\r\n", WEIR_H1_E_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nH\xc3\xa9: a\r\n\r\n", WEIR_H1_E_HEADER_NAME),
    BAD("GET / HTTP/1.1\r\nHost\r\n\r\n", WEIR_H1_E_SYNTAX),
    BAD("GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", WEIR_H1_E_HEADER_VALUE),
    BAD("GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n", WEIR_H1_E_HEADER_VALUE),
    BAD("GET / HTTP/1.1\r\nHost: a\x1b[0m\r\n\r\n", WEIR_H1_E_HEADER_VALUE),
    BAD("GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\nHo\rst: a\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\nHost\r: a\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\n\rHost: a\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", WEIR_H1_E_BARE_CR),
    BAD("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", WEIR_H1_E_NUL),
    BAD("GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", WEIR_H1_E_NUL),
    BAD("GET / HTTP/1.1\r\n\0\r\n\r\n", WEIR_H1_E_NUL),
};

Test(h1_request, malformed_table)
{
    for (size_t i = 0; i < sizeof(bad_requests) / sizeof(bad_requests[0]); i++) {
        parsed_req p;
        int r = parse_req(bad_requests[i].msg, bad_requests[i].len, &p);
        cr_assert_eq(r, bad_requests[i].expect, "case %zu (%s): got %d %s, want %d", i,
                     bad_requests[i].msg, r, weir_h1_strerror(r), bad_requests[i].expect);
    }
}

/* ---- responses -------------------------------------------------------- */

Test(h1_response, valid)
{
    static const struct {
        const char *msg;
        int minor, status;
        const char *reason;
        size_t n_headers;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 1, 200, "OK", 1},
        {"HTTP/1.0 404 Not Found\r\n\r\n", 0, 404, "Not Found", 0},
        {"HTTP/1.1 204 \r\n\r\n", 1, 204, "", 0},
        {"HTTP/1.1 204\r\n\r\n", 1, 204, "", 0},
        {"HTTP/1.1 100 Continue\n\n", 1, 100, "Continue", 0},
        {"HTTP/1.9 999 Odd  reason \t\r\nA: b\nC: d\r\n\r\n", 9, 999, "Odd  reason \t", 2},
        {"HTTP/1.1 500 \xe9rreur\r\n\r\n", 1, 500, "\xe9rreur", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        parsed_resp p;
        size_t len = strlen(cases[i].msg);
        cr_assert_eq(parse_resp(cases[i].msg, len, &p), (int)len, "case %zu: %s", i,
                     weir_h1_strerror(p.r));
        cr_assert_eq(p.resp.minor_version, cases[i].minor);
        cr_assert_eq(p.resp.status, cases[i].status);
        assert_str(p.resp.reason, cases[i].reason);
        cr_assert_eq(p.resp.n_headers, cases[i].n_headers);
    }
}

static const bad_case bad_responses[] = {
    BAD("HTTP/1.1 099 Low\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1 000\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1 1000 Big\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1 20 Short\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1 2x0 X\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1  200 OK\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/1.1 -20 X\r\n\r\n", WEIR_H1_E_STATUS),
    BAD("HTTP/2.0 200 OK\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("http/1.1 200 OK\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("HTTP/1.x 200 OK\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("HTTP/1.10 200 OK\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("ICY 200 OK\r\n\r\n", WEIR_H1_E_VERSION),
    BAD("HTTP/1.1 200 O\x01K\r\n\r\n", WEIR_H1_E_SYNTAX),
    BAD("HTTP/1.1 200 O\rK\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("HTTP/1.1 200 O\0K\r\n\r\n", WEIR_H1_E_NUL),
    BAD("HTTP/1.1 200 OK\r\nA : b\r\n\r\n", WEIR_H1_E_WS_BEFORE_COLON),
    BAD("HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", WEIR_H1_E_OBS_FOLD),
    BAD("HTTP/1.1 200 OK\r\nA: b\rc\r\n\r\n", WEIR_H1_E_BARE_CR),
    BAD("HTTP/1.1 200 OK\r\nA: b\x02\r\n\r\n", WEIR_H1_E_HEADER_VALUE),
    BAD("HTTP/1.1 200 OK\r\n[A]: b\r\n\r\n", WEIR_H1_E_HEADER_NAME),
    BAD("\r\nHTTP/1.1 200 OK\r\n\r\n", WEIR_H1_E_SYNTAX),
};

Test(h1_response, malformed_table)
{
    for (size_t i = 0; i < sizeof(bad_responses) / sizeof(bad_responses[0]); i++) {
        parsed_resp p;
        int r = parse_resp(bad_responses[i].msg, bad_responses[i].len, &p);
        cr_assert_eq(r, bad_responses[i].expect, "case %zu (%s): got %d %s, want %d", i,
                     bad_responses[i].msg, r, weir_h1_strerror(r), bad_responses[i].expect);
    }
}

Test(h1_response, too_many_headers)
{
    static const char m[] = "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    weir_header h[2];
    weir_h1_response resp = {.headers = h};
    size_t scan = 0;
    cr_assert_eq(weir_h1_parse_response(m, sizeof(m) - 1, &resp, 2, &scan),
                 WEIR_H1_E_TOO_MANY_HEADERS);
    scan = 0;
    weir_header h3[3];
    resp.headers = h3;
    cr_assert_eq(weir_h1_parse_response(m, sizeof(m) - 1, &resp, 3, &scan), (int)sizeof(m) - 1);
}

/* ---- request framing -------------------------------------------------- */

typedef struct framing_case {
    const char *msg;
    int ret;
    enum weir_h1_body_kind kind;
    uint64_t cl;
    bool keep_alive, expect_continue, upgrade;
} framing_case;

#define H11 "GET / HTTP/1.1\r\n"
#define P11 "POST / HTTP/1.1\r\n"
#define P10 "POST / HTTP/1.0\r\n"
#define NONE WEIR_H1_BODY_NONE
#define LEN WEIR_H1_BODY_LENGTH
#define CHUNKED WEIR_H1_BODY_CHUNKED
#define CLOSE WEIR_H1_BODY_CLOSE
#define FERR(msg, err)                                                                             \
    {                                                                                              \
        msg, err, NONE, 0, false, false, false                                                     \
    }

static const framing_case request_framing_cases[] = {
    {H11 "\r\n", WEIR_OK, NONE, 0, true, false, false},
    {P10 "\r\n", WEIR_OK, NONE, 0, false, false, false},
    {P11 "Content-Length: 0\r\n\r\n", WEIR_OK, LEN, 0, true, false, false},
    {P11 "Content-Length: 42\r\n\r\n", WEIR_OK, LEN, 42, true, false, false},
    {P11 "content-length: 0042\r\n\r\n", WEIR_OK, LEN, 42, true, false, false},
    {P11 "Content-Length: 9223372036854775807\r\n\r\n", WEIR_OK, LEN, 9223372036854775807ull, true,
     false, false},
    {P11 "Transfer-Encoding: chunked\r\n\r\n", WEIR_OK, CHUNKED, 0, true, false, false},
    {P11 "Transfer-Encoding: CHUNKED\r\n\r\n", WEIR_OK, CHUNKED, 0, true, false, false},
    {P11 "Transfer-Encoding: chunked;ext=1\r\n\r\n", WEIR_OK, CHUNKED, 0, true, false, false},
    {P11 "Transfer-Encoding: chunked ; a=\"b;c\" ;d = e\r\n\r\n", WEIR_OK, CHUNKED, 0, true, false,
     false},
    {P10 "Content-Length: 3\r\n\r\n", WEIR_OK, LEN, 3, false, false, false},
    /* Connection / Expect / Upgrade */
    {H11 "Connection: close\r\n\r\n", WEIR_OK, NONE, 0, false, false, false},
    {H11 "Connection: foo, CLOSE\r\n\r\n", WEIR_OK, NONE, 0, false, false, false},
    {H11 "Connection: keep-alive\r\nConnection: close\r\n\r\n", WEIR_OK, NONE, 0, false, false,
     false},
    {"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", WEIR_OK, NONE, 0, true, false, false},
    {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", WEIR_OK, NONE, 0, false, false,
     false},
    {"GET / HTTP/1.0\r\nConnection: closed\r\n\r\n", WEIR_OK, NONE, 0, false, false, false},
    {P11 "Expect: 100-continue\r\nContent-Length: 1\r\n\r\n", WEIR_OK, LEN, 1, true, true, false},
    {P11 "Expect: 100-Continue\r\nContent-Length: 1\r\n\r\n", WEIR_OK, LEN, 1, true, true, false},
    {P11 "Expect: 100-continue-x\r\n\r\n", WEIR_OK, NONE, 0, true, false, false},
    {P10 "Expect: 100-continue\r\n\r\n", WEIR_OK, NONE, 0, false, false, false},
    {H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", WEIR_OK, NONE, 0, true, false, true},
    {H11 "Connection: upgrade\r\n\r\n", WEIR_OK, NONE, 0, true, false, false},
    {H11 "Upgrade: websocket\r\n\r\n", WEIR_OK, NONE, 0, true, false, false},
    {"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n", WEIR_OK, NONE, 0, false, false,
     false},
    /* smuggling vectors */
    FERR(P11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", WEIR_H1_E_CL_AND_TE),
    FERR(P11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", WEIR_H1_E_CL_AND_TE),
    FERR(P11 "Transfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n", WEIR_H1_E_CL_AND_TE),
    FERR(P11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", WEIR_H1_E_CL_MULTIPLE),
    FERR(P11 "Content-Length: 5, 6\r\n\r\n", WEIR_H1_E_CL_INVALID),
    /* lists and repeats, even of equal values: one hop may take the first */
    FERR(P11 "Content-Length: 5, 5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 1000,1000\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", WEIR_H1_E_CL_MULTIPLE),
    /* transfer codings: chunked alone, in RFC 9112's grammar */
    FERR(P11 "Transfer-Encoding: gzip, chunked\r\n\r\n", WEIR_H1_E_TE_UNSUPPORTED),
    FERR(P11 "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
         WEIR_H1_E_TE_UNSUPPORTED),
    FERR(P11 "Transfer-Encoding: chunked,\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: , chunked\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chun-ked\r\n\r\n", WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P11 "Transfer-Encoding: chunked;\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chunked;a\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chunked;a=\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chunked;a=\"b\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chunked chunked\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: \"chunked\"\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
         WEIR_H1_E_TE_INVALID),
    FERR(P11 "Content-Length: 5\r\nContent-Length: 05\r\nContent-Length: 7\r\n\r\n",
         WEIR_H1_E_CL_MULTIPLE),
    FERR(P11 "Content-Length: +5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: -5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5 5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 0x5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5a\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: \r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5,\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: ,5\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5.0\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 9223372036854775808\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 18446744073709551616\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 99999999999999999999999999\r\n\r\n", WEIR_H1_E_CL_INVALID),
    FERR(P11 "Content-Length: 5\r\nContent-Length: abc\r\n\r\n", WEIR_H1_E_CL_MULTIPLE),
    FERR(P11 "Transfer-Encoding: chunked, gzip\r\n\r\n", WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P11 "Transfer-Encoding: gzip\r\n\r\n", WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
         WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P11 "Transfer-Encoding: chunked, chunked\r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: xchunked\r\n\r\n", WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P11 "Transfer-Encoding: \r\n\r\n", WEIR_H1_E_TE_INVALID),
    FERR(P11 "Transfer-Encoding: identity\r\n\r\n", WEIR_H1_E_TE_NOT_CHUNKED),
    FERR(P10 "Transfer-Encoding: chunked\r\n\r\n", WEIR_H1_E_TE_HTTP10),
    FERR(P10 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", WEIR_H1_E_TE_HTTP10),
};

Test(h1_framing, request_table)
{
    for (size_t i = 0; i < sizeof(request_framing_cases) / sizeof(request_framing_cases[0]); i++) {
        const framing_case *c = &request_framing_cases[i];
        parsed_req p;
        size_t len = strlen(c->msg);
        cr_assert_eq(parse_req(c->msg, len, &p), (int)len, "case %zu does not parse", i);
        weir_h1_framing f;
        int r = weir_h1_request_framing(&p.req, &f);
        cr_assert_eq(r, c->ret, "case %zu (%s): got %d (%s)", i, c->msg, r, weir_h1_strerror(r));
        if (r != WEIR_OK)
            continue;
        cr_assert_eq(f.kind, c->kind, "case %zu kind", i);
        if (f.kind == WEIR_H1_BODY_LENGTH)
            cr_assert_eq(f.content_length, c->cl, "case %zu length", i);
        cr_assert_eq(f.keep_alive, c->keep_alive, "case %zu keep_alive", i);
        cr_assert_eq(f.expect_continue, c->expect_continue, "case %zu expect", i);
        cr_assert_eq(f.upgrade, c->upgrade, "case %zu upgrade", i);
    }
}

/* ---- response framing ------------------------------------------------- */

typedef struct resp_framing_case {
    const char *method;
    const char *msg;
    int ret;
    enum weir_h1_body_kind kind;
    uint64_t cl;
    bool keep_alive, upgrade;
} resp_framing_case;

#define R200 "HTTP/1.1 200 OK\r\n"
#define RERR(method, msg, err)                                                                     \
    {                                                                                              \
        method, msg, err, NONE, 0, false, false                                                    \
    }

static const resp_framing_case response_framing_cases[] = {
    {"GET", R200 "Content-Length: 10\r\n\r\n", WEIR_OK, LEN, 10, true, false},
    {"GET", R200 "Content-Length: 10, 10\r\n\r\n", WEIR_OK, LEN, 10, true, false},
    {"GET", R200 "Transfer-Encoding: chunked\r\n\r\n", WEIR_OK, CHUNKED, 0, true, false},
    {"GET", R200 "\r\n", WEIR_OK, CLOSE, 0, false, false},
    {"GET", R200 "Transfer-Encoding: gzip\r\n\r\n", WEIR_OK, CLOSE, 0, false, false},
    {"GET", R200 "Transfer-Encoding: chunked, gzip\r\nContent-Length: 3\r\n\r\n", WEIR_OK, CLOSE, 0,
     false, false},
    /* CL+TE from upstream: TE wins, and the connection is not reused */
    {"GET", R200 "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", WEIR_OK, CHUNKED, 0,
     false, false},
    {"GET", R200 "Content-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n", WEIR_OK, CHUNKED, 0,
     false, false},
    {"GET", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", WEIR_OK, CLOSE, 0, false,
     false},
    {"GET", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", WEIR_OK, LEN, 1, false, false},
    {"GET", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n", WEIR_OK, LEN,
     1, true, false},
    {"GET", R200 "Connection: close\r\nContent-Length: 1\r\n\r\n", WEIR_OK, LEN, 1, false, false},
    {"HEAD", R200 "Content-Length: 10\r\n\r\n", WEIR_OK, NONE, 0, true, false},
    {"HEAD", R200 "Transfer-Encoding: chunked\r\n\r\n", WEIR_OK, NONE, 0, true, false},
    {"GET", "HTTP/1.1 204 No Content\r\n\r\n", WEIR_OK, NONE, 0, true, false},
    {"GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", WEIR_OK, NONE, 0, true,
     false},
    {"GET", "HTTP/1.1 100 Continue\r\n\r\n", WEIR_OK, NONE, 0, true, false},
    {"GET", "HTTP/1.1 101 Switching\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", WEIR_OK,
     NONE, 0, true, true},
    {"GET",
     "HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"
     "Content-Length: 0\r\n\r\n",
     WEIR_OK, LEN, 0, true, false},
    {"CONNECT", R200 "\r\n", WEIR_OK, NONE, 0, true, false},
    {"CONNECT", R200 "Content-Length: 5\r\n\r\n", WEIR_OK, NONE, 0, true, false},
    {"CONNECT", "HTTP/1.1 407 Auth\r\nContent-Length: 5\r\n\r\n", WEIR_OK, LEN, 5, true, false},
    {"GET", "HTTP/1.1 299 X\r\n\r\n", WEIR_OK, CLOSE, 0, false, false},
    RERR("GET", R200 "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", WEIR_H1_E_CL_MULTIPLE),
    RERR("GET", R200 "Content-Length: -1\r\n\r\n", WEIR_H1_E_CL_INVALID),
    RERR("GET", R200 "Content-Length: 1 2\r\n\r\n", WEIR_H1_E_CL_INVALID),
    RERR("HEAD", R200 "Content-Length: 5, 6\r\n\r\n", WEIR_H1_E_CL_MULTIPLE),
};

Test(h1_framing, response_table)
{
    for (size_t i = 0; i < sizeof(response_framing_cases) / sizeof(response_framing_cases[0]);
         i++) {
        const resp_framing_case *c = &response_framing_cases[i];
        parsed_resp p;
        size_t len = strlen(c->msg);
        cr_assert_eq(parse_resp(c->msg, len, &p), (int)len, "case %zu does not parse", i);
        weir_h1_framing f;
        weir_str method = {c->method, strlen(c->method)};
        int r = weir_h1_response_framing(&p.resp, method, &f);
        cr_assert_eq(r, c->ret, "case %zu (%s): got %d (%s)", i, c->msg, r, weir_h1_strerror(r));
        if (r != WEIR_OK)
            continue;
        cr_assert_eq(f.kind, c->kind, "case %zu kind %d", i, f.kind);
        if (f.kind == WEIR_H1_BODY_LENGTH)
            cr_assert_eq(f.content_length, c->cl, "case %zu length", i);
        cr_assert_eq(f.keep_alive, c->keep_alive, "case %zu keep_alive", i);
        cr_assert_eq(f.upgrade, c->upgrade, "case %zu upgrade", i);
        cr_assert_eq(f.expect_continue, false);
    }
}

/* ---- helpers ---------------------------------------------------------- */

Test(h1_helpers, list_has_token)
{
    cr_assert(weir_h1_list_has_token(WEIR_STR("close"), "close"));
    cr_assert(weir_h1_list_has_token(WEIR_STR("Keep-Alive"), "keep-alive"));
    cr_assert(weir_h1_list_has_token(WEIR_STR("a, b ,\tUpgrade\t"), "upgrade"));
    cr_assert(weir_h1_list_has_token(WEIR_STR(",,close,"), "close"));
    cr_assert_not(weir_h1_list_has_token(WEIR_STR("closed"), "close"));
    cr_assert_not(weir_h1_list_has_token(WEIR_STR("clos"), "close"));
    cr_assert_not(weir_h1_list_has_token(WEIR_STR("a b close"), "close"));
    cr_assert_not(weir_h1_list_has_token(WEIR_STR(""), "close"));
    cr_assert_not(weir_h1_list_has_token(WEIR_STR_NULL, "close"));
}

Test(h1_helpers, name_is)
{
    cr_assert(weir_h1_name_is(WEIR_STR("Content-Length"), "content-length"));
    cr_assert(weir_h1_name_is(WEIR_STR("HOST"), "host"));
    cr_assert_not(weir_h1_name_is(WEIR_STR("Hos"), "host"));
    cr_assert_not(weir_h1_name_is(WEIR_STR("Hostx"), "host"));
    cr_assert_not(weir_h1_name_is(WEIR_STR("H0st"), "host"));
    cr_assert(weir_h1_name_is(WEIR_STR_NULL, ""));
}

Test(h1_helpers, strerror_covers_every_code)
{
    static const int codes[] = {
        WEIR_H1_E_SYNTAX,
        WEIR_H1_E_METHOD,
        WEIR_H1_E_TARGET,
        WEIR_H1_E_VERSION,
        WEIR_H1_E_STATUS,
        WEIR_H1_E_BARE_CR,
        WEIR_H1_E_NUL,
        WEIR_H1_E_HEADER_NAME,
        WEIR_H1_E_WS_BEFORE_COLON,
        WEIR_H1_E_OBS_FOLD,
        WEIR_H1_E_HEADER_VALUE,
        WEIR_H1_E_TOO_MANY_HEADERS,
        WEIR_H1_E_CL_AND_TE,
        WEIR_H1_E_CL_INVALID,
        WEIR_H1_E_CL_MULTIPLE,
        WEIR_H1_E_TE_NOT_CHUNKED,
        WEIR_H1_E_TE_HTTP10,
        WEIR_CHUNK_E_SIZE,
        WEIR_CHUNK_E_EXT,
        WEIR_CHUNK_E_CRLF,
        WEIR_CHUNK_E_TRAILER,
        WEIR_H1_INCOMPLETE,
    };
    const char *unknown = weir_h1_strerror(-12345);
    size_t n = sizeof(codes) / sizeof(codes[0]);
    for (size_t i = 0; i < n; i++) {
        const char *s = weir_h1_strerror(codes[i]);
        cr_assert_not_null(s);
        cr_assert_str_neq(s, unknown, "code %d has no description", codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(s, weir_h1_strerror(codes[j]));
    }
    cr_assert_str_neq(weir_h1_strerror(42), unknown);
}

/* Field values are scanned sixteen bytes at a time, names four: every byte
 * value at every position of a long value and a long name must give the
 * same answer as the byte-at-a-time rules. */
static int parse_with(const char *pre, const char *field, const char *post, parsed_req *p)
{
    char m[256];
    size_t a = strlen(pre), f = 40, c = strlen(post);
    memcpy(m, pre, a);
    memcpy(m + a, field, f);
    memcpy(m + a + f, post, c);
    return parse_req(m, a + f + c, p);
}

Test(h1_request, every_byte_at_every_position)
{
    static const char tchars[] = "!#$%&'*+-.^_`|~";
    for (int pos = 0; pos < 40; pos++) {
        for (int b = 0; b < 256; b++) {
            if (b == '\n')
                continue; /* a new line starts: other rules */
            char field[40];
            parsed_req p;
            memset(field, 'v', sizeof(field));
            field[pos] = (char)b;
            bool ws = b == ' ' || b == '\t';
            bool value_ok = b == '\t' || (b >= 0x20 && b != 0x7f);
            int r = parse_with("GET / HTTP/1.1\r\nX-V: ", field, "\r\nHost: a\r\n\r\n", &p);
            cr_assert_eq(r > 0, value_ok, "value byte 0x%02x at %d: %d", b, pos, r);
            if (r > 0) {
                cr_assert_eq(p.req.n_headers, 2);
                size_t want = ws && (pos == 0 || pos == 39) ? 39 : 40; /* OWS is not value */
                cr_assert_eq(p.req.headers[0].value.len, want, "0x%02x at %d", b, pos);
            }
            if (b == ':')
                continue;
            memset(field, 'n', sizeof(field));
            field[pos] = (char)b;
            bool name_ok = (b >= '0' && b <= '9') || (b >= 'a' && b <= 'z') ||
                           (b >= 'A' && b <= 'Z') || (b && strchr(tchars, b));
            r = parse_with("GET / HTTP/1.1\r\n", field, ": v\r\nHost: a\r\n\r\n", &p);
            cr_assert_eq(r > 0, name_ok, "name byte 0x%02x at %d: %d", b, pos, r);
            if (r > 0)
                cr_assert_eq(p.req.headers[0].name.len, 40);
        }
    }
}
