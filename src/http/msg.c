/*
 * msg.c - header tables (the weir_headers_* public API).
 */
#include "http/msg.h"

#include <string.h>
#include <strings.h>

#include "http/h1_parse.h"

void weir__headers_init(weir_headers *h, weir_arena *arena)
{
    h->v = h->inline_v;
    h->n = 0;
    h->cap = WEIR_INLINE_HEADERS;
    h->arena = arena;
}

int weir__headers_push(weir_headers *h, weir_str name, weir_str value)
{
    if (h->n == h->cap) {
        uint32_t cap = h->cap * 2;
        weir_header *nv = weir__arena_alloc(h->arena, cap * sizeof(*nv));
        if (!nv)
            return WEIR_ERR_NOMEM;
        memcpy(nv, h->v, h->n * sizeof(*nv));
        h->v = nv;
        h->cap = cap;
    }
    h->v[h->n++] = (weir_header){name, value};
    return WEIR_OK;
}

int weir__headers_reserve(weir_headers *h, uint32_t n)
{
    if (n <= h->cap)
        return WEIR_OK;
    weir_header *nv = weir__arena_alloc(h->arena, n * sizeof(*nv));
    if (!nv)
        return WEIR_ERR_NOMEM;
    memcpy(nv, h->v, h->n * sizeof(*nv));
    h->v = nv;
    h->cap = n;
    return WEIR_OK;
}

/* Field names compared as HTTP does, without the locale (strncasecmp's
 * call per field was most of a header look-up). */
static inline bool name_eq(const char *a, const char *b, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x != y && ((x | 0x20) != (y | 0x20) || (unsigned char)((x | 0x20) - 'a') > 25))
            return false;
    }
    return true;
}

long weir__headers_find(const weir_headers *h, const char *name, size_t from)
{
    size_t len = strlen(name);
    for (size_t i = from; i < h->n; i++) {
        if (h->v[i].name.len == len && name_eq(h->v[i].name.ptr, name, len))
            return (long)i;
    }
    return -1;
}

bool weir__is_hop_by_hop(weir_str n)
{
    switch (n.len) {
    case 2:
        return weir_h1_name_is(n, "te");
    case 7:
        return weir_h1_name_is(n, "trailer") || weir_h1_name_is(n, "upgrade");
    case 10:
        return weir_h1_name_is(n, "connection") || weir_h1_name_is(n, "keep-alive");
    case 16:
        return weir_h1_name_is(n, "proxy-connection");
    case 17:
        return weir_h1_name_is(n, "transfer-encoding");
    case 18:
        return weir_h1_name_is(n, "proxy-authenticate");
    case 19:
        return weir_h1_name_is(n, "proxy-authorization");
    default:
        return false;
    }
}

size_t weir_headers_count(const weir_headers *h)
{
    return h->n;
}

weir_header weir_headers_at(const weir_headers *h, size_t i)
{
    return i < h->n ? h->v[i] : (weir_header){WEIR_STR_NULL, WEIR_STR_NULL};
}

weir_str weir_headers_get(const weir_headers *h, const char *name)
{
    long i = weir__headers_find(h, name, 0);
    return i < 0 ? WEIR_STR_NULL : h->v[i].value;
}

/* RFC 9110 tchar. */
static const uint8_t tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,         ['&'] = 1,         ['\''] = 1,
    ['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,         ['^'] = 1,         ['_'] = 1,
    ['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

static bool valid_name(const char *name)
{
    if (!*name)
        return false;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (!tchar[*p])
            return false;
    }
    return true;
}

static bool valid_value(const char *value)
{
    for (const char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return false;
    }
    return true;
}

static int add_copy(weir_headers *h, const char *name, const char *value)
{
    if (!valid_name(name) || !valid_value(value))
        return WEIR_ERR_INVAL;
    size_t nl = strlen(name), vl = strlen(value);
    char *n = weir__arena_dup(h->arena, name, nl);
    char *v = weir__arena_dup(h->arena, value, vl);
    if (!n || !v)
        return WEIR_ERR_NOMEM;
    return weir__headers_push(h, (weir_str){n, nl}, (weir_str){v, vl});
}

int weir_headers_add(weir_headers *h, const char *name, const char *value)
{
    return add_copy(h, name, value);
}

int weir_headers_add_ref(weir_headers *h, weir_str name, weir_str value)
{
    return weir__headers_push(h, name, value);
}

int weir_headers_set_ref(weir_headers *h, weir_str name, weir_str value)
{
    size_t i = 0;
    while (i < h->n &&
           !(h->v[i].name.len == name.len && name_eq(h->v[i].name.ptr, name.ptr, name.len)))
        i++;
    if (i == h->n)
        return weir__headers_push(h, name, value);
    h->v[i].value = value;
    /* Drop later duplicates so exactly one field remains (the table is
     * rewritten only when there is one). */
    size_t out = i + 1;
    for (size_t j = i + 1; j < h->n; j++) {
        if (h->v[j].name.len == name.len && name_eq(h->v[j].name.ptr, name.ptr, name.len))
            continue;
        if (out != j)
            h->v[out] = h->v[j];
        out++;
    }
    h->n = (uint32_t)out;
    return WEIR_OK;
}
int weir_headers_set(weir_headers *h, const char *name, const char *value)
{
    if (!valid_name(name) || !valid_value(value))
        return WEIR_ERR_INVAL;
    long i = weir__headers_find(h, name, 0);
    if (i < 0)
        return add_copy(h, name, value);
    size_t vl = strlen(value);
    char *v = weir__arena_dup(h->arena, value, vl);
    if (!v)
        return WEIR_ERR_NOMEM;
    h->v[i].value = (weir_str){v, vl};
    /* Drop later duplicates so exactly one field remains. */
    size_t out = (size_t)i + 1;
    for (size_t j = (size_t)i + 1; j < h->n; j++) {
        if (h->v[j].name.len == h->v[i].name.len &&
            name_eq(h->v[j].name.ptr, name, h->v[i].name.len))
            continue;
        if (out != j)
            h->v[out] = h->v[j];
        out++;
    }
    h->n = (uint32_t)out;
    return WEIR_OK;
}

size_t weir_headers_remove(weir_headers *h, const char *name)
{
    size_t len = strlen(name), out = 0, removed = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].name.len == len && name_eq(h->v[i].name.ptr, name, len)) {
            removed++;
            continue;
        }
        if (out != i)
            h->v[out] = h->v[i];
        out++;
    }
    h->n = (uint32_t)out;
    return removed;
}
