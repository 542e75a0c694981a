/*
 * resp_fuzz.c - libFuzzer target for the Redis protocol's framing
 * (src/net/resp.c). The input is read as a server reads commands (one
 * after another, pipelined) and, separately, as a client reads a reply;
 * each copied to a buffer of its exact size.
 *
 * Invariants:
 *   - a command's answer is MORE, BAD or TOO_BIG (with a reason), or the
 *     bytes it took, at most what was given, with at most max_args
 *     arguments, each inside the input or the scratch buffer;
 *   - a taken command is not complete in any shorter prefix (MORE);
 *   - a reply's answer is MORE, BAD, or its length, and every shorter
 *     prefix of a whole reply asks for more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "net/resp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool inside(const char *p, size_t n, const char *base, size_t len)
{
    return n == 0 || (p >= base && p + n <= base + len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *b = malloc(size ? size : 1);
    if (!b)
        return 0;
    memcpy(b, data, size);
    weir_resp_limits lim = {.max_args = 16, .max_bulk = 4096, .max_inline = 1024};
    weir_str args[16];
    static char scratch[1024];
    size_t off = 0;
    while (off < size) {
        size_t argc = 99;
        const char *why = NULL;
        long r = weir__resp_command(b + off, size - off, &lim, args, &argc, scratch,
                                    sizeof(scratch), &why);
        CHECK(r == WEIR_RESP_MORE || r == WEIR_RESP_BAD || r == WEIR_RESP_TOO_BIG || r > 0);
        if (r <= 0) {
            CHECK(r == WEIR_RESP_MORE || why != NULL);
            break;
        }
        CHECK((size_t)r <= size - off && argc <= lim.max_args);
        for (size_t i = 0; i < argc; i++)
            CHECK(inside(args[i].ptr, args[i].len, b + off, (size_t)r) ||
                  inside(args[i].ptr, args[i].len, scratch, sizeof(scratch)));
        for (size_t k = 0; k < (size_t)r; k += 1 + (size_t)r / 8) {
            size_t c2;
            const char *w2;
            long p = weir__resp_command(b + off, k, &lim, args, &c2, scratch, sizeof(scratch), &w2);
            CHECK(p == WEIR_RESP_MORE);
        }
        off += (size_t)r;
    }
    weir_resp_value v;
    long r = weir__resp_reply(b, size, 4096, &v);
    CHECK(r == WEIR_RESP_MORE || r == WEIR_RESP_BAD || (r > 0 && (size_t)r <= size));
    if (r > 0) {
        if (v.type == WEIR_RESP_BULK || v.type == WEIR_RESP_SIMPLE || v.type == WEIR_RESP_ERROR)
            CHECK(inside(v.p, v.n, b, (size_t)r));
        for (size_t k = 0; k < (size_t)r; k += 1 + (size_t)r / 8)
            CHECK(weir__resp_reply(b, k, 4096, &v) == WEIR_RESP_MORE);
    }
    free(b);
    return 0;
}
