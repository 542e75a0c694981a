/*
 * acme_answer_fuzz.c - libFuzzer target for what an ACME server answers
 * (src/app/acme/answer.c): the same bytes read as a directory, an order,
 * an authorization, a problem document, an ARI window, a Retry-After
 * value and an RFC 3339 time. Invariants: a directory has its three URLs;
 * an order's authorizations are strings and no more than its array; an
 * authorization's token is base64url and comes with its URL; a problem's
 * type and detail are terminated one-line text; a window ends after it
 * starts; Retry-After is within [0, a day].
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/acme/answer.h"
#include "app/acme/client.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void one_line(const char *s, size_t cap)
{
    size_t n = strnlen(s, cap);
    CHECK(n < cap);
    for (size_t i = 0; i < n; i++)
        CHECK((unsigned char)s[i] >= 0x20 && s[i] != 0x7f);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;

    weir_acme_dir d;
    if (weir__acme_parse_directory(p, size, &d) == 0) {
        CHECK(d.new_nonce && d.new_account && d.new_order);
        weir__acme_dir_free(&d);
    } else {
        CHECK(!d.root && !d.new_order);
    }

    void *doc = NULL;
    const char *status = NULL;
    int rc = weir__acme_parse_status(p, size, &doc, &status);
    CHECK(rc == 0 ? doc != NULL : doc == NULL && status == NULL);
    weir__acme_doc_free(doc);

    weir_acme_order_doc o;
    bool bad = false;
    if (weir__acme_parse_order(p, size, &o, &bad) == 0) {
        for (size_t i = 0; i < o.n_authz; i++)
            CHECK(o.authz[i] != NULL);
        CHECK(o.authz[o.n_authz] == NULL);
        weir__acme_order_free(&o);
    }

    static const char *const types[] = {"http-01", "tls-alpn-01", "dns-01"};
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        weir_acme_authz z;
        if (weir__acme_parse_authz(p, size, types[t], &z) != 0)
            continue;
        if (z.token) {
            CHECK(z.url != NULL && *z.token);
            CHECK(strspn(z.token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-_") == strlen(z.token));
        }
        weir__acme_authz_free(&z);
    }

    char type[64], detail[128];
    int kind = weir__acme_problem_kind(size ? data[0] * 2 : 400, p, size, type, sizeof(type),
                                       detail, sizeof(detail));
    CHECK(kind == WEIR_ACME_ERR || kind == WEIR_ACME_UNREACHABLE || kind == WEIR_ACME_RATE_LIMITED);
    one_line(type, sizeof(type));
    one_line(detail, sizeof(detail));
    (void)weir__acme_is_bad_nonce(400, p, size);

    int64_t start, end;
    if (weir__acme_parse_window(p, size, &start, &end) == 0)
        CHECK(start != 0 && end >= start);

    int64_t ra = weir__acme_retry_after(p, size);
    CHECK(ra >= 0 && ra <= 86400);

    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        (void)weir__acme_rfc3339(s);
        free(s);
    }
    return 0;
}
