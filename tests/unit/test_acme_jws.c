/*
 * test_acme_jws.c - the ACME client's cryptography (src/app/acme/jws.c):
 * base64url, the RFC 7638 thumbprint of its example key, JWS signatures
 * checked by the jwt plugin's verifier for every key type, and CSRs.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

#include "app/acme/client.h"
#include "app/acme/jws.h"
#include "app/plugin/jwt_keys.h"

Test(acme_jws, base64url)
{
    const char *in[] = {"", "f", "fo", "foo", "foob", "\xfb\xff"};
    const char *want[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "-_8"};
    for (size_t i = 0; i < 6; i++) {
        char *s = weir__b64url(in[i], strlen(in[i]));
        cr_assert_str_eq(s, want[i]);
        free(s);
    }
}

static BIGNUM *bn_b64(const char *s)
{
    unsigned char buf[600];
    long n = weir__b64url_decode(s, strlen(s), buf, sizeof(buf));
    cr_assert_gt(n, 0);
    return BN_bin2bn(buf, (int)n, NULL);
}

Test(acme_jws, rfc7638_thumbprint)
{
    BIGNUM *n = bn_b64("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPF"
                       "FxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lq"
                       "t7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
                       "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHa"
                       "Q-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw");
    BIGNUM *e = bn_b64("AQAB");
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_N, n);
    OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_RSA_E, e);
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(b);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *key = NULL;
    cr_assert_eq(EVP_PKEY_fromdata_init(ctx), 1);
    cr_assert_eq(EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params), 1);
    char *tp = weir__acme_thumbprint(key);
    cr_assert_str_eq(tp, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    char *ka = weir__acme_key_authorization("tok", key);
    cr_assert_str_eq(ka, "tok.NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    free(ka);
    free(tp);
    EVP_PKEY_free(key);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(b);
    BN_free(n);
    BN_free(e);
}

static json_t *decode_part(const char *b64)
{
    unsigned char buf[8192];
    long n = weir__b64url_decode(b64, strlen(b64), buf, sizeof(buf));
    cr_assert_geq(n, 0);
    json_error_t je;
    return n ? json_loadb((const char *)buf, (size_t)n, 0, &je) : NULL;
}

static void check_jws(weir_acme_key_type type, const char *alg_name, int alg)
{
    EVP_PKEY *key = weir__acme_key_new(type);
    cr_assert_not_null(key);
    for (int with_kid = 0; with_kid < 2; with_kid++) {
        char *jws = weir__acme_jws(key, with_kid ? "https://ca/acct/1" : NULL, "n0nce",
                                   "https://ca/new-order", with_kid ? "{\"a\":1}" : "");
        cr_assert_not_null(jws);
        json_error_t je;
        json_t *j = json_loads(jws, 0, &je);
        const char *prot = json_string_value(json_object_get(j, "protected"));
        const char *pay = json_string_value(json_object_get(j, "payload"));
        const char *sig = json_string_value(json_object_get(j, "signature"));
        cr_assert(prot && pay && sig);
        json_t *h = decode_part(prot);
        cr_assert_str_eq(json_string_value(json_object_get(h, "alg")), alg_name);
        cr_assert_str_eq(json_string_value(json_object_get(h, "nonce")), "n0nce");
        cr_assert_str_eq(json_string_value(json_object_get(h, "url")), "https://ca/new-order");
        if (with_kid) {
            cr_assert_str_eq(json_string_value(json_object_get(h, "kid")), "https://ca/acct/1");
            cr_assert_null(json_object_get(h, "jwk"));
            json_t *p = decode_part(pay);
            cr_assert_eq(json_integer_value(json_object_get(p, "a")), 1);
            json_decref(p);
        } else {
            cr_assert(json_is_object(json_object_get(h, "jwk")));
            cr_assert_null(json_object_get(h, "kid"));
            cr_assert_str_eq(pay, "");
        }
        json_decref(h);
        /* The signature verifies, by the jwt plugin's independent check. */
        char input[8192];
        snprintf(input, sizeof(input), "%s.%s", prot, pay);
        unsigned char s[1024];
        long sl = weir__b64url_decode(sig, strlen(sig), s, sizeof(s));
        cr_assert_gt(sl, 0);
        jwt_key k = {.algs = JWT_BIT(alg), .pkey = key};
        cr_assert(weir__jwt_verify(&k, alg, input, strlen(input), s, (size_t)sl));
        s[0] ^= 1;
        cr_assert_not(weir__jwt_verify(&k, alg, input, strlen(input), s, (size_t)sl));
        json_decref(j);
        free(jws);
    }
    EVP_PKEY_free(key);
}

