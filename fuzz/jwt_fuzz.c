/*
 * jwt_fuzz.c - libFuzzer target for what the jwt plugin reads from the
 * network: tokens (weir__jwt_parse, base64url) and JWK Set documents
 * (weir__jwt_add_jwks), with every key the document gave checked against
 * the token. Any input must be refused or taken, never crash or leak; a
 * forged signature must never verify.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "app/plugin/jwt_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A JWK Set, a NUL, then a token. */
    const uint8_t *nul = memchr(data, 0, size);
    size_t doc_len = nul ? (size_t)(nul - data) : size;
    const char *tok = nul ? (const char *)nul + 1 : "";
    size_t tok_len = nul ? size - doc_len - 1 : 0;
    jwt_keyset *ks = weir__jwt_keyset_new();
    if (!ks)
        return 0;
    char err[256];
    size_t skipped = 0;
    int n = weir__jwt_add_jwks(ks, (const char *)data, doc_len, &skipped, err, sizeof(err));
    if (n >= 0 && (size_t)n != ks->n)
        abort();
    jwt_parsed p;
    const char *why = NULL;
    if (weir__jwt_parse(tok, tok_len, &p, &why)) {
        if (p.alg < 0 || !p.claims || !p.dot1 || !p.dot2 || p.dot2 <= p.dot1)
            abort();
        unsigned char sig[1024];
        const char *end = tok + tok_len;
        long sl = weir__b64url_decode(p.dot2 + 1, (size_t)(end - p.dot2 - 1), sig, sizeof(sig));
        for (size_t i = 0; sl > 0 && i < ks->n; i++)
            (void)weir__jwt_verify(&ks->keys[i], p.alg, tok, (size_t)(p.dot2 - tok), sig,
                                   (size_t)sl);
        json_decref(p.claims);
    } else if (!why) {
        abort(); /* a refusal says why */
    }
    /* base64url: whatever decodes is 3/4 of its length or less. */
    unsigned char out[4096];
    long dl = weir__b64url_decode(tok, tok_len, out, sizeof(out));
    if (dl > 0 && (size_t)dl > tok_len * 3 / 4)
        abort();
    weir__jwt_keyset_unref(ks);
    return 0;
}
