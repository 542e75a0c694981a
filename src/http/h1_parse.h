/*
 * h1_parse.h - HTTP/1.x message-head parser and framing rules.
 *
 * Zero-copy: every weir_str filled in points into the caller's buffer, which
 * must stay unchanged while they are used. Nothing here allocates.
 *
 * Incremental without rescanning: the caller keeps a `size_t scan` (0 for a
 * new message) and calls again with the same buffer grown by the bytes that
 * arrived. The end of the head is searched from where the previous call
 * stopped, and the head is parsed once, when it is complete. So a 64 KiB
 * head that arrives one byte at a time costs linear time.
 *
 * Line endings: CRLF, or a lone LF (as nginx accepts); a CR not followed by
 * LF ("bare CR") is an error anywhere in the head. Empty lines before the
 * request line are skipped (RFC 9112 2.2).
 *
 * Thread-safety: pure functions of their arguments.
 */
#ifndef WEIR_H1_PARSE_H
#define WEIR_H1_PARSE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/ascii.h"
#include "weir/types.h"

/* Results of the head parsers. > 0 is the head length in bytes (request
 * line/status line, headers and the empty line). */
enum weir_h1_result {
    WEIR_H1_INCOMPLETE = 0,         /* need more bytes */
    WEIR_H1_E_SYNTAX = -1,          /* malformed line or token */
    WEIR_H1_E_METHOD = -2,          /* invalid method token */
    WEIR_H1_E_TARGET = -3,          /* empty or invalid request-target */
    WEIR_H1_E_VERSION = -4,         /* not HTTP/1.0 or HTTP/1.1 (HTTP/1.x for responses) */
    WEIR_H1_E_STATUS = -5,          /* status code not three digits 100..999 */
    WEIR_H1_E_BARE_CR = -6,         /* CR not followed by LF */
    WEIR_H1_E_NUL = -7,             /* NUL byte in the head */
    WEIR_H1_E_HEADER_NAME = -8,     /* empty name or invalid character in a name */
    WEIR_H1_E_WS_BEFORE_COLON = -9, /* "Name : value" */
    WEIR_H1_E_OBS_FOLD = -10,       /* header line starting with SP/HTAB */
    WEIR_H1_E_HEADER_VALUE = -11,   /* control character in a value */
    WEIR_H1_E_TOO_MANY_HEADERS = -12,
};

/* Returns a short static description of a weir_h1_result, for logs. */
const char *weir_h1_strerror(int result);

typedef struct weir_h1_request {
    weir_str method;      /* token, e.g. "GET" */
    weir_str target;      /* request-target as sent, e.g. "/a?b=1" */
    int minor_version;    /* 0 or 1 */
    weir_header *headers; /* caller's array, filled in order */
    size_t n_headers;     /* out: number filled */
} weir_h1_request;

typedef struct weir_h1_response {
    int minor_version; /* any digit: HTTP/1.x */
    int status;        /* 100..999 */
    weir_str reason;   /* may be empty */
    weir_header *headers;
    size_t n_headers;
} weir_h1_response;

/*
 * Parses a request head from buf[0..len). `headers`/`max_headers` give the
 * output array (set req->headers before the call; the parser writes at most
 * max_headers entries and fails with WEIR_H1_E_TOO_MANY_HEADERS beyond).
 * `*scan` carries progress between calls: 0 for a new message; otherwise
 * opaque (the search resumes at *scan - 3).
 * Returns the head length (> 0), WEIR_H1_INCOMPLETE, or a negative
 * weir_h1_result. Header values have leading and trailing SP/HTAB removed.
 * Errors are found once the head is complete, except a line starting with a
 * bare CR, which is reported as soon as it is seen.
 * The caller enforces the head size limit (the parser has none).
 */
int weir_h1_parse_request(const char *buf, size_t len, weir_h1_request *req, size_t max_headers,
                          size_t *scan);

/* Same for a response head (status line "HTTP/1.x NNN reason"; the SP
 * before an empty reason may be missing). No empty lines may precede the
 * status line (WEIR_H1_E_SYNTAX). */
int weir_h1_parse_response(const char *buf, size_t len, weir_h1_response *resp, size_t max_headers,
                           size_t *scan);

/* How a message body is delimited. */
enum weir_h1_body_kind {
    WEIR_H1_BODY_NONE,    /* no body */
    WEIR_H1_BODY_LENGTH,  /* exactly content_length bytes (may be 0) */
    WEIR_H1_BODY_CHUNKED, /* chunked transfer-coding */
    WEIR_H1_BODY_CLOSE,   /* until the connection closes (responses only) */
};

/* Framing errors (negative) of the functions below. */
enum weir_h1_framing_error {
    WEIR_H1_E_CL_AND_TE = -20,      /* both Content-Length and Transfer-Encoding */
    WEIR_H1_E_CL_INVALID = -21,     /* not 1*DIGIT, or over INT64_MAX */
    WEIR_H1_E_CL_MULTIPLE = -22,    /* several differing Content-Length values */
    WEIR_H1_E_TE_NOT_CHUNKED = -23, /* Transfer-Encoding whose last coding is not chunked */
    WEIR_H1_E_TE_HTTP10 = -24,      /* Transfer-Encoding in an HTTP/1.0 request */
    WEIR_H1_E_TE_INVALID = -25,     /* request: outside RFC 9112's grammar, or chunked twice */
    WEIR_H1_E_TE_UNSUPPORTED = -26, /* request: a coding besides chunked (answer 501) */
};

