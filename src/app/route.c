/*
 * route.c - location choice by host and path (see route.h).
 *
 * Layout: a host index (exact names and wildcard suffixes in hash maps,
 * regexes in a list) maps to per-host tables; locations without hosts go to
 * the generic table. Each table has a hash map of exact paths, a hash map of
 * prefixes plus the distinct prefix lengths (so a lookup probes one hash
 * per length, not per location), the regexes sorted by rank, and the best
 * catch-all.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "app/route.h"

#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RANK_EXACT 3000
#define RANK_REGEX 2000
#define RANK_PREFIX 1000
#define RANK_ANY 0
#define MAX_HOST 256

typedef struct entry {
    int64_t rank;
    size_t index; /* config order: ties go to the first */
    pcre2_code *re;
    void *data;
} entry;

/* ---- string-keyed open-addressing hash map ---- */

typedef struct slot {
    char *key; /* NULL = empty */
    size_t len;
    uint64_t hash;
    void *value;
} slot;

typedef struct strmap {
    slot *slots;
    size_t cap, n; /* cap: power of two */
} strmap;

static uint64_t hash_bytes(const char *p, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

static slot *map_find(const strmap *m, const char *key, size_t len, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        slot *s = &m->slots[i];
        if (!s->key)
            return NULL;
        if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0)
            return s;
    }
}

static void *map_get(const strmap *m, const char *key, size_t len)
{
    slot *s = map_find(m, key, len, hash_bytes(key, len));
    return s ? s->value : NULL;
}

static int map_grow(strmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 16;
    slot *ns = calloc(cap, sizeof(*ns));
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        slot *s = &m->slots[i];
        if (!s->key)
            continue;
        size_t j = s->hash & (cap - 1);
        while (ns[j].key)
            j = (j + 1) & (cap - 1);
        ns[j] = *s;
    }
    free(m->slots);
    m->slots = ns;
    m->cap = cap;
    return 0;
}

/* Returns the slot for key, inserting an empty value if absent. */
static slot *map_put(strmap *m, const char *key, size_t len)
{
    uint64_t h = hash_bytes(key, len);
    slot *s = map_find(m, key, len, h);
    if (s)
        return s;
    if ((m->n + 1) * 4 > m->cap * 3 && map_grow(m) < 0)
        return NULL;
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key)
        i = (i + 1) & (m->cap - 1);
    s = &m->slots[i];
    s->key = malloc(len + 1);
    if (!s->key)
        return NULL;
    memcpy(s->key, key, len);
    s->key[len] = '\0';
    s->len = len;
    s->hash = h;
    s->value = NULL;
    m->n++;
    return s;
}

static void map_free(strmap *m, void (*free_value)(void *))
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key) {
            free(m->slots[i].key);
            if (free_value)
                free_value(m->slots[i].value);
        }
    }
    free(m->slots);
}

/* ---- tables ---- */

typedef struct table {
    strmap exact;        /* path -> entry* */
    strmap prefix;       /* prefix -> entry* */
    size_t *prefix_lens; /* distinct lengths, descending */
    size_t n_prefix_lens;
    entry **regexes; /* by rank descending, then config order */
    size_t n_regexes;
    entry *any;
} table;

typedef struct host_re {
    pcre2_code *re;
    table *t;
} host_re;

struct weir_router {
    entry *entries; /* one per spec */
    size_t n_entries;
    table generic;
    strmap exact_hosts; /* host -> table* */
    strmap wild_hosts;  /* ".suffix" -> table* */
    host_re *host_res;
    size_t n_host_res;
};

static bool better(const entry *a, const entry *b)
{
    if (!b)
        return true;
    return a->rank > b->rank || (a->rank == b->rank && a->index < b->index);
}

int64_t weir__route_rank(const char *path, size_t config_index)
{
    size_t len = strlen(path);
    if (path[0] == '=')
        return RANK_EXACT + (int64_t)(len > 999 ? 999 : len);
    if (path[0] == '~')
        return RANK_REGEX - (int64_t)(config_index > 999 ? 999 : config_index);
    if (len > 0)
        return RANK_PREFIX + (int64_t)(len > 999 ? 999 : len);
    return RANK_ANY;
}

static pcre2_code *compile(const char *pattern, char *err, size_t err_len, size_t index,
                           const char *what)
{
    int code;
    PCRE2_SIZE off;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, 0, &code, &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, err_len, "location %zu: invalid %s regex '%s': %s at offset %zu", index, what,
                 pattern, (const char *)msg, (size_t)off);
        return NULL;
    }
    /* JIT is an optimization: a platform without it still matches. */
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    return re;
}

