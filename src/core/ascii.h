/*
 * ascii.h - case-insensitive ASCII comparison, eight bytes at a time, and
 * decimal digits without printf.
 *
 * Field names, tokens and the like are compared without case and without
 * the locale. Most comparisons are of a name with another of the same
 * length that differs early, and the ones that match are short, so both
 * the reject and the match should cost a few instructions, not a loop
 * iteration per byte.
 */
#ifndef WEIR_CORE_ASCII_H
#define WEIR_CORE_ASCII_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define WEIR__ONES64 0x0101010101010101ull

/* x with every byte 'A'..'Z' turned to 'a'..'z' and the others as they
 * are (bytes of 0x80 and up included): exact per byte, no carries between
 * bytes (each byte's low seven bits plus at most 0x3f stay below 0x100). */
static inline uint64_t weir__lower64(uint64_t x)
{
    uint64_t low7 = x & (0x7f * WEIR__ONES64);
    uint64_t ge_a = low7 + (0x80 - 'A') * WEIR__ONES64;     /* bit 7: >= 'A' */
    uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * WEIR__ONES64; /* bit 7: > 'Z' */
    uint64_t upper = (ge_a ^ gt_z) & ~x & (0x80 * WEIR__ONES64);
    return x | (upper >> 2);
}

static inline uint64_t weir__load64(const char *p)
{
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* The len bytes at p, 1 <= len <= 8, in the low bytes of a word (the rest
 * zero), read in at most two loads. */
static inline uint64_t weir__load_short(const char *p, size_t len)
{
    uint32_t a, b;
    if (len >= 4) {
        memcpy(&a, p, 4);
        memcpy(&b, p + len - 4, 4);
        return (uint64_t)a | (uint64_t)b << ((len - 4) * 8);
    }
    uint64_t x = (unsigned char)p[0];
    if (len > 1)
        x |= (uint64_t)(unsigned char)p[1] << 8 | (uint64_t)(unsigned char)p[len - 1]
                                                      << (len - 1) * 8;
    return x;
}

/* a and b, len bytes each, are equal without ASCII case. */
static inline bool weir__ascii_ieq(const char *a, const char *b, size_t len)
{
    if (len <= 8)
        return len == 0 ||
               weir__lower64(weir__load_short(a, len)) == weir__lower64(weir__load_short(b, len));
    size_t i = 0;
    for (; i + 8 < len; i += 8) {
        if (weir__lower64(weir__load64(a + i)) != weir__lower64(weir__load64(b + i)))
            return false;
    }
    /* the last eight bytes, overlapping the words already compared */
    return weir__lower64(weir__load64(a + len - 8)) == weir__lower64(weir__load64(b + len - 8));
}

/* The decimal digits of v at p (at most 20); returns how many. printf's
 * formatting costs more than the rest of an HTTP head. */
static inline size_t weir__put_dec(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        p[i] = tmp[n - 1 - i];
    return n;
}

/* The value of a hex digit ('0'..'9', 'a'..'f', 'A'..'F'), or -1. */
static inline int weir__hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#endif