typedef struct weir_h1_framing {
    enum weir_h1_body_kind kind;
    uint64_t content_length; /* for WEIR_H1_BODY_LENGTH */
    bool keep_alive;         /* Connection semantics with the version default */
    bool expect_continue;    /* request had "Expect: 100-continue" */
    bool upgrade;            /* Connection: upgrade with an Upgrade header */
} weir_h1_framing;

/*
 * Decides the body framing of a parsed request (RFC 9112 6.1-6.3): chunked
 * if Transfer-Encoding ends in chunked, else Content-Length, else none.
 * Rejects every ambiguous case listed in weir_h1_framing_error, and more
 * strictly than for responses: Content-Length must be one field of one
 * value (a list, even "5, 5", or a repeated field is an error), and
 * Transfer-Encoding must be a list of transfer-codings in RFC 9112's
 * grammar (parameters allowed, no empty elements) whose last and only
 * chunked is last.
 * expect_continue and upgrade are only set for HTTP/1.1 (RFC 9110 10.1.1,
 * 7.8: HTTP/1.0 recipients ignore them).
 * Returns WEIR_OK or a negative weir_h1_framing_error.
 */
int weir_h1_request_framing(const weir_h1_request *req, weir_h1_framing *out);

/*
 * Decides the body framing of a parsed response to a request with the given
 * method (RFC 9112 6.3): none for HEAD, 1xx, 204, 304 and 2xx to CONNECT;
 * chunked; Content-Length; else until close. Transfer-Encoding not ending in
 * chunked means until close. CL+TE from an upstream: TE wins and CL is to be
 * dropped (returned as WEIR_OK, out->kind chunked, keep_alive false). TE in
 * an HTTP/1.0 response means until close. Differing CL values or an invalid
 * CL are errors (the response cannot be forwarded safely), also when the
 * response has no body. keep_alive is false for close-delimited bodies;
 * upgrade is only set on a 101.
 */
int weir_h1_response_framing(const weir_h1_response *resp, weir_str request_method,
                             weir_h1_framing *out);

/* True if the comma-separated token list `value` contains `token`
 * (case-insensitive, optional whitespace around elements). */
bool weir_h1_list_has_token(weir_str value, const char *token);

/* Case-insensitive comparison of a header name with a C string (its length
 * folds to a constant for a literal). */
static inline bool weir_h1_name_is(weir_str name, const char *lower_name)
{
    size_t n = __builtin_strlen(lower_name);
    return name.len == n && weir__ascii_ieq(name.ptr, lower_name, n);
}

/*
 * Incremental chunked transfer-coding decoder. Data is decoded in place:
 * the output segments point into the caller's buffer.
 */
enum weir_chunk_seg_kind {
    WEIR_CHUNK_DATA,    /* body bytes */
    WEIR_CHUNK_TRAILER, /* raw, validated trailer-section bytes: whole field lines
                           ("Name: value\r\n"), possibly split across segments,
                           without the final empty line */
};

typedef struct weir_chunk_seg {
    enum weir_chunk_seg_kind kind;
    weir_str bytes;
} weir_chunk_seg;

typedef struct weir_chunked_decoder {
    int state;            /* private */
    uint64_t remaining;   /* private: bytes left in the current chunk */
    uint32_t n_digits;    /* private */
    uint32_t trailer_len; /* private: trailer bytes so far (limit 16 KiB) */
    uint32_t ext_len;     /* private: chunk-extension bytes of this size line (limit 4 KiB) */
    bool done;            /* set once the last chunk and trailers are consumed */
} weir_chunked_decoder;

/* Errors of weir_chunked_decode. */
enum weir_chunked_error {
    WEIR_CHUNK_E_SIZE = -30,    /* missing/invalid hex size, over 16 digits or > INT64_MAX */
    WEIR_CHUNK_E_EXT = -31,     /* invalid chunk extension */
    WEIR_CHUNK_E_CRLF = -32,    /* missing CRLF after size line or data (bare LF/CR too) */
    WEIR_CHUNK_E_TRAILER = -33, /* invalid trailer line, or trailers over 16 KiB */
};

void weir_chunked_init(weir_chunked_decoder *d);

/*
 * Consumes bytes from buf[0..len) and appends up to max_segs segments to
 * segs (*n_segs set to how many). Returns the number of bytes consumed
 * (which may be less than len when the segment array is full, or after the
 * message ended: bytes after the end belong to the next message), or a
 * negative weir_chunked_error. Data segments never include framing.
 * Once d->done is set, further calls consume nothing.
 * The size line must end in CRLF; chunk extensions are validated and
 * dropped (at most 4 KiB of them per size line, else WEIR_CHUNK_E_EXT); the
 * data of each chunk must be followed by CRLF. Trailer field lines and the
 * final empty line must end in CRLF too: a lone LF or bare CR anywhere is
 * WEIR_CHUNK_E_CRLF, other trailer syntax errors WEIR_CHUNK_E_TRAILER.
 * When the call fails, the segments it filled are not to be used.
 */
ssize_t weir_chunked_decode(weir_chunked_decoder *d, const char *buf, size_t len,
                            weir_chunk_seg *segs, size_t max_segs, size_t *n_segs);

#endif
