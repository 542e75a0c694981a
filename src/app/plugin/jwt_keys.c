/*
 * jwt_keys.c - JWT keys and signatures on OpenSSL 3 (see jwt_keys.h).
 *
 * Every check is OpenSSL's: HMAC compared with CRYPTO_memcmp, RSA PKCS #1
 * v1.5 and PSS (salt the hash's length, MGF1 with the same hash, RFC 7518
 * 3.5), ECDSA over the raw r || s of JWS turned into DER, Ed25519. A key
 * verifies only the algorithms of its type (and of its JWK "alg"), so an
 * RSA public key can never be taken for an HMAC secret.
 */
#include "app/plugin/jwt_keys.h"

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const alg_names[JWT_N_ALGS] = {
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
};

int weir__jwt_alg(const char *name, size_t len)
{
    for (int i = 0; i < JWT_N_ALGS; i++) {
        if (strlen(alg_names[i]) == len && memcmp(alg_names[i], name, len) == 0)
            return i;
    }
    return -1;
}

const char *weir__jwt_alg_name(int alg)
{
    return alg >= 0 && alg < JWT_N_ALGS ? alg_names[alg] : "?";
}

/* The digests, fetched once: an implicit fetch per request costs more
 * than hashing a token. */
static EVP_MD *mds[3];
static pthread_once_t mds_once = PTHREAD_ONCE_INIT;

static void fetch_mds(void)
{
    mds[0] = EVP_MD_fetch(NULL, "SHA256", NULL);
    mds[1] = EVP_MD_fetch(NULL, "SHA384", NULL);
    mds[2] = EVP_MD_fetch(NULL, "SHA512", NULL);
}

static const EVP_MD *md_of(int alg)
{
    pthread_once(&mds_once, fetch_mds);
    switch (alg) {
    case JWT_HS256:
    case JWT_RS256:
    case JWT_PS256:
    case JWT_ES256:
        return mds[0];
    case JWT_HS384:
    case JWT_RS384:
    case JWT_PS384:
    case JWT_ES384:
        return mds[1];
    case JWT_HS512:
    case JWT_RS512:
    case JWT_PS512:
        return mds[2];
    default:
        return NULL;
    }
}

/* ---- sets ---- */

jwt_keyset *weir__jwt_keyset_new(void)
{
    jwt_keyset *ks = calloc(1, sizeof(*ks));
    if (ks)
        atomic_init(&ks->refs, 1);
    return ks;
}

jwt_keyset *weir__jwt_keyset_ref(jwt_keyset *ks)
{
    if (ks)
        atomic_fetch_add_explicit(&ks->refs, 1, memory_order_relaxed);
    return ks;
}

void weir__jwt_keyset_unref(jwt_keyset *ks)
{
    if (!ks || atomic_fetch_sub_explicit(&ks->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < ks->n; i++) {
        free(ks->keys[i].kid);
        EVP_PKEY_free(ks->keys[i].pkey);
        if (ks->keys[i].secret)
            OPENSSL_cleanse(ks->keys[i].secret, ks->keys[i].secret_len);
        free(ks->keys[i].secret);
        for (int j = 0; j < 3; j++)
            EVP_MAC_CTX_free(ks->keys[i].hmac[j]);
    }
    free(ks->keys);
    free(ks);
}

static jwt_key *push(jwt_keyset *ks)
{
    if (ks->n == ks->cap) {
        size_t cap = ks->cap ? ks->cap * 2 : 4;
        jwt_key *nv = realloc(ks->keys, cap * sizeof(*nv));
        if (!nv)
            return NULL;
        ks->keys = nv;
        ks->cap = cap;
    }
    jwt_key *k = &ks->keys[ks->n];
    memset(k, 0, sizeof(*k));
    return k;
}

static EVP_MAC *hmac_mac;
static pthread_once_t hmac_once = PTHREAD_ONCE_INIT;

static void fetch_hmac(void)
{
    hmac_mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
}

/* k's HMAC contexts, keyed; false on failure. */
static bool hmac_contexts(jwt_key *k)
{
    static const char *const names[3] = {"SHA256", "SHA384", "SHA512"};
    pthread_once(&hmac_once, fetch_hmac);
    for (int i = 0; i < 3; i++) {
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)names[i], 0),
            OSSL_PARAM_construct_end()};
        k->hmac[i] = hmac_mac ? EVP_MAC_CTX_new(hmac_mac) : NULL;
        if (!k->hmac[i] || EVP_MAC_init(k->hmac[i], k->secret, k->secret_len, params) != 1)
            return false;
    }
    return true;
}

