/*
 * policy.h - what RFC 9111 says a shared cache may do with a message
 * (policy.c): the directives of Cache-Control and of a targeted field
 * (CDN-Cache-Control, RFC 9213), whether a response may be stored, how
 * long it is fresh, how old it is, and whether a request may be answered
 * from it or must go to the origin. Pure functions of the heads and the
 * clock: no I/O, any thread.
 *
 * Times are seconds since the epoch; ages and lifetimes are seconds,
 * capped at WEIR_CACHE_DELTA_MAX as RFC 9111 1.2.2 says.
 */
#ifndef WEIR_CACHE_POLICY_H
#define WEIR_CACHE_POLICY_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "weir/headers.h"

/* 2^31: "the greatest integer it can represent" for delta-seconds. */
#define WEIR_CACHE_DELTA_MAX 2147483648LL

/* Directives without a value (weir_cc.flags). */
enum {
    WEIR_CC_NO_STORE = 1u << 0,
    WEIR_CC_NO_CACHE = 1u << 1, /* also no-cache="field": taken as unqualified */
    WEIR_CC_PRIVATE = 1u << 2,  /* also private="field": not stored by a shared cache */
    WEIR_CC_PUBLIC = 1u << 3,
    WEIR_CC_MUST_REVALIDATE = 1u << 4,
    WEIR_CC_PROXY_REVALIDATE = 1u << 5,
    WEIR_CC_ONLY_IF_CACHED = 1u << 6,
    WEIR_CC_NO_TRANSFORM = 1u << 7,
    WEIR_CC_IMMUTABLE = 1u << 8,
    WEIR_CC_MUST_UNDERSTAND = 1u << 9,
    /* a freshness directive given twice with different values, or with a
     * value that is not delta-seconds: the response is stale (4.2.1) */
    WEIR_CC_INVALID = 1u << 15,
};

/* The directives of one message. A delta of -1: absent. */
typedef struct weir_cc {
    uint32_t flags;
    int64_t max_age, s_maxage;
    int64_t max_stale; /* request; "max-stale" alone: WEIR_CACHE_DELTA_MAX */
    int64_t min_fresh; /* request */
    int64_t stale_while_revalidate, stale_if_error; /* RFC 5861 */
} weir_cc;

/* An empty set of directives (every delta absent). */
void weir__cc_init(weir_cc *cc);

/*
 * Reads every Cache-Control field of h (a list: all of them together).
 * Unknown directives are ignored; a known one with a malformed value is
 * taken conservatively (max-age=x: stale). Returns true if h has one.
 */
bool weir__cc_parse(const weir_headers *h, weir_cc *out);

/*
 * Reads the targeted field `name` of h (CDN-Cache-Control or another,
 * RFC 9213): a Structured Field Dictionary (RFC 8941), lower-case keys,
 * integer values for the deltas, booleans for the others. Returns false
 * when there is none or it does not parse: then Cache-Control counts.
 */
bool weir__cc_parse_targeted(const weir_headers *h, const char *name, weir_cc *out);

/* What the cache needs of a response head. */
typedef struct weir_cache_resp {
    int status;
    weir_cc cc; /* the targeted field's when it parsed, else Cache-Control's */
    bool has_date, has_expires, has_last_modified;
    bool expires_invalid; /* an Expires that is not an HTTP-date: already expired */
    time_t date, expires, last_modified;
    int64_t age;        /* the Age field, -1 if none (or not delta-seconds) */
    bool vary_star;     /* Vary: * */
    bool set_cookie;    /* it sets a cookie */
    bool has_validator; /* an ETag or a Last-Modified */
} weir_cache_resp;

/* Fills r from a response head received at `received` (targeted: the
 * RFC 9213 field name, or NULL for Cache-Control alone). Without a Date,
 * r->date is `received` (has_date false). */
void weir__cache_resp_read(weir_cache_resp *r, int status, const weir_headers *h,
                           const char *targeted, time_t received);

/* What the cache needs of a request head. */
typedef struct weir_cache_req {
    weir_cc cc;
    bool has_cc;
    bool pragma_no_cache; /* Pragma: no-cache, counted only without Cache-Control */
    bool authorization;
} weir_cache_req;

void weir__cache_req_read(weir_cache_req *q, const weir_headers *h);

/* Why a response is not stored (weir__cache_storable). */
typedef enum weir_cache_nostore {
    WEIR_NOSTORE_NONE = 0,     /* storable */
    WEIR_NOSTORE_METHOD,       /* not a GET */
    WEIR_NOSTORE_STATUS,       /* 1xx, 206, 304 or another status it cannot reuse */
    WEIR_NOSTORE_DIRECTIVE,    /* no-store in the request or response, or private */
    WEIR_NOSTORE_AUTH,         /* Authorization, and nothing in the response allows it */
    WEIR_NOSTORE_VARY_STAR,    /* Vary: * never matches a later request */
    WEIR_NOSTORE_COOKIE,       /* Set-Cookie, and cookies are not stored */
    WEIR_NOSTORE_NO_FRESHNESS, /* no explicit freshness and not heuristically cacheable */
} weir_cache_nostore;

/* RFC 9111 3 for a shared cache; store_cookies: responses with Set-Cookie
 * may be stored (the cookie is stored with them). */
weir_cache_nostore weir__cache_storable(const char *method, const weir_cache_req *q,
                                        const weir_cache_resp *r, bool store_cookies);

/* True for the status codes RFC 9110 15.1 lets a cache reuse with a
 * heuristic lifetime. */
bool weir__cache_heuristic_status(int status);

/*
 * The freshness lifetime (4.2.1, shared): s-maxage, max-age, Expires minus
 * Date, else 10% of Date minus Last-Modified (at most heuristic_max) for a
 * heuristically cacheable status; 0 when nothing says (or an invalid
 * directive or Expires does). *heuristic tells which.
 */
int64_t weir__cache_lifetime(const weir_cache_resp *r, int64_t heuristic_max, bool *heuristic);

/*
 * The current age (4.2.3) of a response asked for at request_time and
 * received at response_time, at now.
 */
int64_t weir__cache_age(const weir_cache_resp *r, time_t request_time, time_t response_time,
                        time_t now);

/* What to do with a stored response for a request (4, 5.2.1). */
typedef enum weir_cache_use {
    WEIR_CACHE_USE,              /* fresh enough: answer from it */
    WEIR_CACHE_USE_STALE,        /* stale, and the request's max-stale takes it */
    WEIR_CACHE_USE_REVALIDATING, /* stale within stale-while-revalidate: answer, refresh */
    WEIR_CACHE_VALIDATE,         /* ask the origin (conditionally if it has a validator) */
} weir_cache_use;

weir_cache_use weir__cache_use(const weir_cache_req *q, const weir_cache_resp *r, int64_t lifetime,
                               int64_t age);

/*
 * May a stale response answer after the origin failed (a 5xx or no
 * connection)? Its stale-if-error (RFC 5861), or the request's, or the
 * configured window (seconds, 0: none), never past must-revalidate,
 * proxy-revalidate or s-maxage.
 */
bool weir__cache_stale_on_error(const weir_cache_req *q, const weir_cache_resp *r, int64_t lifetime,
                                int64_t age, int64_t window);

#endif
