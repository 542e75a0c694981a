/*
 * trace.c - W3C Trace Context and samplers (trace.h).
 */
#include "app/otel/trace.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1; /* upper case is not allowed either */
}

/* len bytes from 2 * len lower-case hex digits: 0, or -1. */
static int unhex(const char *p, uint8_t *out, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

int weir__traceparent_parse(const char *p, size_t n, weir_trace_ctx *out)
{
    /* Surrounding blanks are the header's, not the value's. */
    while (n && (*p == ' ' || *p == '\t')) {
        p++;
        n--;
    }
    while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    uint8_t version;
    if (n < WEIR_TRACEPARENT_LEN || unhex(p, &version, 1) != 0 || version == 0xff)
        return -1;
    if (version == 0 ? n != WEIR_TRACEPARENT_LEN : n > WEIR_TRACEPARENT_LEN && p[55] != '-')
        return -1;
    if (p[2] != '-' || p[35] != '-' || p[52] != '-')
        return -1;
    weir_trace_ctx c;
    if (unhex(p + 3, c.trace_id, 16) != 0 || unhex(p + 36, c.span_id, 8) != 0 ||
        unhex(p + 53, &c.flags, 1) != 0)
        return -1;
    if (all_zero(c.trace_id, 16) || all_zero(c.span_id, 8))
        return -1;
    *out = c;
    return 0;
}

/* "00" to "ff": two digits a byte, one load (ids are formatted for
 * every traced request). */
#define H4(x) #x "0" #x "1" #x "2" #x "3" #x "4" #x "5" #x "6" #x "7"
#define H8(x) H4(x) #x "8" #x "9" #x "a" #x "b" #x "c" #x "d" #x "e" #x "f"
static const char hex_pairs[513] =
    H8(0) H8(1) H8(2) H8(3) H8(4) H8(5) H8(6) H8(7) H8(8) H8(9) H8(a) H8(b) H8(c) H8(d) H8(e) H8(f);

void weir__trace_hex(const uint8_t *id, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        memcpy(out + 2 * i, hex_pairs + 2 * id[i], 2);
    out[2 * len] = '\0';
}

void weir__traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                              char out[WEIR_TRACEPARENT_LEN + 1])
{
    memcpy(out, "00-", 3);
    weir__trace_hex(trace_id, 16, out + 3);
    out[35] = '-';
    weir__trace_hex(span_id, 8, out + 36);
    out[52] = '-';
    weir__trace_hex(&flags, 1, out + 53);
}

bool weir__tracestate_ok(const char *p, size_t n)
{
    if (n > 512)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || (unsigned char)p[i] > 0x7e)
            return false;
    return true;
}

/* xoshiro256** per thread, seeded from getrandom(2) on first use. */
static _Thread_local uint64_t rng[4];
static _Thread_local bool rng_seeded;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t next64(void)
{
    if (!rng_seeded) {
        while (getrandom(rng, sizeof(rng), 0) != (ssize_t)sizeof(rng))
            ;
        if (all_zero((const uint8_t *)rng, sizeof(rng)))
            rng[0] = 1;
        rng_seeded = true;
    }
    uint64_t r = rotl(rng[1] * 5, 7) * 9, t = rng[1] << 17;
    rng[2] ^= rng[0];
    rng[3] ^= rng[1];
    rng[1] ^= rng[2];
    rng[0] ^= rng[3];
    rng[2] ^= t;
    rng[3] = rotl(rng[3], 45);
    return r;
}

void weir__trace_new_id(uint8_t *id, size_t len)
{
    /* Whole words (ids are 8 or 16 bytes); all zero is never one. */
    uint64_t any;
    do {
        any = 0;
        for (size_t i = 0; i + 8 <= len; i += 8) {
            uint64_t r = next64();
            memcpy(id + i, &r, 8);
            any |= r;
        }
        if (len % 8) {
            uint64_t r = next64();
            memcpy(id + len - len % 8, &r, len % 8);
            any |= r & ((1ull << (8 * (len % 8))) - 1);
        }
    } while (!any);
}

int weir__sampler_parse(const char *text, weir_sampler *out)
{
    weir_sampler s = {0};
    const char *t = text;
    if (strncmp(t, "parentbased_", 12) == 0) {
        s.parent_based = true;
        t += 12;
    }
    if (strcmp(t, "always_on") == 0) {
        s.kind = WEIR_SAMPLER_ALWAYS_ON;
    } else if (strcmp(t, "always_off") == 0) {
        s.kind = WEIR_SAMPLER_ALWAYS_OFF;
    } else if (strncmp(t, "ratio:", 6) == 0 && t[6]) {
        char *end;
        double r = strtod(t + 6, &end);
        if (*end || !(r >= 0.0 && r <= 1.0))
            return -1;
        s.kind = r >= 1.0 ? WEIR_SAMPLER_ALWAYS_ON : WEIR_SAMPLER_RATIO;
        double d = r * 18446744073709551616.0; /* r * 2^64 */
        s.bound = d >= 18446744073709551615.0 ? UINT64_MAX : (uint64_t)d;
        if (r > 0.0 && !s.bound)
            s.bound = 1;
    } else {
        return -1;
    }
    *out = s;
    return 0;
}

bool weir__sampler_sample(const weir_sampler *s, const weir_trace_ctx *parent,
                          const uint8_t trace_id[16])
{
    if (s->parent_based && parent)
        return parent->flags & 1;
    switch (s->kind) {
    case WEIR_SAMPLER_ALWAYS_ON:
        return true;
    case WEIR_SAMPLER_ALWAYS_OFF:
        return false;
    case WEIR_SAMPLER_RATIO:
        break;
    }
    uint64_t v = 0;
    for (int i = 8; i < 16; i++)
        v = v << 8 | trace_id[i];
    return v < s->bound;
}
