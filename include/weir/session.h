/*
 * weir/session.h - one proxied request ("session") as the phases see it.
 *
 * Every function here must be called on the worker thread running the
 * session, from inside a phase callback (or a session timer callback),
 * except weir_session_resume(), which any thread may call.
 *
 * Strings returned as weir_str point into memory the session owns; they
 * stay valid until the header is modified or the session ends, and are
 * never NUL-terminated.
 */
#ifndef WEIR_SESSION_H
#define WEIR_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "weir/headers.h"
#include "weir/types.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weir_session weir_session;

/* ---- the request ---- */

/* The method token, e.g. "GET". */
weir_str weir_session_method(const weir_session *s);
/* The request-target as received ("/path?query"), for logs. */
weir_str weir_session_target(const weir_session *s);
/*
 * The normalised path: what routing, rewrites and the upstream see
 * (docs/config.md, "Paths"): percent-encoded unreserved characters decoded,
 * other escapes kept with upper-case hex digits, "." and ".." segments
 * resolved, repeated slashes merged (unless keep_slashes). "*" for
 * "OPTIONS *". Requests whose path cannot be normalised safely never reach
 * a phase: they are answered 400.
 */
weir_str weir_session_path(const weir_session *s);
/* The query part after '?', without it; empty if none. */
weir_str weir_session_query(const weir_session *s);
/* The target sent (or to be sent) upstream: the client's with its path
 * normalised, or what weir_session_set_target set. */
weir_str weir_session_upstream_target(const weir_session *s);
/* What failed when fail_to_connect is called (and stays until the next
 * attempt fails). */
typedef enum weir_failure {
    WEIR_FAILURE_NONE = 0,
    WEIR_FAILURE_CONNECT, /* connecting (TCP or TLS) failed or timed out */
    WEIR_FAILURE_RESET,   /* the backend reset or closed before any response byte */
    WEIR_FAILURE_TIMEOUT, /* no response byte within read_timeout (peer.retry_on) */
    WEIR_FAILURE_STATUS,  /* the backend answered 502, 503 or 504 (peer.retry_on) */
} weir_failure;
weir_failure weir_session_failure(const weir_session *s);
/* True if request body bytes went to the backend in the failed attempt
 * (a buffered body can be sent again, but the backend may have acted on
 * it: see the idempotency of the method). */
bool weir_session_body_sent(const weir_session *s);
/* HTTP version of the client's request: 10, 11 or 20. */
int weir_session_http_version(const weir_session *s);
/*
 * Replaces the request-target sent upstream (path and query). The path is
 * normalised like the client's, so what goes upstream never climbs above
 * the root. Returns WEIR_OK, WEIR_ERR_INVAL (not "/..." origin-form,
 * whitespace or control characters, invalid percent-encoding, an encoded
 * NUL, a climb above the root, or dot segments hidden behind an encoded
 * slash) or WEIR_ERR_NOMEM.
 */
int weir_session_set_target(weir_session *s, const char *target, size_t len);

/*
 * Limits the request body to `max_bytes` (0 = no limit beyond the
 * service's): a larger Content-Length is answered 413 before anything goes
 * upstream; a chunked body that grows past it fails with 413 (or a reset if
 * the response has started). Call it in early_request_filter or
 * request_filter. Returns WEIR_OK.
 */
int weir_session_set_body_limit(weir_session *s, uint64_t max_bytes);

/*
 * Reads the request body into memory, up to max_bytes, before
 * upstream_peer runs, so a slow client holds no backend connection until
 * its body is complete (nginx's proxy_request_buffering). A body known to
 * be longer than max_bytes is not buffered; a chunked body that grows past
 * it goes on streaming after its first max_bytes. A complete buffered body
 * is sent again to every attempt, so retries stay possible after it went
 * out. The client's idle time while buffering is client_body_timeout (408
 * after). Call it in early_request_filter or request_filter; not with
 * weir_session_read_body. 0 turns it off. Returns WEIR_OK or
 * WEIR_ERR_INVAL.
 */
int weir_session_buffer_body(weir_session *s, size_t max_bytes);

