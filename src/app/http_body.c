/*
 * http_body.c - collecting a libcurl body (http_body.h).
 */
#include "app/http_body.h"

#include <stdlib.h>
#include <string.h>

size_t weir__http_body_write(char *p, size_t size, size_t n, void *arg)
{
    weir_http_body *b = arg;
    size_t add = size * n;
    if (b->len + add > (b->max ? b->max : (size_t)1 << 20)) {
        b->too_big = true;
        return 0;
    }
    char *np = realloc(b->p, b->len + add + 1);
    if (!np)
        return 0;
    memcpy(np + b->len, p, add);
    b->p = np;
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}
