/*
 * test_jitter.c - the +-10% spread of connection limits (core/jitter.c).
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "core/jitter.h"

Test(jitter, bounds_are_ninety_and_one_hundred_ten_percent)
{
    cr_assert_eq(weir__jitter_ms_with(1000, 0), 900);
    cr_assert_eq(weir__jitter_ms_with(1000, UINT32_MAX), 1100);
    cr_assert_eq(weir__jitter_ms_with(1000, UINT32_MAX / 2), 999);
    cr_assert_eq(weir__jitter_ms_with(3600000, 0), 3240000);
    cr_assert_eq(weir__jitter_ms_with(3600000, UINT32_MAX), 3960000);
}

Test(jitter, zero_stays_off_and_tiny_values_never_reach_zero)
{
    cr_assert_eq(weir__jitter_ms(0), 0);
    cr_assert_eq(weir__jitter_ms_with(0, 12345), 0);
    for (uint64_t ms = 1; ms < 20; ms++) {
        cr_assert_geq(weir__jitter_ms_with(ms, 0), 1);
        cr_assert_leq(weir__jitter_ms_with(ms, UINT32_MAX), ms + ms / 10 + 1);
    }
}

Test(jitter, huge_values_do_not_overflow)
{
    uint64_t big = UINT64_MAX / 2;
    uint64_t lo = weir__jitter_ms_with(big, 0), hi = weir__jitter_ms_with(big, UINT32_MAX);
    cr_assert_lt(lo, big);
    cr_assert_gt(hi, big);
    cr_assert_geq(lo, big - big / 10 - 1);
    cr_assert_leq(hi, big + big / 10 + 1);
}

Test(jitter, random_values_stay_in_bounds_and_spread)
{
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < 10000; i++) {
        uint64_t v = weir__jitter_ms(10000);
        cr_assert(v >= 9000 && v <= 11000, "%llu out of bounds", (unsigned long long)v);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
    }
    /* 10000 draws over 2001 values: both ends of the range are reached
     * closely (a stuck generator would give one value). */
    cr_assert_lt(lo, 9100);
    cr_assert_gt(hi, 10900);
}

/* The 64-bit path (ms below 2^32) gives exactly what 128-bit math does. */
Test(jitter, fast_path_matches_exact_math)
{
    const uint64_t ms_v[] = {
        1, 7, 999, 1000, 3600000, 86400000, UINT32_MAX - 1, UINT32_MAX, (uint64_t)UINT32_MAX + 1};
    const uint32_t rnd_v[] = {0,         1, 12345, UINT32_MAX / 3, UINT32_MAX / 2, UINT32_MAX - 1,
                              UINT32_MAX};
    for (size_t i = 0; i < sizeof(ms_v) / sizeof(ms_v[0]); i++) {
        for (size_t k = 0; k < sizeof(rnd_v) / sizeof(rnd_v[0]); k++) {
            uint64_t ms = ms_v[i];
            unsigned __int128 span = (unsigned __int128)ms * 20 / 100;
            uint64_t want = ms - (uint64_t)((unsigned __int128)ms * 10 / 100) +
                            (uint64_t)(span * rnd_v[k] / UINT32_MAX);
            cr_expect_eq(weir__jitter_ms_with(ms, rnd_v[k]), want ? want : 1, "ms %llu rnd %u",
                         (unsigned long long)ms, rnd_v[k]);
        }
    }
}