/*
 * With weir_session_buffer_body: a body larger than its memory limit, up to
 * max_bytes in all, is buffered in an unnamed temporary file in `dir`
 * (O_TMPFILE: it has no name, and disappears with the request or the
 * process) instead of streaming, so it too is complete before a backend is
 * chosen, and replayed to retries. A body known to be longer streams as
 * before; a chunked body that grows past max_bytes streams after its first
 * max_bytes. The file is written as the body arrives, synchronously on the
 * worker (as nginx's client_body_temp_path without aio): keep `dir` on a
 * local disk. If the file cannot be created or written the request gets
 * 503 and an error-log line. `dir` must outlive the request; 0 turns it
 * off. Returns WEIR_OK or WEIR_ERR_INVAL (outside early_request_filter and
 * request_filter).
 */
int weir_session_buffer_to_file(weir_session *s, uint64_t max_bytes, const char *dir);

/*
 * The request id: the client's X-Request-Id if it is 1 to 64 characters of
 * [A-Za-z0-9._:-] without "..", else one weir generated (32 hex digits),
 * which replaces the client's in the request sent upstream (unless the
 * service set no_request_id). Stable for the whole session.
 */
weir_str weir_session_request_id(weir_session *s);
/*
 * Sets the request id (1 to 64 characters of [A-Za-z0-9._:-], not "..":
 * what a client's X-Request-Id must be too), before anything asked for
 * it: from early_request_filter or request_filter. Logs show it and the
 * upstream gets it as X-Request-Id. Returns WEIR_OK, or WEIR_ERR_INVAL (a
 * bad id, or the id was already read). The text is copied.
 */
int weir_session_set_request_id(weir_session *s, const char *id, size_t len);

/* The fields weir adds to the request it sends upstream. */
enum {
    WEIR_ADD_REQUEST_ID = 1,        /* X-Request-Id (weir_session_request_id) */
    WEIR_ADD_X_FORWARDED_FOR = 2,   /* the peer's address appended */
    WEIR_ADD_X_REAL_IP = 4,         /* the client's address, unless one is set */
    WEIR_ADD_X_FORWARDED_PROTO = 8, /* http or https, unless one is set */
    WEIR_ADD_VIA = 16,              /* "1.1 weir" appended */
    WEIR_ADD_ALL = 31,
};
/*
 * Which of those this request gets (WEIR_ADD_* bits), replacing what the
 * service's no_request_id, no_forwarded_headers and no_via decided; from
 * any phase up to upstream_request_filter (they are added after it). A field left out is forwarded
 * as the client sent it, except that the identity fields an untrusted peer
 * sent were dropped at the gate whatever this says (the service's
 * no_forwarded_headers decides that). Returns WEIR_OK, or WEIR_ERR_INVAL
 * (unknown bits, or the fields were added already).
 */
int weir_session_set_added_headers(weir_session *s, unsigned fields);
/* The WEIR_ADD_* bits this request gets (or got). */
unsigned weir_session_added_headers(const weir_session *s);

/* The peer's socket address (the connection's other end). */
const struct sockaddr *weir_session_client_addr(const weir_session *s);
/* The client's IP as text ("127.0.0.1", "::1"): the peer's, or the one
 * X-Forwarded-For names when the peer is a trusted proxy
 * (weir_proxy_options.trusted_proxies). Logs and hashing use it. */
weir_str weir_session_client_ip(const weir_session *s);
/* The peer's IP as text, whatever X-Forwarded-For says. */
weir_str weir_session_peer_ip(const weir_session *s);
/* "ip:port" of the backend of the last attempt, or "-" before one. Valid
 * while the session lives. */
weir_str weir_session_upstream_addr(weir_session *s);

/*
 * How long the client of this session may stay idle while it sends the
 * request body or reads the response, instead of the service's
 * client_body_timeout / send_timeout; for long-lived streams (gRPC
 * streaming, server-sent events). 0 = the service's. Loop thread.
 */
void weir_session_set_client_timeout(weir_session *s, uint32_t ms);

/* TLS facts of the client connection. */
typedef struct weir_tls_info {
    const char *version;  /* "TLSv1.3", ... */
    const char *cipher;   /* OpenSSL's name of the cipher */
    const char *sni;      /* server name the client asked for, or NULL */
    weir_str alpn;        /* negotiated protocol, empty if none */
    bool resumed;         /* the session was resumed (no full handshake) */
    bool client_verified; /* the client presented a certificate that verified */
} weir_tls_info;

