/*
 * proxy_proto_fuzz.c - libFuzzer target for the PROXY protocol parser
 * (src/net/proxy_proto.c). The input is the first bytes of a connection,
 * copied to a buffer of its exact size (a read past it is ASan's to see).
 *
 * Invariants:
 *   - the answer is -1, 0 or a length within the input and WEIR_PP_MAX;
 *     0 only while the input is shorter than WEIR_PP_MAX;
 *   - a header found is found the same in exactly its own bytes, and
 *     every shorter prefix of it asks for more (0), never refuses;
 *   - its addresses, written back as v1 and as v2, parse to the same
 *     addresses; the TLVs it reports lie within the header.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "net/proxy_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same_addrs(const weir_pp_header *a, const weir_pp_header *b)
{
    CHECK(a->has_addrs == b->has_addrs);
    if (!a->has_addrs)
        return;
    CHECK(a->src_len == b->src_len && a->dst_len == b->dst_len);
    CHECK(memcmp(&a->src, &b->src, a->src_len) == 0);
    CHECK(memcmp(&a->dst, &b->dst, a->dst_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 2 * WEIR_PP_MAX)
        return 0;
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    weir_pp_header h;
    ssize_t r = weir__pp_parse(buf, size, &h);
    CHECK(r >= -1 && r <= (ssize_t)size && r <= WEIR_PP_MAX);
    if (r == 0)
        CHECK(size < WEIR_PP_MAX);
    if (r > 0) {
        CHECK(h.version == 1 || h.version == 2);
        if (h.tlvs)
            CHECK(h.tlvs >= buf && h.tlvs + h.tlvs_len <= buf + r);
        size_t len;
        const uint8_t *v = weir__pp_tlv(&h, WEIR_PP2_TYPE_AUTHORITY, &len);
        if (v)
            CHECK(v >= buf && v + len <= buf + r);
        uint8_t *exact = malloc((size_t)r);
        if (exact) {
            memcpy(exact, buf, (size_t)r);
            weir_pp_header h2;
            CHECK(weir__pp_parse(exact, (size_t)r, &h2) == r);
            same_addrs(&h, &h2);
            for (ssize_t k = 0; k < r; k++)
                CHECK(weir__pp_parse(exact, (size_t)k, &h2) == 0);
            free(exact);
        }
        if (h.has_addrs) {
            char t[WEIR_PP_V1_MAX + 1];
            uint8_t b[512];
            weir_pp_header back;
            size_t n = weir__pp_write_v1(t, sizeof(t), (struct sockaddr *)&h.src,
                                         (struct sockaddr *)&h.dst);
            CHECK(n > 0 && weir__pp_parse((uint8_t *)t, n, &back) == (ssize_t)n);
            /* v1 carries no scope id or flow info: compare what it has. */
            if (h.src.ss_family == AF_INET)
                same_addrs(&h, &back);
            n = weir__pp_write_v2(b, sizeof(b), (struct sockaddr *)&h.src,
                                  (struct sockaddr *)&h.dst, NULL);
            CHECK(n > 0 && weir__pp_parse(b, n, &back) == (ssize_t)n);
            same_addrs(&h, &back);
        }
    }
    free(buf);
    return 0;
}