/* Takes secret (malloc'd) as an HMAC key of ks; false (secret freed) on
 * failure. */
static bool add_hmac(jwt_keyset *ks, unsigned char *secret, size_t len, uint32_t algs, char *kid)
{
    jwt_key *k = push(ks);
    if (k) {
        k->secret = secret;
        k->secret_len = len;
        k->algs = algs;
        k->kid = kid;
        if (hmac_contexts(k)) {
            ks->n++;
            return true;
        }
        for (int i = 0; i < 3; i++)
            EVP_MAC_CTX_free(k->hmac[i]);
    }
    OPENSSL_cleanse(secret, len);
    free(secret);
    free(kid);
    return false;
}

bool weir__jwt_add_secret(jwt_keyset *ks, const void *secret, size_t len)
{
    unsigned char *copy = malloc(len ? len : 1);
    if (!copy)
        return false;
    memcpy(copy, secret, len);
    return add_hmac(ks, copy, len, JWT_HMAC_ALGS, NULL);
}

/* The algorithms a public key may verify, or 0 (with why). */
static uint32_t algs_of(EVP_PKEY *pkey, const char **why)
{
    if (EVP_PKEY_is_a(pkey, "RSA")) {
        if (EVP_PKEY_get_bits(pkey) < 2048) {
            *why = "an RSA key of fewer than 2048 bits";
            return 0;
        }
        return JWT_RSA_ALGS;
    }
    if (EVP_PKEY_is_a(pkey, "ED25519"))
        return JWT_BIT(JWT_EDDSA);
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64] = "";
        size_t gl = 0;
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group), &gl);
        if (strcmp(group, "prime256v1") == 0)
            return JWT_BIT(JWT_ES256);
        if (strcmp(group, "secp384r1") == 0)
            return JWT_BIT(JWT_ES384);
        *why = "an EC key on a curve other than P-256 and P-384";
        return 0;
    }
    *why = "a key of a type JWT does not sign with";
    return 0;
}

bool weir__jwt_add_pem(jwt_keyset *ks, const char *path, char *err, size_t err_len)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, err_len, "cannot read %s", path);
        return false;
    }
    EVP_PKEY *pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    if (!pkey) {
        rewind(f);
        X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
        if (cert)
            pkey = X509_get_pubkey(cert);
        X509_free(cert);
    }
    fclose(f);
    if (!pkey) {
        snprintf(err, err_len, "%s holds no PEM public key or certificate", path);
        return false;
    }
    const char *why = NULL;
    uint32_t algs = algs_of(pkey, &why);
    jwt_key *k = algs ? push(ks) : NULL;
    if (!k) {
        snprintf(err, err_len, "%s: %s", path, why ? why : "out of memory");
        EVP_PKEY_free(pkey);
        return false;
    }
    k->pkey = pkey;
    k->algs = algs;
    ks->n++;
    return true;
}

/* ---- base64url ---- */

static int b64val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

long weir__b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 == 1)
        return -1;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -1;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    /* The bits left over must be zero: one token, one encoding. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -1;
    return (long)o;
}

/* A base64url member of a JWK, decoded into malloc'd memory; NULL if
 * absent or malformed. */
static unsigned char *member(json_t *jwk, const char *name, size_t *len)
{
    const char *s = json_string_value(json_object_get(jwk, name));
    if (!s)
        return NULL;
    size_t sl = strlen(s);
    unsigned char *out = malloc(sl + 1);
    long n = out ? weir__b64url_decode(s, sl, out, sl + 1) : -1;
    if (n <= 0) {
        free(out);
        return NULL;
    }
    *len = (size_t)n;
    return out;
}

static EVP_PKEY *from_params(const char *type, OSSL_PARAM_BLD *bld)
{
    OSSL_PARAM *params = bld ? OSSL_PARAM_BLD_to_param(bld) : NULL;
    EVP_PKEY_CTX *ctx = params ? EVP_PKEY_CTX_new_from_name(NULL, type, NULL) : NULL;
    EVP_PKEY *pkey = NULL;
    if (!ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

static EVP_PKEY *rsa_jwk(json_t *jwk)
{
    size_t nl = 0, el = 0;
    unsigned char *n = member(jwk, "n", &nl), *e = member(jwk, "e", &el);
    BIGNUM *bn = n ? BN_bin2bn(n, (int)nl, NULL) : NULL,
           *be = e ? BN_bin2bn(e, (int)el, NULL) : NULL;
    OSSL_PARAM_BLD *bld = bn && be ? OSSL_PARAM_BLD_new() : NULL;
    EVP_PKEY *pkey = NULL;
    if (bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn) &&
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, be))
        pkey = from_params("RSA", bld);
    OSSL_PARAM_BLD_free(bld);
    BN_free(bn);
    BN_free(be);
    free(n);
    free(e);
    return pkey;
}

