/*
 * balance.h - backend selection for an upstream.
 *
 * round_robin is nginx's smooth weighted round robin: weights are respected
 * and picks interleave evenly (weights 5,1,1 give a a b a c a a, not
 * a a a a a b c). The sequence is computed once at load; workers pick by
 * an atomic counter into it, so selection takes no lock.
 */
#ifndef WEIR_APP_BALANCE_H
#define WEIR_APP_BALANCE_H

#include <stddef.h>
#include <stdint.h>

typedef struct weir_rr_state weir_rr_state;
struct weir_cfg_upstream;

/* Builds the pick sequence for u's backends; NULL if u has none. */
weir_rr_state *weir__rr_new(const struct weir_cfg_upstream *u);
void weir__rr_free(weir_rr_state *rr);
/* Index of the next backend. Any thread. */
size_t weir__rr_next(weir_rr_state *rr);
/* Length of the sequence (a multiple of nothing in particular; for tests). */
size_t weir__rr_period(const weir_rr_state *rr);
/* The index at position i of the sequence (for tests). */
size_t weir__rr_at(const weir_rr_state *rr, size_t i);

#endif
