/*
 * jws.c - keys, JWK, JWS and CSRs for the ACME client (jws.h).
 */
#include "app/acme/jws.h"

#include "app/admin/toml_edit.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int weir__acme_key_type(const char *name, weir_acme_key_type *out)
{
    static const struct {
        const char *name;
        weir_acme_key_type type;
    } types[] = {{"ec256", WEIR_ACME_EC256},
                 {"ec384", WEIR_ACME_EC384},
                 {"rsa2048", WEIR_ACME_RSA2048},
                 {"rsa4096", WEIR_ACME_RSA4096}};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (strcmp(name, types[i].name) == 0) {
            *out = types[i].type;
            return 0;
        }
    }
    return -1;
}

EVP_PKEY *weir__acme_key_new(weir_acme_key_type type)
{
    switch (type) {
    case WEIR_ACME_EC256:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    case WEIR_ACME_EC384:
        return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    case WEIR_ACME_RSA2048:
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
    case WEIR_ACME_RSA4096:
        return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
    }
    return NULL;
}

static void ssl_error(char *err, size_t err_len, const char *what, const char *path)
{
    unsigned long e = ERR_get_error();
    char r[256] = "";
    if (e)
        ERR_error_string_n(e, r, sizeof(r));
    ERR_clear_error();
    snprintf(err, err_len, "%s %s: %s", what, path, e ? r : strerror(errno ? errno : EINVAL));
}

EVP_PKEY *weir__acme_key_load_or_create(const char *path, weir_acme_key_type type, char *err,
                                        size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (f) {
        EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
        if (!k)
            ssl_error(err, err_len, "cannot read the key in", path);
        return k;
    }
    if (errno != ENOENT) {
        snprintf(err, err_len, "cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    EVP_PKEY *k = weir__acme_key_new(type);
    if (!k) {
        ssl_error(err, err_len, "cannot make a key for", path);
        return NULL;
    }
    char *pem = weir__acme_key_pem(k);
    if (!pem || weir__admin_write_file(path, pem, strlen(pem), 0600) != 0) {
        snprintf(err, err_len, "cannot write %s: %s", path, pem ? strerror(errno) : "no memory");
        if (pem)
            OPENSSL_cleanse(pem, strlen(pem));
        free(pem);
        EVP_PKEY_free(k);
        return NULL;
    }
    OPENSSL_cleanse(pem, strlen(pem));
    free(pem);
    return k;
}

char *weir__acme_key_pem(EVP_PKEY *k)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p = NULL;
    if (b && PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) == 1) {
        long n = BIO_get_mem_data(b, &p);
        out = n > 0 ? strndup(p, (size_t)n) : NULL;
    }
    BIO_free(b);
    return out;
}

char *weir__b64url(const void *p, size_t len)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *s = p;
    char *out = malloc(len / 3 * 4 + 5);
    if (!out)
        return NULL;
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
        out[o++] = a[v & 63];
    }
    if (len - i == 1) {
        unsigned v = (unsigned)s[i] << 16;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
    } else if (len - i == 2) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8;
        out[o++] = a[v >> 18];
        out[o++] = a[(v >> 12) & 63];
        out[o++] = a[(v >> 6) & 63];
    }
    out[o] = '\0';
    return out;
}

/* A big-number parameter of key as base64url, padded to pad bytes (0: its
 * own length). */
static char *bn_param(EVP_PKEY *key, const char *name, int pad)
{
    BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(key, name, &bn))
        return NULL;
    int n = pad ? pad : BN_num_bytes(bn);
    unsigned char *buf = malloc((size_t)n + 1);
    char *out = NULL;
    if (buf && BN_bn2binpad(bn, buf, n) == n)
        out = weir__b64url(buf, (size_t)n);
    free(buf);
    BN_free(bn);
    return out;
}

/* The curve's name and its coordinate size, or NULL for an RSA key. */
static const char *ec_curve(EVP_PKEY *key, int *size)
{
    if (!EVP_PKEY_is_a(key, "EC"))
        return NULL;
    char group[64] = "";
    EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), NULL);
    if (strcmp(group, "prime256v1") == 0 || strcmp(group, "P-256") == 0) {
        *size = 32;
        return "P-256";
    }
    if (strcmp(group, "secp384r1") == 0 || strcmp(group, "P-384") == 0) {
        *size = 48;
        return "P-384";
    }
    return NULL;
}

