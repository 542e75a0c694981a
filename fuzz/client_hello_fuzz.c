/*
 * client_hello_fuzz.c - libFuzzer target for the ClientHello SNI reader
 * (src/net/client_hello.c). The input is the first bytes of a connection,
 * copied to a buffer of its exact size.
 *
 * Invariants:
 *   - the answer is FOUND, MORE or INVALID; MORE only below WEIR_CH_MAX;
 *   - a name found is a lower-case DNS name (letters, digits, '-', '_',
 *     '.'), 253 bytes at most, without a trailing dot;
 *   - every shorter prefix of a found ClientHello asks for more or finds
 *     it too (never refuses).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "net/client_hello.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (!b)
        return 0;
    memcpy(b, data, size);
    char sni[256];
    int r = weir__client_hello_sni(b, size, sni, sizeof(sni));
    CHECK(r == WEIR_CH_FOUND || r == WEIR_CH_MORE || r == WEIR_CH_INVALID);
    if (r == WEIR_CH_MORE)
        CHECK(size < WEIR_CH_MAX);
    if (r == WEIR_CH_FOUND) {
        size_t n = strlen(sni);
        CHECK(n <= 253 && (n == 0 || sni[n - 1] != '.'));
        for (size_t i = 0; i < n; i++)
            CHECK((sni[i] >= 'a' && sni[i] <= 'z') || (sni[i] >= '0' && sni[i] <= '9') ||
                  sni[i] == '-' || sni[i] == '_' || sni[i] == '.');
        for (size_t k = 0; k < size; k += 1 + size / 16) {
            char s2[256];
            int r2 = weir__client_hello_sni(b, k, s2, sizeof(s2));
            CHECK(r2 == WEIR_CH_MORE || r2 == WEIR_CH_FOUND);
        }
    }
    free(b);
    return 0;
}
