/*
 * cache.c - the `cache` plugin: a location's responses stored and answered
 * by weir's HTTP cache (weir/cache.h, docs/cache.md).
 *
 *     [caches.pages]
 *     memory = "256MB"
 *
 *     [plugins.cache]
 *     category = "cache"
 *     storage = "pages"            # a [caches.NAME]; default "default" (64 MiB)
 *     namespace = "api"            # keys of different namespaces never meet
 *     key_headers = ["X-Tenant"]   # more of the key than scheme, host, path, query
 *     key_cookies = ["lang"]
 *     max_ttl = "1h"               # no response is fresh longer
 *     max_heuristic_ttl = "1d"     # the cap of the 10%-of-Last-Modified rule
 *     stale_on_error = "10m"       # stale answers when the origin fails
 *     targeted_field = "CDN-Cache-Control"   # RFC 9213; "-" for none
 *     store_cookies = false        # responses with Set-Cookie are not stored
 *     max_file_size = "1MB"        # a larger body passes through (at most the storage's)
 *     lock = "5s"                  # coalesced misses wait this long; "0s": no lock
 *     bypass_methods = ["HEAD"]    # these requests neither use nor fill the cache
 *     bypass_headers = ["X-No-Cache"]   # ... when one of these is set, not "0"
 *     bypass_cookies = ["nocache"]
 *     purge_ip_list = ["127.0.0.1", "10.0.0.0/8"]  # PURGE allowed from these
 *     purge_token = "secret"       # ... or with "Authorization: Bearer secret"
 *
 * It runs at the request step (or early_request): it turns caching on for
 * the request; the lookup comes once the request phases are done, so
 * access rules and auth plugins before or after it in the chain still
 * decide first. PURGE (from an allowed client) removes the request's key
 * and its variants: 200 with the count, 404 when nothing was stored, 403
 * from anyone else; without purge_ip_list or purge_token PURGE is not
 * handled here (it goes to the backend like any method).
 */
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/app_int.h"
#include "app/config/config.h"
#include "app/fields.h"
#include "app/plugin/plugins.h"

typedef struct cache_conf {
    char *storage;
    size_t idx; /* of storage in the snapshot's caches */
    weir_cache_settings set;
    char *targeted;
    char *ns;
    char **key_headers, **key_cookies, **bypass_methods, **bypass_headers, **bypass_cookies;
    size_t n_key_headers, n_key_cookies, n_bypass_methods, n_bypass_headers, n_bypass_cookies;
    weir_cidr *purge_ips;
    size_t n_purge_ips;
    char *purge_token;
} cache_conf;

static void cache_free(void *p)
{
    cache_conf *k = p;
    if (!k)
        return;
    free(k->storage);
    free(k->targeted);
    free(k->ns);
    weir__cfg_free_list(k->key_headers, k->n_key_headers);
    weir__cfg_free_list(k->key_cookies, k->n_key_cookies);
    weir__cfg_free_list(k->bypass_methods, k->n_bypass_methods);
    weir__cfg_free_list(k->bypass_headers, k->n_bypass_headers);
    weir__cfg_free_list(k->bypass_cookies, k->n_bypass_cookies);
    free(k->purge_ips);
    free(k->purge_token);
    free(k);
}

static char **list(loader *ld, const weir_toml_value *t, const char *key, const char *section,
                   size_t *n)
{
    int line = 0;
    *n = 0;
    return weir__cfg_get_string_list(ld, t, key, section, n, &line);
}

