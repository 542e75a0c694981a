/*
 * jitter.c - spreading deadlines (see jitter.h).
 */
#include "core/jitter.h"

#include <stdint.h>
#include <sys/random.h>
#include <time.h>

uint64_t weir__jitter_ms_with(uint64_t ms, uint32_t rnd)
{
    if (ms == 0)
        return 0;
    /* span = 20% of ms; the offset is rnd scaled onto [0, span]. Below
     * 2^32 ms (49 days: every deadline a config can give) 64-bit products
     * cannot overflow and the divisions by constants are multiplications;
     * this runs once per request (keepalive_time). */
    if (ms <= UINT32_MAX) {
        uint64_t span = ms * (2 * WEIR_JITTER_PERCENT) / 100;
        uint64_t v = ms - ms * WEIR_JITTER_PERCENT / 100 + span * rnd / UINT32_MAX;
        return v ? v : 1;
    }
    /* Beyond, 128-bit products. */
    unsigned __int128 span = (unsigned __int128)ms * (2 * WEIR_JITTER_PERCENT) / 100;
    uint64_t off = (uint64_t)((span * rnd) / UINT32_MAX);
    uint64_t low = ms - (uint64_t)((unsigned __int128)ms * WEIR_JITTER_PERCENT / 100);
    uint64_t v = low + off;
    return v ? v : 1;
}

uint32_t weir__rand32(void)
{
    static __thread uint64_t st;
    if (!st) {
        if (getrandom(&st, sizeof(st), 0) != sizeof(st) || !st)
            st = ((uint64_t)(uintptr_t)&st ^ (uint64_t)time(NULL)) | 1;
    }
    /* xorshift64* */
    st ^= st >> 12;
    st ^= st << 25;
    st ^= st >> 27;
    return (uint32_t)((st * 0x2545F4914F6CDD1Dull) >> 32);
}

uint64_t weir__jitter_ms(uint64_t ms)
{
    return ms ? weir__jitter_ms_with(ms, weir__rand32()) : 0;
}