/* Fills *out and returns true if the client came over TLS; false (and
 * zeroes) for plain TCP. The strings live as long as the session. */
bool weir_session_tls(const weir_session *s, weir_tls_info *out);

/* The client connection's TLS handshake, told to the first request on the
 * connection only (so a trace shows it once): true, its start on the
 * monotonic clock (microseconds, CLOCK_MONOTONIC) and how long it took;
 * false for later requests and plain TCP. */
bool weir_session_tls_handshake(const weir_session *s, uint64_t *start_us, uint64_t *took_us);

/* The request headers; modifications are what the upstream receives. */
weir_headers *weir_session_req_headers(weir_session *s);
/* The response headers; valid from upstream_response_filter on, or after
 * weir_session_respond(). NULL before a response exists. */
weir_headers *weir_session_resp_headers(weir_session *s);
/* The response status (0 before a response exists). */
int weir_session_resp_status(const weir_session *s);
/* Changes the status sent to the client (100..999; WEIR_ERR_INVAL otherwise). */
int weir_session_set_resp_status(weir_session *s, int status);
/* For this session, response_body_filter is not called: the response
 * body goes through untouched, as read (call it from a response phase
 * that knows no filter applies; it spares a call per piece of body). */
void weir_session_skip_response_body_filter(weir_session *s);
/* True while response_body_filter is called with an empty piece (end
 * false) because the body's source paused (the backend or a producer has
 * nothing more for now): a filter that holds bytes back (an encoder)
 * should give what it can, so a stream that goes quiet (server-sent
 * events) stays live. It is called so once per pause. */
bool weir_session_body_flushing(const weir_session *s);
/* The same for request_body_filter (call it from early_request_filter,
 * request_filter or upstream_request_filter, before the body goes up). */
void weir_session_skip_request_body_filter(weir_session *s);

/* ---- answering ---- */

/*
 * Answers the client directly with `status`, the given extra headers and
 * `body` (copied; may be NULL with body_len 0). Content-Length and, for
 * errors, Connection handling are added by weir. A phase that calls this
 * returns WEIR_PHASE_ANSWERED. Allowed in early_request_filter,
 * request_filter, upstream_peer, fail_to_connect, error_while_proxy, and
 * from a pending phase before resuming. Returns WEIR_OK, WEIR_ERR_INVAL
 * (a response was already started) or WEIR_ERR_NOMEM.
 */
int weir_session_respond(weir_session *s, int status, const weir_header *headers, size_t n_headers,
                         const void *body, size_t body_len);

/*
 * A body weir pulls from the application, piece by piece, as the client
 * takes it (weir_session_respond_stream). `produce` writes up to `cap`
 * bytes at `buf` (weir's buffer, of weir_session_set_body_chunk's size)
 * and sets *len, then returns:
 *   WEIR_OK     *len bytes (at least 1) and more to come: it is called
 *               again once the client has taken them;
 *   WEIR_DONE   *len bytes (maybe 0) and the body is complete;
 *   WEIR_AGAIN  nothing now: call weir_session_body_ready() when there is
 *               (the client's connection stays open meanwhile; a filter
 *               such as compression flushes what it holds), within the
 *               service's send_timeout (weir_session_set_client_timeout
 *               for a longer stream), else the response is cut;
 *   < 0         the body failed: the response is cut (the client sees a
 *               reset or a truncated chunked body, never a short body it
 *               would take for complete).
 * A body of a known `length` must produce exactly that many bytes. It is
 * never called for HEAD, 204 or 304, nor after the client went away.
 * `done` (optional) is called exactly once, when the body is finished,
 * abandoned (the client left, the request failed, another response
 * replaced this one) or not needed (HEAD): `complete` tells whether all of
 * it went out. Both run on the session's worker.
 */
typedef struct weir_body_producer {
    int (*produce)(weir_session *s, void *ctx, char *buf, size_t cap, size_t *len);
    void (*done)(weir_session *s, void *ctx, bool complete);
    void *ctx;
    int64_t length; /* bytes, or -1 unknown (HTTP/1.1: chunked; HTTP/1.0: until close) */
} weir_body_producer;

