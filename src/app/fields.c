/*
 * fields.c - cookies and query parameters (see fields.h).
 */
#include "app/fields.h"

#include <string.h>
#include <strings.h>

weir_str weir__cookie(const weir_headers *h, const char *name)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < weir_headers_count(h); i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len != 6 || strncasecmp(f.name.ptr, "cookie", 6) != 0)
            continue;
        const char *p = f.value.ptr, *end = p + f.value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            if (!semi)
                semi = end;
            if ((size_t)(semi - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
                return (weir_str){p + nl + 1, (size_t)(semi - p - nl - 1)};
            p = semi;
        }
    }
    return WEIR_STR_NULL;
}

weir_str weir__query_param(weir_str q, const char *name)
{
    size_t nl = strlen(name);
    const char *p = q.ptr, *end = q.ptr + q.len;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        if (!amp)
            amp = end;
        if ((size_t)(amp - p) > nl && p[nl] == '=' && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl + 1, (size_t)(amp - p - nl - 1)};
        if ((size_t)(amp - p) == nl && memcmp(p, name, nl) == 0)
            return (weir_str){p + nl, 0};
        p = amp + 1;
    }
    return WEIR_STR_NULL;
}
