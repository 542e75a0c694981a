/*
 * jitter.h - spreading deadlines: a limit of N ms taken as N +- 10% at
 * random per object, so a fleet of connections made together (a deploy, a
 * restart, a burst) does not reach its limit in the same second and
 * reconnect in lockstep (gRPC jitters MAX_CONNECTION_AGE the same way).
 *
 * Any thread: the random state is per thread.
 */
#ifndef WEIR_CORE_JITTER_H
#define WEIR_CORE_JITTER_H

#include <stdint.h>

/* How far a jittered value may move, in percent of the value. */
#define WEIR_JITTER_PERCENT 10

/*
 * ms moved by rnd (uniform over uint32_t) within +-WEIR_JITTER_PERCENT %:
 * rnd 0 gives the lowest value, UINT32_MAX the highest, and the result is
 * never 0 for ms > 0. Pure (the unit tests pin its bounds).
 */
uint64_t weir__jitter_ms_with(uint64_t ms, uint32_t rnd);

/* A random 32-bit value from a per-thread xorshift seeded by the kernel
 * (no system call after the first). Not for secrets. */
uint32_t weir__rand32(void);

/* weir__jitter_ms_with(ms, weir__rand32()); 0 stays 0 (the limit is off). */
uint64_t weir__jitter_ms(uint64_t ms);

#endif
