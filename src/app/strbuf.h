/*
 * strbuf.h - a growing, NUL-terminated text buffer for the program's
 * generated text (directory listings, assembled configurations). Out of
 * memory sets oom and makes every later write a no-op, so a writer checks
 * once at the end.
 */
#ifndef WEIR_APP_STRBUF_H
#define WEIR_APP_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct weir_strbuf {
    char *p; /* malloc'd, NUL-terminated; NULL until the first write */
    size_t len, cap;
    bool oom;
} weir_strbuf;

void weir__sb_put(weir_strbuf *b, const char *s, size_t n);
void weir__sb_puts(weir_strbuf *b, const char *s);
void weir__sb_printf(weir_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Room for n more bytes (and a NUL) at p + len: the place to write them
 * (the writer then sets len), or NULL when out of memory (oom is set). */
char *weir__sb_room(weir_strbuf *b, size_t n);

/* The length of the valid UTF-8 sequence at s (n bytes left, n > 0), or
 * 0 (RFC 3629: no overlong forms, no surrogates, nothing past U+10FFFF). */
size_t weir__utf8_len(const unsigned char *s, size_t n);
/* s with every byte outside a valid UTF-8 sequence as U+FFFD. */
void weir__sb_put_utf8(weir_strbuf *b, const char *s, size_t n);

#endif
