/*
 * test_acme_answer.c - an ACME server's answers read from their bytes
 * (src/app/acme/answer.c): the directory with and without ARI, orders
 * whose authorizations are not strings, a token that is not base64url,
 * problem kinds, Retry-After forms and the RFC 3339 times of ARI.
 */
#include <criterion/criterion.h>
#include <string.h>

#include "app/acme/answer.h"
#include "app/acme/client.h"

#define S(x) x, strlen(x)

Test(acme_answer, directory)
{
    weir_acme_dir d;
    cr_assert_eq(weir__acme_parse_directory(S("{\"newNonce\":\"n\",\"newAccount\":\"a\","
                                              "\"newOrder\":\"o\"}"),
                                            &d),
                 0);
    cr_assert_str_eq(d.new_order, "o");
    cr_assert_null(d.renewal_info);
    weir__acme_dir_free(&d);
    cr_assert_eq(weir__acme_parse_directory(S("{\"newNonce\":\"n\",\"newAccount\":\"a\","
                                              "\"newOrder\":\"o\",\"renewalInfo\":\"r\"}"),
                                            &d),
                 0);
    cr_assert_str_eq(d.renewal_info, "r");
    weir__acme_dir_free(&d);
    /* One missing, one not a string, not an object, not JSON. */
    const char *bad[] = {"{\"newNonce\":\"n\",\"newAccount\":\"a\"}",
                         "{\"newNonce\":\"n\",\"newAccount\":\"a\",\"newOrder\":1}",
                         "[\"newNonce\"]", "<html>", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(weir__acme_parse_directory(S(bad[i]), &d), -1, "%s", bad[i]);
        cr_assert_null(d.root);
    }
}

Test(acme_answer, order_authorizations)
{
    weir_acme_order_doc o;
    bool bad;
    cr_assert_eq(weir__acme_parse_order(S("{\"status\":\"pending\",\"finalize\":\"f\","
                                          "\"authorizations\":[\"u1\",\"u2\"]}"),
                                        &o, &bad),
                 0);
    cr_assert(!bad);
    cr_assert_eq(o.n_authz, 2);
    cr_assert_str_eq(o.authz[1], "u2");
    cr_assert_str_eq(o.finalize, "f");
    cr_assert_null(o.certificate);
    weir__acme_order_free(&o);
    cr_assert_eq(weir__acme_parse_order(S("{\"authorizations\":[\"u1\",7,null]}"), &o, &bad), 0);
    cr_assert(bad);
    cr_assert_eq(o.n_authz, 1);
    weir__acme_order_free(&o);
    cr_assert_eq(weir__acme_parse_order(S("{\"authorizations\":\"u1\"}"), &o, &bad), 0);
    cr_assert(bad);
    cr_assert_eq(o.n_authz, 0);
    weir__acme_order_free(&o);
    cr_assert_eq(weir__acme_parse_order(S("null"), &o, &bad), -1);
}

Test(acme_answer, authorization_challenges)
{
    weir_acme_authz z;
    const char *doc = "{\"status\":\"pending\",\"identifier\":{\"value\":\"a.test\"},"
                      "\"challenges\":[{\"type\":\"dns-01\",\"url\":\"d\",\"token\":\"../x\"},"
                      "{\"type\":\"http-01\",\"url\":\"h\",\"token\":\"Ab-_0\"},"
                      "{\"type\":\"http-01\",\"url\":\"h2\",\"token\":\"zz\"}]}";
    cr_assert_eq(weir__acme_parse_authz(S(doc), "http-01", &z), 0);
    cr_assert_str_eq(z.domain, "a.test");
    cr_assert_str_eq(z.token, "Ab-_0");
    cr_assert_str_eq(z.url, "h"); /* the first of its type */
    weir__acme_authz_free(&z);
    /* A token that could walk a path is not used. */
    cr_assert_eq(weir__acme_parse_authz(S(doc), "dns-01", &z), 0);
    cr_assert_null(z.token);
    weir__acme_authz_free(&z);
    cr_assert_eq(weir__acme_parse_authz(S(doc), "tls-alpn-01", &z), 0);
    cr_assert_null(z.url);
    weir__acme_authz_free(&z);
    /* A token without its URL, an empty token. */
    cr_assert_eq(weir__acme_parse_authz(S("{\"challenges\":[{\"type\":\"http-01\","
                                          "\"token\":\"ok\"},{\"type\":\"dns-01\",\"url\":"
                                          "\"u\",\"token\":\"\"}]}"),
                                        "http-01", &z),
                 0);
    cr_assert_null(z.token);
    weir__acme_authz_free(&z);
    cr_assert_eq(weir__acme_parse_authz(S("{\"challenges\":[{\"type\":\"dns-01\",\"url\":"
                                          "\"u\",\"token\":\"\"}]}"),
                                        "dns-01", &z),
                 0);
    cr_assert_null(z.token);
    weir__acme_authz_free(&z);
    /* The reason of a failed one. */
    cr_assert_eq(weir__acme_parse_authz(S("{\"status\":\"invalid\",\"challenges\":[{\"type\":"
                                          "\"http-01\",\"error\":{\"detail\":\"refused\"}}]}"),
                                        "http-01", &z),
                 0);
    cr_assert_str_eq(z.why, "refused");
    weir__acme_authz_free(&z);
}

