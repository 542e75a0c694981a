/*
 * weir/types.h - small value types shared by every public header.
 *
 * Return-code convention for every non-blocking function in weir (public
 * and internal):
 *   WEIR_OK        the call did what it was asked;
 *   WEIR_AGAIN     it would block: nothing is lost, call again when the
 *                  loop reports progress;
 *   WEIR_DONE      the operation is complete and nothing more will come;
 *   WEIR_DECLINED  the callee chose not to handle it (the caller goes on
 *                  with its default);
 *   < 0            an error; WEIR_ERR_* values or a negative errno.
 *
 * Phases (weir/proxy.h) answer with a different type, weir_phase_result:
 * its values are not I/O codes (WEIR_PHASE_ANSWERED is not WEIR_AGAIN), and
 * the enums are distinct types so that returning or comparing one where the
 * other belongs is a compiler diagnostic (-Wenum-conversion,
 * -Wenum-compare, -Wincompatible-pointer-types; weir's build makes them
 * errors, and so should a program built on the library).
 */
#ifndef WEIR_TYPES_H
#define WEIR_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum weir_status {
    WEIR_OK = 0,
    WEIR_AGAIN = 1,
    WEIR_DONE = 2,
    WEIR_DECLINED = 3,
};

/* Generic errors (negative). Functions that can fail for a system reason
 * return -errno instead, which never collides with these. */
enum weir_error {
    WEIR_ERR = -1000,       /* unspecified failure */
    WEIR_ERR_NOMEM = -1001, /* allocation failed */
    WEIR_ERR_INVAL = -1002, /* invalid argument */
};

/*
 * What a phase returns (weir_proxy_ops in weir/proxy.h). The values share
 * none with the I/O codes above, so an int that slips through anyway (a
 * phase returning what weir_session_respond returned) is refused at run
 * time as an invalid result (500, logged) instead of meaning something
 * else; and none is negative, which keeps the type incompatible with
 * `int`, so a phase declared to return int does not fit weir_proxy_ops.
 */
typedef enum weir_phase_result {
    WEIR_PHASE_CONTINUE = 10, /* go on with the next phase */
    WEIR_PHASE_ANSWERED = 11, /* a response was written (weir_session_respond): skip to logging */
    WEIR_PHASE_PENDING = 12,  /* asynchronous work started; weir_session_resume() follows */
    WEIR_PHASE_ERROR = 13,    /* fail the request: error_while_proxy decides the answer (500) */
} weir_phase_result;

/*
 * A length-carrying byte string. Strings that come from the wire are never
 * NUL-terminated; never pass .ptr to a function expecting a C string.
 * Ownership is stated wherever a weir_str is handed out.
 */
typedef struct weir_str {
    const char *ptr;
    size_t len;
} weir_str;

#define WEIR_STR(lit) ((weir_str){(lit), sizeof(lit) - 1})
#define WEIR_STR_NULL ((weir_str){NULL, 0})

/* A count or duration limit that is off, where 0 means "the default"
 * (weir_proxy_options' keepalive_requests, keepalive_time_ms). */
#define WEIR_UNLIMITED UINT32_MAX

/* One header field: name and value as slices. */
typedef struct weir_header {
    weir_str name;
    weir_str value;
} weir_header;

#ifdef __cplusplus
}
#endif
#endif