static int table_add(table *t, entry *e, const char *path)
{
    if (path[0] == '=' || (path[0] != '~' && path[0] != '\0')) {
        bool exact = path[0] == '=';
        const char *p = exact ? path + 1 : path;
        slot *s = map_put(exact ? &t->exact : &t->prefix, p, strlen(p));
        if (!s)
            return -1;
        if (better(e, s->value))
            s->value = e;
        if (!exact) {
            size_t len = strlen(p);
            for (size_t i = 0; i < t->n_prefix_lens; i++) {
                if (t->prefix_lens[i] == len)
                    return 0;
            }
            size_t *nl = realloc(t->prefix_lens, (t->n_prefix_lens + 1) * sizeof(*nl));
            if (!nl)
                return -1;
            t->prefix_lens = nl;
            /* keep descending: longest probed first */
            size_t i = t->n_prefix_lens++;
            while (i > 0 && nl[i - 1] < len) {
                nl[i] = nl[i - 1];
                i--;
            }
            nl[i] = len;
        }
        return 0;
    }
    if (path[0] == '~') {
        entry **nr = realloc(t->regexes, (t->n_regexes + 1) * sizeof(*nr));
        if (!nr)
            return -1;
        t->regexes = nr;
        size_t i = t->n_regexes++;
        while (i > 0 && better(e, nr[i - 1])) {
            nr[i] = nr[i - 1];
            i--;
        }
        nr[i] = e;
        return 0;
    }
    if (better(e, t->any))
        t->any = e;
    return 0;
}

static void table_free(void *p)
{
    table *t = p;
    if (!t)
        return;
    map_free(&t->exact, NULL);
    map_free(&t->prefix, NULL);
    free(t->prefix_lens);
    free(t->regexes);
}

static void table_free_heap(void *p)
{
    table_free(p);
    free(p);
}

/* Match data per thread, freed when the thread exits (a pthread key's
 * destructor; a __thread pointer would leak it). */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;

static void free_match_data(void *md)
{
    pcre2_match_data_free(md);
}

static void make_md_key(void)
{
    pthread_key_create(&md_key, free_match_data);
}

pcre2_match_data *weir__thread_match_data(void)
{
    pthread_once(&md_once, make_md_key);
    pcre2_match_data *md = pthread_getspecific(md_key);
    if (!md) {
        md = pcre2_match_data_create(WEIR_MAX_CAPTURES, NULL);
        if (md)
            pthread_setspecific(md_key, md);
    }
    return md;
}

static bool re_match(pcre2_code *re, const char *s, size_t len)
{
    pcre2_match_data *md = weir__thread_match_data();
    if (!md)
        return false;
    return pcre2_match(re, (PCRE2_SPTR)s, len, 0, 0, md, NULL) >= 0;
}

static entry *table_match(const table *t, weir_str path)
{
    entry *best = NULL;
    slot *s;
    if (t->exact.n && (s = map_find(&t->exact, path.ptr, path.len, hash_bytes(path.ptr, path.len))))
        best = s->value;
    if (t->n_prefix_lens) {
        /* One pass over the path computes the hash of every prefix; probe
         * the map at each length some prefix has (lengths ascending). */
        uint64_t h = 1469598103934665603ull;
        size_t k = t->n_prefix_lens; /* prefix_lens is descending: walk it backwards */
        for (size_t i = 0; i < path.len && k > 0; i++) {
            h = (h ^ (unsigned char)path.ptr[i]) * 1099511628211ull;
            if (i + 1 != t->prefix_lens[k - 1])
                continue;
            k--;
            slot *ps = map_find(&t->prefix, path.ptr, i + 1, h);
            if (ps && better(ps->value, best))
                best = ps->value;
        }
    } /* Regexes are sorted by rank: stop once none can beat what we have. */
    for (size_t i = 0; i < t->n_regexes; i++) {
        entry *e = t->regexes[i];
        if (best && !better(e, best))
            break;
        if (re_match(e->re, path.ptr, path.len)) {
            best = e;
            break;
        }
    }
    if (t->any && better(t->any, best))
        best = t->any;
    return best;
}

/* ---- hosts ---- */

