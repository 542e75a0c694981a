/*
 * trace.h - W3C Trace Context (https://www.w3.org/TR/trace-context/) and
 * OpenTelemetry's samplers: the traceparent a request brings, the one weir
 * sends upstream, new trace and span ids, and whether a trace is recorded.
 */
#ifndef WEIR_APP_OTEL_TRACE_H
#define WEIR_APP_OTEL_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WEIR_TRACEPARENT_LEN 55 /* "00-" 32 "-" 16 "-" 2 */

typedef struct weir_trace_ctx {
    uint8_t trace_id[16];
    uint8_t span_id[8]; /* the caller's span (the parent) */
    uint8_t flags;      /* bit 0: sampled */
} weir_trace_ctx;

/*
 * Parses a traceparent value (n bytes): 0 and *out, or -1 when it is not
 * one (then a new trace starts, as the specification asks). Version 00
 * must be exactly 55 characters; a later version may carry more after a
 * '-', and version ff is invalid. All-zero ids are invalid; hex is lower
 * case only.
 */
int weir__traceparent_parse(const char *p, size_t n, weir_trace_ctx *out);

/* "00-TRACE-SPAN-FLAGS" (55 characters and a NUL) in out. */
void weir__traceparent_format(const uint8_t trace_id[16], const uint8_t span_id[8], uint8_t flags,
                              char out[WEIR_TRACEPARENT_LEN + 1]);

/* True when a tracestate value (n bytes) may be passed on: at most 512
 * characters of printable ASCII without control characters, as the
 * specification bounds it. */
bool weir__tracestate_ok(const char *p, size_t n);

/* New random ids, never all zero (a per-thread generator seeded from the
 * kernel: no system call per request). */
void weir__trace_new_id(uint8_t *id, size_t len);

/* Lower-case hex of len bytes in out (2 * len + 1). */
void weir__trace_hex(const uint8_t *id, size_t len, char *out);

typedef enum weir_sampler_kind {
    WEIR_SAMPLER_ALWAYS_ON,
    WEIR_SAMPLER_ALWAYS_OFF,
    WEIR_SAMPLER_RATIO,
} weir_sampler_kind;

typedef struct weir_sampler {
    weir_sampler_kind kind;
    bool parent_based; /* a sampled parent is recorded, an unsampled one not */
    uint64_t bound;    /* RATIO: a trace whose id's last 8 bytes are below it */
} weir_sampler;

/*
 * "always_on", "always_off", "ratio:R", "parentbased_always_on",
 * "parentbased_always_off", "parentbased_ratio:R" (R in [0, 1]): 0 and
 * *out, or -1.
 */
int weir__sampler_parse(const char *text, weir_sampler *out);

/* Whether a trace is recorded: parent is the request's context or NULL
 * (a new trace, trace_id its id). */
bool weir__sampler_sample(const weir_sampler *s, const weir_trace_ctx *parent,
                          const uint8_t trace_id[16]);

#endif