char *weir__acme_jwk(EVP_PKEY *key)
{
    char *out = NULL;
    int size = 0;
    const char *crv = ec_curve(key, &size);
    if (crv) {
        char *x = bn_param(key, OSSL_PKEY_PARAM_EC_PUB_X, size);
        char *y = bn_param(key, OSSL_PKEY_PARAM_EC_PUB_Y, size);
        if (x && y &&
            asprintf(&out, "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x, y) <
                0)
            out = NULL;
        free(x);
        free(y);
    } else if (EVP_PKEY_is_a(key, "RSA")) {
        char *n = bn_param(key, OSSL_PKEY_PARAM_RSA_N, 0);
        char *e = bn_param(key, OSSL_PKEY_PARAM_RSA_E, 0);
        if (n && e && asprintf(&out, "{\"e\":\"%s\",\"kty\":\"RSA\",\"n\":\"%s\"}", e, n) < 0)
            out = NULL;
        free(n);
        free(e);
    }
    return out;
}

char *weir__acme_thumbprint(EVP_PKEY *key)
{
    char *jwk = weir__acme_jwk(key);
    if (!jwk)
        return NULL;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    char *out = NULL;
    if (EVP_Digest(jwk, strlen(jwk), md, &n, EVP_sha256(), NULL) == 1)
        out = weir__b64url(md, n);
    free(jwk);
    return out;
}

char *weir__acme_key_authorization(const char *token, EVP_PKEY *account_key)
{
    char *tp = weir__acme_thumbprint(account_key);
    char *out = NULL;
    if (tp && asprintf(&out, "%s.%s", token, tp) < 0)
        out = NULL;
    free(tp);
    return out;
}

/* The signature of input under key: raw r||s for EC (RFC 7518 3.4),
 * PKCS#1 v1.5 for RSA. malloc'd, *len. */
static unsigned char *sign(EVP_PKEY *key, const char *input, size_t *len, const char **alg)
{
    int size = 0;
    bool ec = ec_curve(key, &size) != NULL;
    const EVP_MD *md = ec && size == 48 ? EVP_sha384() : EVP_sha256();
    *alg = !ec ? "RS256" : size == 48 ? "ES384" : "ES256";
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t n = 0;
    unsigned char *der = NULL, *out = NULL;
    if (!ctx || EVP_DigestSignInit(ctx, NULL, md, NULL, key) != 1 ||
        EVP_DigestSign(ctx, NULL, &n, (const unsigned char *)input, strlen(input)) != 1 ||
        !(der = malloc(n)) ||
        EVP_DigestSign(ctx, der, &n, (const unsigned char *)input, strlen(input)) != 1)
        goto out;
    if (!ec) {
        out = der;
        der = NULL;
        *len = n;
        goto out;
    }
    const unsigned char *p = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &p, (long)n);
    out = sig ? malloc((size_t)size * 2) : NULL;
    if (out && (BN_bn2binpad(ECDSA_SIG_get0_r(sig), out, size) != size ||
                BN_bn2binpad(ECDSA_SIG_get0_s(sig), out + size, size) != size)) {
        free(out);
        out = NULL;
    }
    ECDSA_SIG_free(sig);
    *len = (size_t)size * 2;
out:
    free(der);
    EVP_MD_CTX_free(ctx);
    return out;
}

char *weir__acme_jws(EVP_PKEY *key, const char *kid, const char *nonce, const char *url,
                     const char *payload)
{
    int size = 0;
    const char *alg = ec_curve(key, &size) ? (size == 48 ? "ES384" : "ES256") : "RS256";
    json_t *hdr = json_pack("{s:s, s:s, s:s}", "alg", alg, "nonce", nonce, "url", url);
    char *jwk = kid ? NULL : weir__acme_jwk(key);
    json_error_t je;
    if (hdr && kid)
        json_object_set_new(hdr, "kid", json_string(kid));
    else if (hdr && jwk)
        json_object_set_new(hdr, "jwk", json_loads(jwk, 0, &je));
    free(jwk);
    char *htext = hdr ? json_dumps(hdr, JSON_COMPACT) : NULL;
    json_decref(hdr);
    char *h64 = htext ? weir__b64url(htext, strlen(htext)) : NULL;
    char *p64 = weir__b64url(payload, strlen(payload));
    free(htext);
    char *input = NULL, *out = NULL;
    if (h64 && p64 && asprintf(&input, "%s.%s", h64, p64) < 0)
        input = NULL;
    size_t slen = 0;
    unsigned char *sig = input ? sign(key, input, &slen, &alg) : NULL;
    char *s64 = sig ? weir__b64url(sig, slen) : NULL;
    if (s64) {
        json_t *j =
            json_pack("{s:s, s:s, s:s}", "protected", h64, "payload", p64, "signature", s64);
        out = j ? json_dumps(j, JSON_COMPACT) : NULL;
        json_decref(j);
    }
    free(h64);
    free(p64);
    free(input);
    free(sig);
    free(s64);
    return out;
}