Test(acme_jws, signatures_of_every_key_type)
{
    check_jws(WEIR_ACME_EC256, "ES256", JWT_ES256);
    check_jws(WEIR_ACME_EC384, "ES384", JWT_ES384);
    check_jws(WEIR_ACME_RSA2048, "RS256", JWT_RS256);
    weir_acme_key_type t;
    cr_assert_eq(weir__acme_key_type("rsa4096", &t), 0);
    cr_assert_eq(t, WEIR_ACME_RSA4096);
    cr_assert_eq(weir__acme_key_type("dsa", &t), -1);
}

Test(acme_jws, csr_names_every_domain)
{
    EVP_PKEY *key = weir__acme_key_new(WEIR_ACME_EC256);
    const char *domains[] = {"a.example", "b.example"};
    char *csr = weir__acme_csr(key, domains, 2);
    cr_assert_not_null(csr);
    unsigned char der[4096];
    long n = weir__b64url_decode(csr, strlen(csr), der, sizeof(der));
    cr_assert_gt(n, 0);
    const unsigned char *p = der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, n);
    cr_assert_not_null(req);
    cr_assert_eq(X509_REQ_verify(req, key), 1);
    STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
    GENERAL_NAMES *names = NULL;
    for (int i = 0; i < sk_X509_EXTENSION_num(exts) && !names; i++) {
        X509_EXTENSION *e = sk_X509_EXTENSION_value(exts, i);
        if (OBJ_obj2nid(X509_EXTENSION_get_object(e)) == NID_subject_alt_name)
            names = X509V3_EXT_d2i(e);
    }
    cr_assert_not_null(names);
    cr_assert_eq(sk_GENERAL_NAME_num(names), 2);
    for (int i = 0; i < 2; i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        cr_assert_eq(g->type, GEN_DNS);
        cr_assert_str_eq((const char *)ASN1_STRING_get0_data(g->d.dNSName), domains[i]);
    }
    GENERAL_NAMES_free(names);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(req);
    free(csr);
    cr_assert_null(weir__acme_csr(key, domains, 0));
    EVP_PKEY_free(key);
}

/* RFC 9773 4.1's example: AKI 69:88:5B:...:D4, serial 00:87:65:43:21. */
Test(acme_jws, ari_certificate_identifier)
{
    EVP_PKEY *key = weir__acme_key_new(WEIR_ACME_EC256);
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    BN_hex2bn(&bn, "87654321");
    BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
    static const unsigned char kid[] = {0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3,
                                        0x7B, 0x84, 0x7B, 0xA0, 0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4};
    AUTHORITY_KEYID *akid = AUTHORITY_KEYID_new();
    akid->keyid = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING_set(akid->keyid, kid, sizeof(kid));
    X509_add1_ext_i2d(x, NID_authority_key_identifier, akid, 0, 0);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    cr_assert_gt(X509_sign(x, key, EVP_sha256()), 0);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *pem = strndup(p, (size_t)n);
    char *id = weir__acme_cert_id(pem);
    cr_assert_str_eq(id, "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
    free(id);
    free(pem);
    BIO_free(b);
    AUTHORITY_KEYID_free(akid);
    BN_free(bn);
    X509_free(x);
    EVP_PKEY_free(key);
}