static EVP_PKEY *ec_jwk(json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    const char *group = NULL;
    size_t want = 0;
    if (crv && strcmp(crv, "P-256") == 0) {
        group = "prime256v1";
        want = 32;
    } else if (crv && strcmp(crv, "P-384") == 0) {
        group = "secp384r1";
        want = 48;
    }
    if (!group)
        return NULL;
    size_t xl = 0, yl = 0;
    unsigned char *x = member(jwk, "x", &xl), *y = member(jwk, "y", &yl);
    unsigned char point[1 + 2 * 48];
    EVP_PKEY *pkey = NULL;
    if (x && y && xl == want && yl == want) {
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, x, want);
        memcpy(point + 1 + want, y, want);
        OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
        if (bld && OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) &&
            OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, 1 + 2 * want))
            pkey = from_params("EC", bld);
        OSSL_PARAM_BLD_free(bld);
    }
    free(x);
    free(y);
    return pkey;
}

static EVP_PKEY *okp_jwk(json_t *jwk)
{
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    size_t xl = 0;
    unsigned char *x = crv && strcmp(crv, "Ed25519") == 0 ? member(jwk, "x", &xl) : NULL;
    EVP_PKEY *pkey =
        x && xl == 32 ? EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, x, xl) : NULL;
    free(x);
    return pkey;
}

/* Adds one JWK; false if skipped. */
static bool add_jwk(jwt_keyset *ks, json_t *jwk)
{
    const char *kty = json_string_value(json_object_get(jwk, "kty"));
    const char *use = json_string_value(json_object_get(jwk, "use"));
    const char *alg = json_string_value(json_object_get(jwk, "alg"));
    const char *kid = json_string_value(json_object_get(jwk, "kid"));
    if (!kty || (use && strcmp(use, "sig") != 0))
        return false;
    int only = alg ? weir__jwt_alg(alg, strlen(alg)) : -1;
    if (alg && only < 0)
        return false; /* an algorithm weir does not verify with */
    EVP_PKEY *pkey = NULL;
    unsigned char *secret = NULL;
    size_t secret_len = 0;
    uint32_t algs = 0;
    const char *why = NULL;
    if (strcmp(kty, "RSA") == 0)
        pkey = rsa_jwk(jwk);
    else if (strcmp(kty, "EC") == 0)
        pkey = ec_jwk(jwk);
    else if (strcmp(kty, "OKP") == 0)
        pkey = okp_jwk(jwk);
    else if (strcmp(kty, "oct") == 0 && (secret = member(jwk, "k", &secret_len)) != NULL)
        algs = JWT_HMAC_ALGS;
    else
        return false;
    if (pkey)
        algs = algs_of(pkey, &why);
    if (only >= 0)
        algs &= JWT_BIT(only);
    if (secret) {
        char *kid_copy = kid ? strdup(kid) : NULL;
        if (!algs || (kid && !kid_copy)) {
            OPENSSL_cleanse(secret, secret_len);
            free(secret);
            free(kid_copy);
            return false;
        }
        return add_hmac(ks, secret, secret_len, algs, kid_copy);
    }
    jwt_key *k = algs ? push(ks) : NULL;
    char *kid_copy = k && kid ? strdup(kid) : NULL;
    if (!k || (kid && !kid_copy)) {
        EVP_PKEY_free(pkey);
        if (secret)
            OPENSSL_cleanse(secret, secret_len);
        free(secret);
        free(kid_copy);
        return false;
    }
    k->pkey = pkey;
    k->algs = algs;
    k->kid = kid_copy;
    ks->n++;
    return true;
}

int weir__jwt_add_jwks(jwt_keyset *ks, const char *json, size_t len, size_t *skipped, char *err,
                       size_t err_len)
{
    json_error_t je;
    json_t *doc = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    json_t *keys = doc ? json_object_get(doc, "keys") : NULL;
    if (!json_is_array(keys)) {
        snprintf(err, err_len, "%s", doc ? "not a JWK Set (no \"keys\" array)" : je.text);
        json_decref(doc);
        return -1;
    }
    int added = 0;
    size_t i;
    json_t *jwk;
    *skipped = 0;
    json_array_foreach(keys, i, jwk)
    {
        if (json_is_object(jwk) && add_jwk(ks, jwk))
            added++;
        else
            (*skipped)++;
    }
    json_decref(doc);
    return added;
}

/* ---- tokens ---- */