char *weir__acme_csr(EVP_PKEY *key, const char *const *domains, size_t n)
{
    if (n == 0)
        return NULL;
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    char *san = NULL, *out = NULL;
    unsigned char *der = NULL;
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(domains[i]) + 5;
    san = malloc(cap);
    if (!req || !name || !exts || !san)
        goto out;
    san[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(san, i ? ",DNS:" : "DNS:");
        strcat(san, domains[i]);
    }
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
    if (!ext || !sk_X509_EXTENSION_push(exts, ext)) {
        X509_EXTENSION_free(ext);
        goto out;
    }
    if (X509_REQ_set_version(req, 0) != 1 ||
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)domains[0], -1,
                                   -1, 0) != 1 ||
        X509_REQ_set_subject_name(req, name) != 1 || X509_REQ_set_pubkey(req, key) != 1 ||
        X509_REQ_add_extensions(req, exts) != 1 || X509_REQ_sign(req, key, EVP_sha256()) <= 0)
        goto out;
    int len = i2d_X509_REQ(req, &der);
    if (len > 0)
        out = weir__b64url(der, (size_t)len);
out:
    OPENSSL_free(der);
    free(san);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(name);
    X509_REQ_free(req);
    ERR_clear_error();
    return out;
}

/* The text a memory BIO holds, malloc'd. */
static char *bio_text(BIO *b)
{
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *out = n > 0 ? malloc((size_t)n + 1) : NULL;
    if (out) {
        memcpy(out, p, (size_t)n);
        out[n] = '\0';
    }
    return out;
}

/* The acmeIdentifier extension (RFC 8737 3): critical, an OCTET STRING
 * holding the DER OCTET STRING of SHA-256(key authorization). */
static X509_EXTENSION *acme_identifier(const char *key_auth)
{
    unsigned char der[34] = {0x04, 0x20};
    unsigned int n = 0;
    if (EVP_Digest(key_auth, strlen(key_auth), der + 2, &n, EVP_sha256(), NULL) != 1 || n != 32)
        return NULL;
    ASN1_OBJECT *obj = OBJ_txt2obj("1.3.6.1.5.5.7.1.31", 1);
    ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    if (obj && v && ASN1_OCTET_STRING_set(v, der, sizeof(der)) == 1)
        ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 1, v);
    ASN1_OBJECT_free(obj);
    ASN1_OCTET_STRING_free(v);
    return ext;
}

/* A self-signed certificate for domains, with the acmeIdentifier of
 * key_auth when it is not NULL. */
static bool self_signed(const char *const *domains, size_t n, const char *key_auth, char **cert_pem,
                        char **key_pem)
{
    *cert_pem = *key_pem = NULL;
    EVP_PKEY *key = n ? weir__acme_key_new(WEIR_ACME_EC256) : NULL;
    X509 *x = X509_new();
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    bool ok = false;
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(domains[i]) + 5;
    char *san = malloc(cap);
    if (!key || !x || !cb || !kb || !san)
        goto out;
    san[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        strcat(san, i ? ",DNS:" : "DNS:");
        strcat(san, domains[i]);
    }
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof(serial)) != 1)
        goto out;
    serial[0] &= 0x7f;
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    X509_NAME *name = X509_get_subject_name(x);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    X509_EXTENSION *ident = key_auth ? acme_identifier(key_auth) : NULL;
    ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) && X509_set_version(x, 2) == 1 &&
         X509_gmtime_adj(X509_getm_notBefore(x), -3600) &&
         X509_gmtime_adj(X509_getm_notAfter(x), 90L * 24 * 3600) &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)domains[0],
                                    -1, -1, 0) == 1 &&
         X509_set_issuer_name(x, name) == 1 && X509_set_pubkey(x, key) == 1 && ext &&
         X509_add_ext(x, ext, -1) == 1 &&
         (!key_auth || (ident && X509_add_ext(x, ident, -1) == 1)) &&
         X509_sign(x, key, EVP_sha256()) > 0 && PEM_write_bio_X509(cb, x) == 1 &&
         PEM_write_bio_PrivateKey(kb, key, NULL, NULL, 0, NULL, NULL) == 1;
    X509_EXTENSION_free(ext);
    X509_EXTENSION_free(ident);
    BN_free(bn);
    if (ok) {
        *cert_pem = bio_text(cb);
        *key_pem = bio_text(kb);
        ok = *cert_pem && *key_pem;
        if (!ok) {
            free(*cert_pem);
            free(*key_pem);
            *cert_pem = *key_pem = NULL;
        }
    }
out:
    free(san);
    BIO_free(cb);
    BIO_free(kb);
    X509_free(x);
    EVP_PKEY_free(key);
    ERR_clear_error();
    return ok;
}

int64_t weir__acme_cert_not_after(const char *path)
{
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    if (f)
        fclose(f);
    struct tm t;
    int64_t out = x && ASN1_TIME_to_tm(X509_get0_notAfter(x), &t) == 1 ? (int64_t)timegm(&t) : 0;
    X509_free(x);
    ERR_clear_error();
    return out;
}

bool weir__acme_placeholder(const char *const *domains, size_t n, char **cert_pem, char **key_pem)
{
    return self_signed(domains, n, NULL, cert_pem, key_pem);
}

bool weir__acme_alpn_cert(const char *domain, const char *key_auth, char **cert_pem, char **key_pem)
{
    return self_signed(&domain, 1, key_auth, cert_pem, key_pem);
}