/*
 * Answers with `status`, the extra headers (copied) and a body pulled
 * from `producer` (copied struct) as the client reads: memory stays one
 * buffer per response whatever its length, over HTTP/1.1 (Content-Length
 * or chunked) and HTTP/2 (flow control). response_filter and the body
 * filters run as for a proxied response (a filter that removes
 * Content-Length makes the body chunked). Same phases and return values as
 * weir_session_respond; on WEIR_ERR_INVAL or WEIR_ERR_NOMEM `done` has
 * been called already.
 */
int weir_session_respond_stream(weir_session *s, int status, const weir_header *headers,
                                size_t n_headers, const weir_body_producer *producer);
/* After a producer returned WEIR_AGAIN: call it again (on the session's
 * worker, outside produce; from a session timer, for one). */
void weir_session_body_ready(weir_session *s);

/*
 * Answers with the `length` bytes of the open file `fd` from `offset`
 * (Content-Length: length). weir owns fd from this call on, even when it
 * fails, and closes it as soon as the body is sent or abandoned, so a file
 * stays open only while it is sent. On a plain-TCP HTTP/1.1 connection
 * with no body filter at work the bytes go with sendfile(2) straight from
 * the page cache; over TLS, HTTP/2 or through a filter they are read
 * (pread, one buffer at a time) as the client takes them. A file that
 * shrinks while being sent cuts the response. Same phases and return
 * values as weir_session_respond.
 */
int weir_session_respond_file(weir_session *s, int status, const weir_header *headers,
                              size_t n_headers, int fd, uint64_t offset, uint64_t length);

/* The size of the buffer a streamed or file body is produced or read into
 * [16384]; 1024 to 1048576 (WEIR_ERR_INVAL outside). Before
 * weir_session_respond_stream / _file. */
int weir_session_set_body_chunk(weir_session *s, size_t bytes);

/* ---- asynchronous phases ---- */

/*
 * Finishes a phase that returned WEIR_PHASE_PENDING, as if it had returned
 * `result` (WEIR_PHASE_CONTINUE, WEIR_PHASE_ANSWERED or WEIR_PHASE_ERROR).
 * Exactly one call per pending phase. Any thread may call it; the session
 * continues on its own worker. The session stays alive until then even if
 * the client goes away.
 */
void weir_session_resume(weir_session *s, weir_phase_result result);

/*
 * Called once the request body is read (error 0, body holds it) or reading
 * failed (error < 0: WEIR_ERR_INVAL if it was over the limit, else the
 * client went away or sent bad framing; body is empty). Runs on the
 * session's worker; it (or later code) must call weir_session_resume().
 */
typedef void (*weir_session_body_cb)(weir_session *s, void *ctx, weir_str body, int error);

/*
 * Reads the whole request body, up to max_bytes, into memory the session
 * owns, then calls cb. For phases that answer from the body (an API
 * endpoint): call it from request_filter or early_request_filter and
 * return WEIR_PHASE_PENDING. The body is consumed: such a request must be
 * answered, not proxied. Returns WEIR_OK, or WEIR_ERR_INVAL when called
 * twice or outside those phases.
 */
int weir_session_read_body(weir_session *s, size_t max_bytes, weir_session_body_cb cb);

typedef void (*weir_session_timer_cb)(weir_session *s, void *ctx);
/*
 * Calls cb(s, ctx) on the session's worker after `delay_ms`. One timer per
 * session: starting it again re-arms it. The timer is cancelled when the
 * session ends. Returns WEIR_OK.
 */
int weir_session_set_timer(weir_session *s, uint32_t delay_ms, weir_session_timer_cb cb);

/*
 * Allocates len bytes (8-aligned) that live until the session ends: for a
 * per-request context or strings without a malloc per request. NULL if
 * memory is exhausted.
 */
void *weir_session_alloc(weir_session *s, size_t len);

/* The index of the worker thread running the session (0-based). */
int weir_session_worker(const weir_session *s);

/* The per-request context created by weir_proxy_ops.new_ctx (or NULL). */
void *weir_session_ctx(const weir_session *s);

#ifdef __cplusplus
}
#endif
#endif
