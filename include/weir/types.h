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
 */
#ifndef WEIR_TYPES_H
#define WEIR_TYPES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    WEIR_OK = 0,
    WEIR_AGAIN = 1,
    WEIR_DONE = 2,
    WEIR_DECLINED = 3,
};

/* Generic errors (negative). Functions that can fail for a system reason
 * return -errno instead, which never collides with these. */
enum {
    WEIR_ERR = -1000,       /* unspecified failure */
    WEIR_ERR_NOMEM = -1001, /* allocation failed */
    WEIR_ERR_INVAL = -1002, /* invalid argument */
};

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

/* One header field: name and value as slices. */
typedef struct weir_header {
    weir_str name;
    weir_str value;
} weir_header;

#ifdef __cplusplus
}
#endif
#endif