static bool cache_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    cache_conf *k = calloc(1, sizeof(*k));
    if (!k)
        return false;
    *conf = k;
    bool present = false;
    k->storage = weir__cfg_dup_string(ld, t, "storage", section, &present);
    if (!k->storage)
        k->storage = strdup("default");
    k->ns = weir__cfg_dup_string(ld, t, "namespace", section, &present);
    k->targeted = weir__cfg_dup_string(ld, t, "targeted_field", section, &present);
    k->set.targeted_field = k->targeted;
    uint32_t ms = 0;
    if (weir__cfg_get_duration(ld, t, "max_ttl", section, 10ull * 365 * 86400000, false, &ms))
        k->set.max_ttl = ms / 1000 ? ms / 1000 : 1;
    if (weir__cfg_get_duration(ld, t, "max_heuristic_ttl", section, 365ull * 86400000, false, &ms))
        k->set.heuristic_max = ms / 1000 ? ms / 1000 : 1;
    if (weir__cfg_get_duration(ld, t, "stale_on_error", section, 365ull * 86400000, true, &ms))
        k->set.stale_on_error = ms / 1000;
    if (weir__cfg_get_duration(ld, t, "lock", section, 600000, true, &ms)) {
        k->set.lock_timeout_ms = ms;
        k->set.no_lock = ms == 0;
    }
    weir__cfg_get_bool(ld, t, "store_cookies", section, &k->set.store_cookies);
    weir__cfg_get_size(ld, t, "max_file_size", section, 1ull << 32, &k->set.max_object_bytes);
    k->key_headers = list(ld, t, "key_headers", section, &k->n_key_headers);
    k->key_cookies = list(ld, t, "key_cookies", section, &k->n_key_cookies);
    k->bypass_methods = list(ld, t, "bypass_methods", section, &k->n_bypass_methods);
    k->bypass_headers = list(ld, t, "bypass_headers", section, &k->n_bypass_headers);
    k->bypass_cookies = list(ld, t, "bypass_cookies", section, &k->n_bypass_cookies);
    size_t n = 0;
    int line = 0;
    char **ips = weir__cfg_get_string_list(ld, t, "purge_ip_list", section, &n, &line);
    if (ips) {
        k->purge_ips = calloc(n ? n : 1, sizeof(*k->purge_ips));
        for (size_t i = 0; k->purge_ips && i < n; i++) {
            if (weir_cidr_parse(ips[i], &k->purge_ips[k->n_purge_ips]) != WEIR_OK)
                weir__cfg_err_at(ld, line,
                                 "'purge_ip_list' in [%s]: '%s' is not an address or CIDR block",
                                 section, ips[i]);
            else
                k->n_purge_ips++;
        }
        weir__cfg_free_list(ips, n);
    }
    k->purge_token = weir__cfg_dup_string(ld, t, "purge_token", section, &present);
    if (k->purge_token && !*k->purge_token)
        weir__cfg_err_at(ld, weir_toml_line(t), "'purge_token' in [%s] is empty", section);
    return true;
}

static void cache_link(loader *ld, void *conf, const char *section)
{
    cache_conf *k = conf;
    if (!weir__cfg_cache_find(ld, k->storage)) {
        weir__cfg_err_at(ld, 0, "[%s] names storage '%s', which has no [caches.%s]", section,
                         k->storage, k->storage);
        return;
    }
    for (size_t i = 0; i < ld->cfg->n_caches; i++)
        if (strcmp(ld->cfg->caches[i].name, k->storage) == 0)
            k->idx = i;
}

/* "set and not 0", as nginx's proxy_cache_bypass reads its values */
static bool set_value(weir_str v)
{
    return v.ptr && v.len && !(v.len == 1 && v.ptr[0] == '0');
}

static bool bypassed(weir_session *s, const cache_conf *k)
{
    weir_str m = weir_session_method(s);
    for (size_t i = 0; i < k->n_bypass_methods; i++)
        if (m.len == strlen(k->bypass_methods[i]) &&
            memcmp(m.ptr, k->bypass_methods[i], m.len) == 0)
            return true;
    weir_headers *h = weir_session_req_headers(s);
    for (size_t i = 0; i < k->n_bypass_headers; i++)
        if (set_value(weir_headers_get(h, k->bypass_headers[i])))
            return true;
    for (size_t i = 0; i < k->n_bypass_cookies; i++)
        if (set_value(weir__cookie(h, k->bypass_cookies[i])))
            return true;
    return false;
}

/* Appends "\nTAG:name=value" for each of the key's fields. */
static size_t add_part(char *out, size_t n, size_t cap, char tag, const char *name, weir_str v)
{
    size_t need = n + 3 + strlen(name) + 1 + v.len;
    if (need > cap)
        return cap + 1;
    out[n++] = '\n';
    out[n++] = tag;
    out[n++] = ':';
    memcpy(out + n, name, strlen(name));
    n += strlen(name);
    out[n++] = v.ptr ? '=' : '!'; /* absent and empty differ */
    if (v.ptr && v.len)
        memcpy(out + n, v.ptr, v.len);
    return n + v.len;
}

size_t weir__plugin_cache_key(weir_session *s, const void *conf, char *out, size_t cap)
{
    const cache_conf *k = conf;
    size_t n = 0;
    if (k && k->ns) {
        size_t l = strlen(k->ns);
        if (l + 1 > cap)
            return cap + 1;
        memcpy(out, k->ns, l);
        out[l] = ' ';
        n = l + 1;
    }
    size_t d = weir_session_cache_default_key(s, out + n, cap - n);
    if (d > cap - n)
        return cap + 1;
    n += d;
    weir_headers *h = weir_session_req_headers(s);
    /* A key field or cookie sent twice is not cached: the key would hold
     * one value while the backend may answer for the other (or both). */
    for (size_t i = 0; k && i < k->n_key_headers; i++) {
        size_t lines = 0;
        for (size_t j = 0; j < weir_headers_count(h); j++) {
            weir_header f = weir_headers_at(h, j);
            lines += f.name.len == strlen(k->key_headers[i]) &&
                     strncasecmp(f.name.ptr, k->key_headers[i], f.name.len) == 0;
        }
        if (lines > 1)
            return 0;
    }
    for (size_t i = 0; k && i < k->n_key_cookies; i++)
        if (weir__cookie_count(h, k->key_cookies[i]) > 1)
            return 0;
    for (size_t i = 0; k && i < k->n_key_headers && n <= cap; i++)
        n = add_part(out, n, cap, 'h', k->key_headers[i], weir_headers_get(h, k->key_headers[i]));
    for (size_t i = 0; k && i < k->n_key_cookies && n <= cap; i++)
        n = add_part(out, n, cap, 'c', k->key_cookies[i], weir__cookie(h, k->key_cookies[i]));
    return n;
}