/* Lower-cases host into buf, dropping a port and a trailing dot. */
static size_t normalize_host(weir_str host, char *buf)
{
    size_t n = 0;
    if (!host.ptr || host.len == 0) {
        buf[0] = '\0';
        return 0;
    }
    const char *p = host.ptr, *end = host.ptr + host.len;
    if (*p == '[') { /* IPv6 literal: keep through ']' */
        const char *close = memchr(p, ']', host.len);
        end = close ? close + 1 : end;
    } else {
        const char *colon = memchr(p, ':', host.len);
        if (colon)
            end = colon;
    }
    for (; p < end && n < MAX_HOST - 1; p++) {
        char c = *p;
        buf[n++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
    }
    if (n > 0 && buf[n - 1] == '.')
        n--;
    buf[n] = '\0';
    return n;
}

static table *host_table(weir_router *r, const char *pattern, char *err, size_t err_len,
                         size_t index)
{
    char buf[MAX_HOST];
    if (pattern[0] == '~') {
        if (pattern[1] == '\0') {
            snprintf(err, err_len, "location %zu: empty host regex '~'", index);
            return NULL;
        }
        pcre2_code *re = compile(pattern + 1, err, err_len, index, "host");
        if (!re)
            return NULL;
        host_re *nh = realloc(r->host_res, (r->n_host_res + 1) * sizeof(*nh));
        table *t = calloc(1, sizeof(*t));
        if (!nh || !t) {
            pcre2_code_free(re);
            free(t);
            if (nh)
                r->host_res = nh;
            snprintf(err, err_len, "out of memory");
            return NULL;
        }
        r->host_res = nh;
        r->host_res[r->n_host_res++] = (host_re){re, t};
        return t;
    }
    bool wild = pattern[0] == '*' && pattern[1] == '.';
    const char *name = wild ? pattern + 1 : pattern; /* wildcard keeps the dot: ".example.com" */
    size_t len = strlen(name);
    bool valid = len > (wild ? 1u : 0u) && len < MAX_HOST;
    for (const char *p = name; valid && *p; p++) {
        char c = *p;
        /* DNS names and IP literals ("[::1]" included) */
        valid = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '.' || c == '-' || c == '_' || c == '[' || c == ']' ||
                (c == ':' && name[0] == '[');
    }
    if (!valid) {
        snprintf(err, err_len,
                 "location %zu: invalid host '%s' (expected a name, \"*.suffix\" or \"~regex\")",
                 index, pattern);
        return NULL;
    }
    len = normalize_host((weir_str){name, len}, buf);
    slot *s = map_put(wild ? &r->wild_hosts : &r->exact_hosts, buf, len);
    if (!s) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    if (!s->value)
        s->value = calloc(1, sizeof(table));
    if (!s->value)
        snprintf(err, err_len, "out of memory");
    return s->value;
}

weir_router *weir__router_new(const weir_route_spec *specs, size_t n, char *err, size_t err_len)
{
    weir_router *r = calloc(1, sizeof(*r));
    if (!r || !(r->entries = calloc(n ? n : 1, sizeof(entry)))) {
        free(r);
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    r->n_entries = n;
    for (size_t i = 0; i < n; i++) {
        const weir_route_spec *sp = &specs[i];
        entry *e = &r->entries[i];
        const char *path = sp->path ? sp->path : "";
        e->index = i;
        e->data = sp->data;
        e->rank = sp->has_weight ? sp->weight : weir__route_rank(path, i);
        if (path[0] == '=' && path[1] == '\0') {
            snprintf(err, err_len, "location %zu: empty exact path '='", i);
            goto fail;
        }
        if (path[0] == '~' && !(e->re = compile(path + 1, err, err_len, i, "path")))
            goto fail;
        if (sp->n_hosts == 0) {
            if (table_add(&r->generic, e, path) < 0)
                goto oom;
            continue;
        }
        for (size_t h = 0; h < sp->n_hosts; h++) {
            table *t = host_table(r, sp->hosts[h], err, err_len, i);
            if (!t)
                goto fail;
            if (table_add(t, e, path) < 0)
                goto oom;
        }
    }
    return r;
oom:
    snprintf(err, err_len, "out of memory");
fail:
    weir__router_free(r);
    return NULL;
}

void weir__router_free(weir_router *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_entries; i++)
        pcre2_code_free(r->entries[i].re);
    free(r->entries);
    table_free(&r->generic);
    map_free(&r->exact_hosts, table_free_heap);
    map_free(&r->wild_hosts, table_free_heap);
    for (size_t i = 0; i < r->n_host_res; i++) {
        pcre2_code_free(r->host_res[i].re);
        table_free_heap(r->host_res[i].t);
    }
    free(r->host_res);
    free(r);
}

void *weir__router_match(const weir_router *r, weir_str host, weir_str path)
{
    char buf[MAX_HOST];
    size_t len = normalize_host(host, buf);
    entry *e;
    if (len > 0) {
        table *t;
        if (r->exact_hosts.n && (t = map_get(&r->exact_hosts, buf, len)) &&
            (e = table_match(t, path)))
            return e->data;
        if (r->wild_hosts.n) {
            /* Longest suffix first: ".a.example.com" before ".example.com". */
            for (size_t i = 0; i < len; i++) {
                if (buf[i] != '.')
                    continue;
                if ((t = map_get(&r->wild_hosts, buf + i, len - i)) && (e = table_match(t, path)))
                    return e->data;
            }
        }
        for (size_t i = 0; i < r->n_host_res; i++) {
            if (re_match(r->host_res[i].re, buf, len) && (e = table_match(r->host_res[i].t, path)))
                return e->data;
        }
    }
    e = table_match(&r->generic, path);
    return e ? e->data : NULL;
}
