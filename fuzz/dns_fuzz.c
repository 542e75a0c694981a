/*
 * dns_fuzz.c - libFuzzer target for weir's own reading of DNS messages
 * (src/lb/dns.c: weir__dns_answer_ttl, the TTLs of SRV answers that
 * c-ares 1.18 does not give), and c-ares's SRV and address parsers on the
 * same bytes, as the lookup service calls them.
 *
 * Input: one mode byte, then
 *   mode even: a raw DNS message (copied to a buffer of its exact size, so
 *     a read past it is ASan's to see);
 *   mode odd: a list of records, 6 bytes each (type selector, TTL, name
 *     form), that the target encodes as a well-formed answer to one
 *     question, with names in full or compressed.
 *
 * Invariants:
 *   - raw: the answer is at most 0x7fffffff (a TTL with its top bit set
 *     counts as 0); nothing is read outside the message;
 *   - built: the answer is exactly the smallest TTL of the records of the
 *     asked type (top-bit TTLs as 0), 0 when there is none; the message
 *     cut short (at mode >> 2 64ths) reads nothing outside and answers at
 *     most 0x7fffffff;
 *   - ares_parse_srv_reply / ares_parse_a_reply on the bytes either fail
 *     or give records (freed).
 */
#include <ares.h>
#include <arpa/nameser.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

#include "lb/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void c_ares_parsers(const unsigned char *m, int len)
{
    struct ares_srv_reply *srv = NULL;
    if (ares_parse_srv_reply(m, len, &srv) == ARES_SUCCESS)
        ares_free_data(srv);
    struct ares_addrttl ttls[8];
    int n = 8;
    struct hostent *h = NULL;
    if (ares_parse_a_reply(m, len, &h, ttls, &n) == ARES_SUCCESS) {
        CHECK(n >= 0 && n <= 8);
        ares_free_hostent(h);
    }
}

static size_t put16(unsigned char *p, unsigned v)
{
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
    return 2;
}

/* A message answering "svc.test" (type asked) with the records data
 * describes; *want gets the TTL weir__dns_answer_ttl must find. */
static size_t build(const uint8_t *data, size_t size, unsigned char *m, size_t cap, int asked,
                    uint32_t *want)
{
    static const int types[4] = {ns_t_srv, ns_t_a, ns_t_aaaa, ns_t_cname};
    static const unsigned char qname[] = "\3svc\4test";
    size_t nrec = size / 6 > 64 ? 64 : size / 6;
    size_t o = 0;
    o += put16(m + o, 0x1234);
    o += put16(m + o, 0x8180);
    o += put16(m + o, 1);
    o += put16(m + o, (unsigned)nrec);
    o += put16(m + o, 0);
    o += put16(m + o, 0);
    memcpy(m + o, qname, sizeof(qname)); /* with its terminating 0 */
    o += sizeof(qname);
    o += put16(m + o, (unsigned)asked);
    o += put16(m + o, ns_c_in);
    uint32_t min = UINT32_MAX;
    for (size_t i = 0; i < nrec; i++) {
        const uint8_t *r = data + i * 6;
        int type = types[r[0] & 3];
        uint32_t ttl = (uint32_t)r[1] << 24 | (uint32_t)r[2] << 16 | (uint32_t)r[3] << 8 | r[4];
        if (o + 64 > cap)
            break;
        if (r[5] & 1) {
            o += put16(m + o, 0xC00C); /* the question's name */
        } else {
            memcpy(m + o, qname, sizeof(qname));
            o += sizeof(qname);
        }
        o += put16(m + o, (unsigned)type);
        o += put16(m + o, ns_c_in);
        o += put16(m + o, ttl >> 16);
        o += put16(m + o, ttl & 0xFFFF);
        size_t rdlen = type == ns_t_a ? 4 : type == ns_t_aaaa ? 16 : type == ns_t_srv ? 8 : 2;
        o += put16(m + o, (unsigned)rdlen);
        memset(m + o, 0, rdlen);
        if (type == ns_t_srv) /* priority, weight, port, target "." */
            m[o + 5] = 80;
        else if (type == ns_t_cname)
            m[o] = 0xC0, m[o + 1] = 0x0C;
        o += rdlen;
        if (type == asked) {
            uint32_t t = ttl & 0x80000000u ? 0 : ttl;
            if (t < min)
                min = t;
        }
        /* the header's count follows what was written */
        put16(m + 6, (unsigned)(i + 1));
    }
    if (nrec == 0)
        put16(m + 6, 0);
    *want = min == UINT32_MAX ? 0 : min;
    return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536)
        return 0;
    uint8_t mode = data[0];
    data++;
    size--;
    if (!(mode & 1)) {
        unsigned char *m = malloc(size ? size : 1);
        if (!m)
            return 0;
        memcpy(m, data, size);
        int type = mode & 2 ? ns_t_a : ns_t_srv;
        uint32_t ttl = weir__dns_answer_ttl(m, (int)size, type);
        CHECK(ttl <= 0x7fffffffu);
        c_ares_parsers(m, (int)size);
        free(m);
        return 0;
    }
    static unsigned char buf[64 * 64 + 64];
    int asked = mode & 2 ? ns_t_a : ns_t_srv;
    uint32_t want;
    size_t len = build(data, size, buf, sizeof(buf), asked, &want);
    CHECK(weir__dns_answer_ttl(buf, (int)len, asked) == want);
    c_ares_parsers(buf, (int)len);
    /* Cut short: never a read outside (ASan), never a TTL from nowhere. */
    size_t cut = (size_t)(mode >> 2) * len / 64;
    unsigned char *m = malloc(cut ? cut : 1);
    if (!m)
        return 0;
    memcpy(m, buf, cut);
    CHECK(weir__dns_answer_ttl(m, (int)cut, asked) <= 0x7fffffffu);
    c_ares_parsers(m, (int)cut);
    free(m);
    return 0;
}
