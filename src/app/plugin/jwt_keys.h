/*
 * jwt_keys.h - the keys a jwt plugin verifies with (jwt_keys.c): HMAC
 * secrets, PEM public keys and JSON Web Key Sets, and the JWS signature
 * check of each algorithm (RFC 7515, 7518; EdDSA: RFC 8037) on OpenSSL 3.
 */
#ifndef WEIR_APP_PLUGIN_JWT_KEYS_H
#define WEIR_APP_PLUGIN_JWT_KEYS_H

#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum {
    JWT_HS256,
    JWT_HS384,
    JWT_HS512,
    JWT_RS256,
    JWT_RS384,
    JWT_RS512,
    JWT_PS256,
    JWT_PS384,
    JWT_PS512,
    JWT_ES256,
    JWT_ES384,
    JWT_EDDSA,
    JWT_N_ALGS
};

#define JWT_BIT(a) (1u << (a))
#define JWT_HMAC_ALGS (JWT_BIT(JWT_HS256) | JWT_BIT(JWT_HS384) | JWT_BIT(JWT_HS512))
#define JWT_RSA_ALGS                                                                               \
    (JWT_BIT(JWT_RS256) | JWT_BIT(JWT_RS384) | JWT_BIT(JWT_RS512) | JWT_BIT(JWT_PS256) |           \
     JWT_BIT(JWT_PS384) | JWT_BIT(JWT_PS512))

/* The algorithm named name[0..len) ("RS256"), or -1 ("none" is -1). */
int weir__jwt_alg(const char *name, size_t len);
const char *weir__jwt_alg_name(int alg);

typedef struct jwt_key {
    char *kid;      /* NULL: none */
    uint32_t algs;  /* JWT_BIT()s it may verify: its type's, or its JWK "alg" alone */
    EVP_PKEY *pkey; /* public key; NULL for a secret */
    unsigned char *secret;
    size_t secret_len;
    /* A secret's HMAC contexts (SHA-256, -384, -512) with the key set:
     * each check copies one, which costs a third of setting one up. */
    EVP_MAC_CTX *hmac[3];
} jwt_key;

/* An immutable set once built; shared by reference between workers. */
typedef struct jwt_keyset {
    _Atomic long refs;
    jwt_key *keys;
    size_t n, cap;
} jwt_keyset;

jwt_keyset *weir__jwt_keyset_new(void);
jwt_keyset *weir__jwt_keyset_ref(jwt_keyset *ks);
void weir__jwt_keyset_unref(jwt_keyset *ks);

/* Adds an HMAC secret (copied). False on out of memory. */
bool weir__jwt_add_secret(jwt_keyset *ks, const void *secret, size_t len);
/* Adds the public key of a PEM file (a public key or a certificate):
 * RSA of 2048 bits or more, EC P-256 or P-384, Ed25519. False with a
 * message in err. */
bool weir__jwt_add_pem(jwt_keyset *ks, const char *path, char *err, size_t err_len);
/*
 * Adds the keys of a JWK Set document (RFC 7517): RSA, EC (P-256, P-384),
 * OKP (Ed25519) and oct; keys for encryption ("use": "enc"), of other
 * types or curves, or malformed are skipped (counted in *skipped). Returns
 * the keys added, or -1 with a message in err when the document is not a
 * JWK Set.
 */
int weir__jwt_add_jwks(jwt_keyset *ks, const char *json, size_t len, size_t *skipped, char *err,
                       size_t err_len);

/* Strict base64url without padding (RFC 7515 2): the length decoded into
 * out, or -1 (another character, padding, a length no encoding has, set
 * spare bits, more than cap). */
long weir__b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

#define JWT_MAX_TOKEN 8192

/* A token's parts: its header read, its claims parsed (json_decref them). */
typedef struct jwt_parsed {
    int alg;
    char kid[256];
    bool has_kid;
    struct json_t *claims;   /* an object */
    const char *dot1, *dot2; /* the two dots of the token */
} jwt_parsed;

/*
 * Splits tok (len bytes, at most JWT_MAX_TOKEN) into its three parts and
 * reads its header and claims: false with why for another form, a header
 * that is not a JSON object with a known alg (never "none"), a crit
 * parameter, claims that are not a JSON object, duplicate JSON keys or
 * non-canonical base64url. The signature is not checked.
 */
bool weir__jwt_parse(const char *tok, size_t len, jwt_parsed *out, const char **why);

/* True if sig is k's signature of input under alg (which k->algs has). */
bool weir__jwt_verify(const jwt_key *k, int alg, const char *input, size_t input_len,
                      const unsigned char *sig, size_t sig_len);

#endif