static bool purge_allowed(weir_session *s, const cache_conf *k)
{
    if (k->n_purge_ips &&
        weir__plugin_ip_in(k->purge_ips, k->n_purge_ips, weir_session_client_ip(s)))
        return true;
    if (!k->purge_token)
        return false;
    weir_str a = weir_headers_get(weir_session_req_headers(s), "authorization");
    size_t tl = strlen(k->purge_token);
    return a.len == 7 + tl && strncasecmp(a.ptr, "Bearer ", 7) == 0 &&
           CRYPTO_memcmp(a.ptr + 7, k->purge_token, tl) == 0;
}

static weir_phase_result purge(weir_plugin_call *c, const cache_conf *k, weir_cache *store)
{
    if (!purge_allowed(c->s, k))
        return weir__plugin_respond_text(c->s, 403, "Forbidden", 9);
    char key[4096];
    size_t n = weir__plugin_cache_key(c->s, k, key, sizeof(key));
    if (n > sizeof(key))
        return weir__plugin_respond_text(c->s, 414, "URI Too Long", 12);
    if (n == 0) /* a key field sent twice: no key */
        return weir__plugin_respond_text(c->s, 400, "Bad Request", 11);
    bool any = weir_cache_purge(store, key, n);
    weir_log(WEIR_LEVEL_INFO, "cache: PURGE %.*s from %.*s: %s", (int)n, key,
             (int)weir_session_client_ip(c->s).len, weir_session_client_ip(c->s).ptr,
             any ? "removed" : "not stored");
    return any ? weir__plugin_respond_text(c->s, 200, "Purged", 6)
               : weir__plugin_respond_text(c->s, 404, "Not Found", 9);
}

static weir_phase_result cache_request(weir_plugin_call *c)
{
    const cache_conf *k = c->plugin->conf;
    req_ctx *rc = c->req;
    if (k->idx >= rc->cfg->n_caches || !rc->cfg->caches[k->idx].store)
        return WEIR_PHASE_CONTINUE;
    weir_cache *store = rc->cfg->caches[k->idx].store->c;
    weir_str m = weir_session_method(c->s);
    if (m.len == 5 && memcmp(m.ptr, "PURGE", 5) == 0 && (k->n_purge_ips || k->purge_token))
        return purge(c, k, store);
    if (bypassed(c->s, k))
        return WEIR_PHASE_CONTINUE;
    rc->cache_conf = k;
    weir_session_cache_enable(c->s, store, &k->set);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_cache = {
    .category = "cache",
    .keys = (const weir_cfg_key[]){{"storage", WEIR_CT_STRING, NULL},
                                   {"namespace", WEIR_CT_STRING, NULL},
                                   {"key_headers", WEIR_CT_STRINGS, NULL},
                                   {"key_cookies", WEIR_CT_STRINGS, NULL},
                                   {"max_ttl", WEIR_CT_DURATION, NULL},
                                   {"max_heuristic_ttl", WEIR_CT_DURATION, NULL},
                                   {"stale_on_error", WEIR_CT_DURATION, NULL},
                                   {"targeted_field", WEIR_CT_STRING, NULL},
                                   {"store_cookies", WEIR_CT_BOOLEAN, NULL},
                                   {"lock", WEIR_CT_DURATION, NULL},
                                   {"bypass_methods", WEIR_CT_STRINGS, NULL},
                                   {"bypass_headers", WEIR_CT_STRINGS, NULL},
                                   {"bypass_cookies", WEIR_CT_STRINGS, NULL},
                                   {"purge_ip_list", WEIR_CT_STRINGS, NULL},
                                   {"purge_token", WEIR_CT_STRING, NULL},
                                   {"max_file_size", WEIR_CT_SIZE, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST) | WEIR_STEP_BIT(WEIR_STEP_REQUEST),
    .default_step = WEIR_STEP_REQUEST,
    .parse = cache_parse,
    .free = cache_free,
    .link = cache_link,
    .request = cache_request,
};
