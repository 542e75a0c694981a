/*
 * toml_scalar.h - numbers and date-times of the TOML parser (private to
 * src/app/toml.c).
 */
#ifndef WEIR_APP_TOML_SCALAR_H
#define WEIR_APP_TOML_SCALAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "app/toml/toml.h"

typedef struct weir__toml_scalar {
    weir_toml_type type; /* INTEGER, FLOAT or one of the date/time types */
    union {
        int64_t i;
        double f;
        weir_toml_datetime dt;
    } u;
} weir__toml_scalar;

/*
 * Decodes the token t[0..n) as an integer, a float (incl. inf and nan) or a
 * date/time, following TOML 1.0's rules. Returns true with *out filled in;
 * on error returns false with a message in msg[0..msg_size) and the offset
 * in the token of the offending character in *err_off.
 */
bool weir__toml_scalar_parse(const char *t, size_t n, weir__toml_scalar *out, size_t *err_off,
                             char *msg, size_t msg_size);

#endif
