/*
 * msg.c - header tables (the weir_headers_* public API).
 */
#include "http/msg.h"

#include <string.h>
#include <strings.h>

#include "core/ascii.h"
#include "http/h1_parse.h"

void weir__headers_init(weir_headers *h, weir_arena *arena)
{
    h->v = h->inline_v;
    h->n = 0;
    h->cap = WEIR_INLINE_HEADERS;
    h->arena = arena;
    h->names = 0;
    h->seen = 0;
}

/* Twice the room (push's slow path). */
int weir__headers_grow(weir_headers *h)
{
    return weir__headers_reserve(h, h->cap * 2);
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

/* Field names compared as HTTP does, without the locale. */
static inline bool name_eq(const char *a, const char *b, size_t len)
{
    return weir__ascii_ieq(a, b, len);
}

/* The filter brought up to date with v[seen..n). */
static void fold_names(weir_headers *h)
{
    if (h->seen > h->n)
        weir__headers_changed(h);
    for (; h->seen < h->n; h->seen++) {
        if (h->v[h->seen].name.len)
            h->names |= weir__header_bit(h->v[h->seen].name);
    }
}

long weir__headers_find_n(const weir_headers *h, const char *name, size_t len, size_t from)
{
    for (size_t i = from; i < h->n; i++) {
        if (h->v[i].name.len == len && name_eq(h->v[i].name.ptr, name, len))
            return (long)i;
    }
    return -1;
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

/* set_ref when a field of that name may be there. */
static int set_ref_scan(weir_headers *h, weir_str name, weir_str value)
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
    if (out != h->n)
        weir__headers_changed(h);
    h->n = (uint32_t)out;
    return WEIR_OK;
}

/* Appends a field known to be absent, with the filter up to date. */
static inline int push_absent(weir_headers *h, weir_str name, weir_str value, uint64_t bit)
{
    h->names |= bit;
    h->seen++;
    h->v[h->n++] = (weir_header){name, value};
    return WEIR_OK;
}

/* set_ref's other cases: the filter behind, the name maybe there, the
 * table full. */
__attribute__((noinline)) static int set_ref_slow(weir_headers *h, weir_str name, weir_str value,
                                                  uint64_t bit)
{
    fold_names(h);
    if (h->names & bit)
        return set_ref_scan(h, name, value);
    if (h->n == h->cap && weir__headers_grow(h) < 0)
        return WEIR_ERR_NOMEM;
    return push_absent(h, name, value, bit);
}

/* The common case, a name not there, makes no call (so saves no
 * registers): everything else goes to set_ref_slow. An empty name has
 * no bit and is never looked for. */
int weir_headers_set_ref(weir_headers *h, weir_str name, weir_str value)
{
    uint64_t bit = name.len ? weir__header_bit(name) : 0;
    if (h->seen != h->n || (h->names & bit) || h->n == h->cap)
        return set_ref_slow(h, name, value, bit);
    return push_absent(h, name, value, bit);
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
    if (out != h->n)
        weir__headers_changed(h);
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
    if (removed)
        weir__headers_changed(h);
    h->n = (uint32_t)out;
    return removed;
}
