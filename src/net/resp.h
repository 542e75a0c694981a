/*
 * resp.h - the Redis protocol (RESP2, and RESP3's reply types): commands
 * as a server reads them (an array of bulk strings, or an inline command
 * line), and replies as a client reads them. Pure functions over a
 * buffer; nothing is copied (arguments point into the buffer).
 *
 * Limits follow redis-server's where it has them: at most 1024*1024
 * arguments, a bulk string of at most 512 MB, an inline line of at most
 * 64 KB; a caller sets tighter ones (weir_resp_limits).
 */
#ifndef WEIR_NET_RESP_H
#define WEIR_NET_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weir/resp.h"
#include "weir/types.h"

#define WEIR_RESP_MORE 0       /* not complete yet: read more */
#define WEIR_RESP_BAD (-1)     /* malformed: answer an error and close */
#define WEIR_RESP_TOO_BIG (-2) /* over a limit: the same */

typedef struct weir_resp_limits {
    uint32_t max_args;   /* arguments in one command [1024] */
    uint64_t max_bulk;   /* bytes in one argument [1 MB] */
    uint32_t max_inline; /* bytes in an inline command's line [64 KB] */
} weir_resp_limits;

/*
 * One command from buf[0..len). Returns the bytes it took (> 0) with
 * args[0..*argc) filled; WEIR_RESP_MORE; WEIR_RESP_BAD or
 * WEIR_RESP_TOO_BIG, with *why saying what (as redis-server words it).
 * An empty command (an empty inline line, "*0") takes its bytes with
 * *argc 0: the caller skips it. args must hold lim->max_args entries
 * (lim NULL: the defaults, and 1024 entries). A multibulk command's
 * arguments point into buf. An inline command's are unescaped into
 * scratch (which must hold the line: max_inline bytes), quoted as
 * redis-cli writes them ("a b", 'c', "\x00\n").
 */
long weir__resp_command(const char *buf, size_t len, const weir_resp_limits *lim, weir_str *args,
                        size_t *argc, char *scratch, size_t scratch_len, const char **why);

/*
 * One whole reply from buf[0..len), nested values included (at most 32
 * deep; RESP3 attributes before a value are skipped). Returns its length
 * (> 0) with *top filled, WEIR_RESP_MORE or WEIR_RESP_BAD. max_bulk
 * bounds every bulk string (0: 512 MB).
 */
long weir__resp_reply(const char *buf, size_t len, uint64_t max_bulk, weir_resp_value *top);

/*
 * Replies, written into a growing buffer: o->oom is set (and the rest
 * dropped) if memory runs out. resp3 picks RESP3's null and map types;
 * RESP2 gets $-1 and a flat array. Simple strings and errors are one line:
 * a CR or LF in them is written as a space.
 */
typedef struct weir_resp_out {
    char *p;
    size_t len, cap;
    bool oom;
    bool resp3;
} weir_resp_out;

void weir__resp_simple(weir_resp_out *o, const char *s);
void weir__resp_error(weir_resp_out *o, const char *s);
void weir__resp_int(weir_resp_out *o, int64_t v);
void weir__resp_bulk(weir_resp_out *o, const void *p, size_t n);
void weir__resp_nil(weir_resp_out *o);
void weir__resp_array(weir_resp_out *o, size_t n);
/* A map of n pairs (RESP3 %n; RESP2 *2n): 2n values follow. */
void weir__resp_map(weir_resp_out *o, size_t n);
void weir__resp_out_free(weir_resp_out *o);

#endif
