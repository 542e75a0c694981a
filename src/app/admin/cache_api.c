/*
 * cache_api.c - the admin API's cache endpoints (admin.h):
 *
 *   GET    /api/cache                      each [caches.NAME]'s figures
 *   DELETE /api/cache?key=KEY              that key (and its variants)
 *   DELETE /api/cache?prefix=PREFIX        every key that starts with it
 *
 * with &storage=NAME for one store (default: all of them). A key is what
 * the cache plugin stores under: "[namespace ]scheme://host/path?query"
 * (docs/cache.md). Purges are safe from any thread; they run on the
 * worker that took the request.
 */
#include <stdlib.h>
#include <string.h>

#include "app/admin/admin.h"
#include "app/config/config.h"
#include "app/fields.h"
#include "weir/cache.h"

static json_t *store_json(const weir_cfg_cache *k)
{
    weir_cache_stats st;
    weir_cache_get_stats(k->store->c, &st);
    return json_pack(
        "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}, "
        "s:{s:I, s:I, s:I, s:I, s:I}}",
        "name", k->name, "hits", (json_int_t)st.hits, "misses", (json_int_t)st.misses,
        "stale_served", (json_int_t)st.stale_served, "revalidations", (json_int_t)st.revalidations,
        "revalidated", (json_int_t)st.revalidated, "coalesced", (json_int_t)st.coalesced, "stored",
        (json_int_t)st.stored, "invalidations", (json_int_t)st.invalidations, "memory", "objects",
        (json_int_t)st.mem_objects, "bytes", (json_int_t)st.mem_bytes, "max_bytes",
        (json_int_t)st.mem_max_bytes, "evictions", (json_int_t)st.mem_evictions, "disk", "objects",
        (json_int_t)st.disk_objects, "bytes", (json_int_t)st.disk_bytes, "max_bytes",
        (json_int_t)st.disk_max_bytes, "evictions", (json_int_t)st.disk_evictions, "errors",
        (json_int_t)st.disk_errors);
}

json_t *weir__admin_cache_json(const weir_config *c)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < c->n_caches; i++)
        if (c->caches[i].store)
            json_array_append_new(arr, store_json(&c->caches[i]));
    return json_pack("{s:o}", "caches", arr ? arr : json_array());
}

/* A query parameter, percent-decoded, as a malloc'd string; NULL if absent
 * (*bad on bad encoding). */
static char *param(weir_str query, const char *name, bool *bad)
{
    weir_str v = weir__query_param(query, name);
    if (!v.ptr)
        return NULL;
    char *out = malloc(v.len + 1);
    long n = out ? weir__unescape(v, out, v.len + 1) : -1;
    if (n < 0) {
        free(out);
        *bad = true;
        return NULL;
    }
    out[n] = '\0';
    return out;
}

int weir__admin_cache_purge(const weir_config *c, weir_str query, json_t **out)
{
    bool bad = false;
    char *key = param(query, "key", &bad);
    char *prefix = param(query, "prefix", &bad);
    char *storage = param(query, "storage", &bad);
    int status = 200;
    if (bad) {
        *out = json_pack("{s:s}", "error", "bad percent-encoding in the query");
        status = 400;
    } else if (!key == !prefix || (key && !*key) || (prefix && !*prefix)) {
        *out = json_pack("{s:s}", "error", "give one of key=KEY or prefix=PREFIX (not empty)");
        status = 400;
    } else {
        size_t n = 0, stores = 0;
        for (size_t i = 0; i < c->n_caches; i++) {
            const weir_cfg_cache *k = &c->caches[i];
            if (!k->store || (storage && strcmp(storage, k->name) != 0))
                continue;
            stores++;
            n += key ? weir_cache_purge(k->store->c, key, strlen(key))
                     : weir_cache_purge_prefix(k->store->c, prefix, strlen(prefix));
        }
        if (storage && !stores) {
            *out = json_pack("{s:s+}", "error", "no cache called ", storage);
            status = 404;
        } else {
            *out = json_pack("{s:I}", "purged", (json_int_t)n);
        }
    }
    free(key);
    free(prefix);
    free(storage);
    return status;
}