Test(acme_answer, problems)
{
    char type[100], detail[100];
    cr_assert_eq(weir__acme_problem_kind(429,
                                         S("{\"type\":\"urn:ietf:params:acme:error:rateLimited\"}"),
                                         type, sizeof(type), detail, sizeof(detail)),
                 WEIR_ACME_RATE_LIMITED);
    cr_assert_str_eq(type, "urn:ietf:params:acme:error:rateLimited");
    cr_assert_str_eq(detail, "");
    /* Only that exact type. */
    cr_assert_eq(weir__acme_problem_kind(
                     400, S("{\"type\":\"urn:x:rateLimited\",\"detail\":\"a\\nb\\u0001c\"}"), type,
                     sizeof(type), detail, sizeof(detail)),
                 WEIR_ACME_ERR);
    cr_assert_str_eq(detail, "a?b?c"); /* one line */
    cr_assert_eq(weir__acme_problem_kind(503, S("{}"), type, sizeof(type), detail, sizeof(detail)),
                 WEIR_ACME_UNREACHABLE);
    cr_assert_eq(
        weir__acme_problem_kind(404, S("not found"), type, sizeof(type), detail, sizeof(detail)),
        WEIR_ACME_UNREACHABLE);
    cr_assert(
        weir__acme_is_bad_nonce(400, S("{\"type\":\"urn:ietf:params:acme:error:badNonce\"}")));
    cr_assert(
        !weir__acme_is_bad_nonce(403, S("{\"type\":\"urn:ietf:params:acme:error:badNonce\"}")));
    cr_assert(
        !weir__acme_is_bad_nonce(400, S("{\"detail\":\"urn:ietf:params:acme:error:badNonce\"}")));
}

Test(acme_answer, retry_after)
{
    cr_assert_eq(weir__acme_retry_after(S("120")), 120);
    cr_assert_eq(weir__acme_retry_after(S("0")), 0);
    cr_assert_eq(weir__acme_retry_after(S("Wed, 21 Oct 2026 07:28:00 GMT")), 1);
    cr_assert_eq(weir__acme_retry_after(S("")), 1);
    cr_assert_eq(weir__acme_retry_after(S("-5")), 1);
    cr_assert_eq(weir__acme_retry_after(S("12x")), 1);
    cr_assert_eq(weir__acme_retry_after(S("999999999999999999999999999")), 86400);
}

Test(acme_answer, rfc3339_and_window)
{
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T21:00:00Z"), 1796590800);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T21:00:00.5Z"), 1796590800);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T22:30:00+01:30"), 1796590800);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T16:00:00-05:00"), 1796590800);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T21:00:00"), 0);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T21:00:00+0x:00"), 0);
    cr_assert_eq(weir__acme_rfc3339("2026-12-06T21:00:00+01300"), 0);
    cr_assert_eq(weir__acme_rfc3339(NULL), 0);
    int64_t s, e;
    cr_assert_eq(weir__acme_parse_window(S("{\"suggestedWindow\":{\"start\":"
                                           "\"2026-12-06T21:00:00Z\",\"end\":"
                                           "\"2026-12-06T22:00:00Z\"}}"),
                                         &s, &e),
                 0);
    cr_assert_eq(e - s, 3600);
    cr_assert_eq(weir__acme_parse_window(S("{\"suggestedWindow\":{\"start\":"
                                           "\"2026-12-06T22:00:00Z\",\"end\":"
                                           "\"2026-12-06T21:00:00Z\"}}"),
                                         &s, &e),
                 -1);
    cr_assert_eq(weir__acme_parse_window(S("{\"suggestedWindow\":{\"start\":"
                                           "\"2026-12-06T22:00:00Z\"}}"),
                                         &s, &e),
                 -1);
}