static json_t *part_json(const char *p, size_t len)
{
    unsigned char buf[JWT_MAX_TOKEN];
    long n = weir__b64url_decode(p, len, buf, sizeof(buf));
    if (n <= 0)
        return NULL;
    json_t *j = json_loadb((const char *)buf, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
    if (j && !json_is_object(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

bool weir__jwt_parse(const char *tok, size_t len, jwt_parsed *out, const char **why)
{
    memset(out, 0, sizeof(*out));
    out->alg = -1;
    const char *d1 = len <= JWT_MAX_TOKEN ? memchr(tok, '.', len) : NULL;
    const char *d2 = d1 ? memchr(d1 + 1, '.', (size_t)(tok + len - d1 - 1)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', (size_t)(tok + len - d2 - 1))) {
        *why = "not a JWS compact token (three parts)";
        return false;
    }
    out->dot1 = d1;
    out->dot2 = d2;
    json_t *hdr = part_json(tok, (size_t)(d1 - tok));
    if (!hdr) {
        *why = "a malformed token header";
        return false;
    }
    const char *alg = json_string_value(json_object_get(hdr, "alg"));
    const char *kid = json_string_value(json_object_get(hdr, "kid"));
    out->alg = alg ? weir__jwt_alg(alg, strlen(alg)) : -1;
    out->has_kid = kid && strlen(kid) < sizeof(out->kid);
    if (out->has_kid)
        memcpy(out->kid, kid, strlen(kid) + 1);
    bool crit = json_object_get(hdr, "crit") != NULL;
    json_decref(hdr);
    if (out->alg < 0) {
        *why = "an algorithm weir does not verify (or none)";
        return false;
    }
    if (crit) {
        *why = "a critical header extension weir does not know (crit)";
        return false;
    }
    out->claims = part_json(d1 + 1, (size_t)(d2 - d1 - 1));
    if (!out->claims) {
        *why = "malformed claims";
        return false;
    }
    return true;
}

/* ---- signatures ---- */

/* JWS's ECDSA signature is r || s, each n bytes; OpenSSL verifies DER. */
static int ecdsa_der(const unsigned char *sig, size_t len, size_t n, unsigned char *der, size_t cap)
{
    if (len != 2 * n)
        return -1;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)n, NULL), *s = BN_bin2bn(sig + n, (int)n, NULL);
    if (!es || !r || !s || !ECDSA_SIG_set0(es, r, s)) {
        ECDSA_SIG_free(es);
        BN_free(r);
        BN_free(s);
        return -1;
    }
    int dl = i2d_ECDSA_SIG(es, NULL);
    unsigned char *p = der;
    if (dl <= 0 || (size_t)dl > cap)
        dl = -1;
    else
        dl = i2d_ECDSA_SIG(es, &p);
    ECDSA_SIG_free(es);
    return dl;
}

bool weir__jwt_verify(const jwt_key *k, int alg, const char *input, size_t input_len,
                      const unsigned char *sig, size_t sig_len)
{
    if (alg < 0 || alg >= JWT_N_ALGS || !(k->algs & JWT_BIT(alg)))
        return false;
    const EVP_MD *md = md_of(alg);
    if (alg <= JWT_HS512) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        size_t ml = 0;
        EVP_MAC_CTX *c =
            k->hmac[alg - JWT_HS256] ? EVP_MAC_CTX_dup(k->hmac[alg - JWT_HS256]) : NULL;
        bool ok = c && EVP_MAC_update(c, (const unsigned char *)input, input_len) == 1 &&
                  EVP_MAC_final(c, mac, &ml, sizeof(mac)) == 1;
        EVP_MAC_CTX_free(c);
        return ok && ml == sig_len && CRYPTO_memcmp(mac, sig, ml) == 0;
    }
    if (!k->pkey)
        return false;
    unsigned char der[160];
    if (alg == JWT_ES256 || alg == JWT_ES384) {
        int dl = ecdsa_der(sig, sig_len, alg == JWT_ES256 ? 32 : 48, der, sizeof(der));
        if (dl < 0)
            return false;
        sig = der;
        sig_len = (size_t)dl;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    bool ok = ctx && EVP_DigestVerifyInit_ex(ctx, &pctx, md ? EVP_MD_get0_name(md) : NULL, NULL,
                                             NULL, k->pkey, NULL) == 1;
    if (ok && alg >= JWT_PS256 && alg <= JWT_PS512)
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1 &&
             EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) == 1;
    ok = ok && EVP_DigestVerify(ctx, sig, sig_len, (const unsigned char *)input, input_len) == 1;
    EVP_MD_CTX_free(ctx);
    return ok;
}
