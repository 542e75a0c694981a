/*
 * weir/subrequest.h - HTTP requests a phase makes of its own (an auth
 * server, a key set), on the session's worker, without blocking it.
 *
 * A sub-request goes to a weir_peer like a proxied request: the same TLS
 * options (peer.tls, .sni, .tls_client), HTTP/1.1 or HTTP/2 (peer.h2,
 * .h2_or_h1), and the same pool of kept-alive connections, which proxied
 * requests and sub-requests share. Its callback runs on the worker's loop
 * with the status, the header fields and the whole body, up to a limit.
 *
 * Typical use, in a request phase:
 *
 *     weir_subrequest_spec sp = {.target = WEIR_STR("/check")};
 *     if (!weir_subrequest_start(s, &peer, &sp, on_answer, ctx))
 *         return WEIR_PHASE_ERROR;
 *     return WEIR_PHASE_PENDING;
 *     ...
 *     static void on_answer(weir_session *s, void *ctx,
 *                           const weir_subrequest_result *r)
 *     {
 *         weir_session_resume(s, r->status == 200 ? WEIR_PHASE_CONTINUE
 *                                                 : WEIR_PHASE_ERROR);
 *     }
 *
 * Every wait has a timeout; every failure is a result, never a crash. A
 * sub-request belongs to the session that started it: when the client goes
 * away while one is in flight it ends at once with status 499 (so the
 * pending phase resumes and the session ends), and one still running when
 * its session ends is cancelled without a callback. A detached one
 * (spec.detached) outlives its session: for work that serves later
 * requests, such as refreshing a key set.
 *
 * Not applied to sub-requests: the peer's conn_limit and retry_on.
 * All functions: the session's worker only.
 */
#ifndef WEIR_SUBREQUEST_H
#define WEIR_SUBREQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/peer.h"
#include "weir/session.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_subrequest weir_subrequest;

typedef struct weir_subrequest_spec {
    weir_str method; /* empty = "GET" */
    weir_str target; /* origin form, "/path?query"; empty = "/" */
    /* Host (HTTP/1.1) or :authority (HTTP/2); empty = the peer's SNI, else
     * its address. A "host" field in headers is ignored. */
    weir_str authority;
    const weir_header *headers; /* more request fields (copied at start) */
    size_t n_headers;
    weir_str body;       /* request body (copied at start); Content-Length is set */
    size_t max_body;     /* response body limit in bytes; 0 = 1 MiB; larger fails */
    uint32_t timeout_ms; /* the whole exchange, connect included; 0 = 10 s */
    bool detached;       /* not cancelled with its session; the callback gets s NULL */
} weir_subrequest_spec;

/* Why a sub-request failed (weir_subrequest_result.error_code). */
enum {
    WEIR_SUBREQ_OK = 0,        /* the backend answered */
    WEIR_SUBREQ_CONNECT = 1,   /* no connection (refused, unreachable): status 502 */
    WEIR_SUBREQ_TLS = 2,       /* the TLS handshake or its ALPN failed: 502 */
    WEIR_SUBREQ_PROTOCOL = 3,  /* closed early, reset or a malformed response: 502 */
    WEIR_SUBREQ_TIMEOUT = 4,   /* timeout_ms passed: 504 */
    WEIR_SUBREQ_TOO_LARGE = 5, /* the body is over max_body: 502 */
    WEIR_SUBREQ_CANCELLED = 6, /* the client went away (or the worker stops): 499 */
    WEIR_SUBREQ_NO_MEMORY = 7, /* 500 */
};

typedef struct weir_subrequest_result {
    /* The backend's status, or for a failure the status above (502, 504,
     * 499, 500). */
    int status;
    int error_code;    /* WEIR_SUBREQ_* */
    const char *error; /* NULL, or why it failed, for a log line */
    /* Response fields (names as received; lower case over HTTP/2) and the
     * whole decoded body. Valid during the callback only. */
    const weir_header *headers;
    size_t n_headers;
    weir_str body;
    bool reused; /* it went on a kept-alive connection */
} weir_subrequest_result;

/* Called once per sub-request (unless cancelled), on the worker, never
 * from inside weir_subrequest_start. s is NULL for a detached one. */
typedef void (*weir_subrequest_cb)(weir_session *s, void *arg, const weir_subrequest_result *r);

/* Looks up the first field named name (case-insensitive) in r, or NULL. */
const weir_str *weir_subrequest_header(const weir_subrequest_result *r, const char *name);

/*
 * Starts a sub-request to peer (copied; its timeouts of 0 mean the
 * defaults) for session s. Returns its handle, or NULL when peer has no
 * address, the spec is malformed (a field name or value with CR, LF or
 * NUL, a method that is not a token) or memory is short: then cb is never
 * called.
 */
weir_subrequest *weir_subrequest_start(weir_session *s, const weir_peer *peer,
                                       const weir_subrequest_spec *spec, weir_subrequest_cb cb,
                                       void *arg);

/* Ends a sub-request whose callback has not run: no callback comes, its
 * connection closes. */
void weir_subrequest_cancel(weir_subrequest *r);

/* Sub-requests in flight on this worker (for tests and metrics). */
size_t weir_subrequest_count(void);

#ifdef __cplusplus
}
#endif
#endif
