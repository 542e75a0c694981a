/*
 * toml.h - a TOML 1.0.0 parser for the configuration loader.
 *
 * weir_toml_parse() turns a whole document into a tree of values that the
 * caller walks with the accessors below, then frees with weir_toml_free().
 * The parser depends on libc only, keeps no global state, and is safe to
 * call from any thread; a document is immutable once parsed, so several
 * threads may read the same one.
 *
 * Positions: every value remembers the line and column (both 1-based,
 * columns counted in characters) where it was defined, and every table entry
 * also remembers where its key was written, so that a loader can say
 * "weir.toml:12: unknown key 'adrs' in [upstreams.api]". Tables keep their
 * keys in insertion order.
 *
 * Ownership: all values, keys and strings of one document live in one
 * allocation arena owned by the root; pointers returned by the accessors
 * stay valid until weir_toml_free(root) and must not be freed by the caller.
 */
#ifndef WEIR_APP_TOML_H
#define WEIR_APP_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Arrays and inline tables nested deeper than this are rejected. */
#define WEIR_TOML_MAX_DEPTH 100

typedef enum weir_toml_type {
    WEIR_TOML_TABLE,          /* [table], inline table or the root */
    WEIR_TOML_ARRAY,          /* [ ... ] or an array of tables */
    WEIR_TOML_STRING,         /* any of the four string forms */
    WEIR_TOML_INTEGER,        /* int64 */
    WEIR_TOML_FLOAT,          /* double, incl. inf and nan */
    WEIR_TOML_BOOL,           /* true / false */
    WEIR_TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00Z */
    WEIR_TOML_DATETIME_LOCAL, /* local date-time: 1979-05-27T07:32:00 */
    WEIR_TOML_DATE_LOCAL,     /* local date: 1979-05-27 */
    WEIR_TOML_TIME_LOCAL,     /* local time: 07:32:00 */
} weir_toml_type;

/* One parsed value. Opaque: use the accessors. */
typedef struct weir_toml_value weir_toml_value;

/* Why a parse failed. line and column are 1-based (column in characters);
 * message is a NUL-terminated human sentence without position. */
typedef struct weir_toml_error {
    int line;
    int column;
    char message[160];
} weir_toml_error;

/* A date, a time or both, as written. Fields of absent parts are 0. */
typedef struct weir_toml_datetime {
    bool has_date;      /* year, month, day are set */
    bool has_time;      /* hour, minute, second, nanosecond are set */
    bool has_offset;    /* offset_minutes is set (Z is +00:00) */
    int year;           /* 0..9999 */
    int month;          /* 1..12 */
    int day;            /* 1..28/29/30/31 */
    int hour;           /* 0..23 */
    int minute;         /* 0..59 */
    int second;         /* 0..60 (60: a leap second, as RFC 3339 allows) */
    int nanosecond;     /* 0..999999999; digits past the 9th are truncated */
    int frac_digits;    /* fraction digits written (0..9), to print it back */
    int offset_minutes; /* east of UTC, -1439..1439 */
    bool offset_z;      /* the offset was written as Z or z */
} weir_toml_datetime;

/* A table entry: the key (decoded, NUL-terminated but may contain NUL, so
 * use key_len), where the key was written, and its value. */
typedef struct weir_toml_entry {
    const char *key;
    size_t key_len;
    int line;
    int column;
    const weir_toml_value *value;
} weir_toml_entry;

/*
 * Parses text[0..len) (need not be NUL-terminated) as a TOML 1.0 document.
 * Returns the root table, owned by the caller, to release with
 * weir_toml_free(). On a syntax or semantic error, or if memory runs out,
 * returns NULL and, when err is not NULL, fills *err with the position of
 * the first error and a message. Never reads outside text[0..len).
 */
weir_toml_value *weir_toml_parse(const char *text, size_t len, weir_toml_error *err);

/* Frees a document returned by weir_toml_parse(): root must be that root
 * (not an inner value). NULL is accepted. */
void weir_toml_free(weir_toml_value *root);

/* Formats an error as "FILE:LINE:COLUMN: message" into buf (always
 * NUL-terminated when size > 0). Returns what snprintf returns. */
int weir_toml_error_format(const weir_toml_error *err, const char *file, char *buf, size_t size);

/* The accessors below that take one value (type, line, column) need a
 * non-NULL v; the table, array and scalar ones accept NULL and treat it as
 * a type mismatch, so lookups can be chained. */

/* The type of v. */
weir_toml_type weir_toml_type_of(const weir_toml_value *v);
/* A lower-case name for a type ("table", "string", "local date", ...). */
const char *weir_toml_type_name(weir_toml_type type);
/* Where v was defined: the start of the value, or for a table the start of
 * its [header] or of the first key that created it. 1-based. */
int weir_toml_line(const weir_toml_value *v);
int weir_toml_column(const weir_toml_value *v);

/* Number of entries of a table; 0 if t is not a table. */
size_t weir_toml_table_count(const weir_toml_value *t);
/* Entry i (0 <= i < count) of a table, in insertion order. Returns false and
 * leaves *out alone if t is not a table or i is out of range. */
bool weir_toml_table_entry(const weir_toml_value *t, size_t i, weir_toml_entry *out);
/* The value of key (NUL-terminated) in table t, or NULL if t is not a
 * table or has no such key. */
const weir_toml_value *weir_toml_table_get(const weir_toml_value *t, const char *key);
/* Same with a key of key_len bytes that may contain NUL. When entry is not
 * NULL and the key exists, *entry is filled in too. */
const weir_toml_value *weir_toml_table_getn(const weir_toml_value *t, const char *key,
                                            size_t key_len, weir_toml_entry *entry);

/* Number of elements of an array; 0 if a is not an array. */
size_t weir_toml_array_count(const weir_toml_value *a);
/* Element i of an array, or NULL if a is not an array or i is too big. */
const weir_toml_value *weir_toml_array_at(const weir_toml_value *a, size_t i);

/* The bytes of a string (NUL-terminated, but may contain NUL: use *len) or
 * NULL if v is not a string. len may be NULL. */
const char *weir_toml_string(const weir_toml_value *v, size_t *len);
/* Scalar getters: return false (and leave *out alone) on a type mismatch.
 * weir_toml_double does not convert integers. */
bool weir_toml_int(const weir_toml_value *v, int64_t *out);
bool weir_toml_double(const weir_toml_value *v, double *out);
bool weir_toml_bool(const weir_toml_value *v, bool *out);
/* Any of the four date/time types. */
bool weir_toml_datetime_get(const weir_toml_value *v, weir_toml_datetime *out);

#endif
