/*
 * traffic_splitting.c - sends a share of a location's requests to another
 * upstream (a canary, a new version), at random or stuck to a client by a
 * cookie or header value.
 *
 *     [plugins.canary]
 *     category = "traffic_splitting"
 *     upstream = "v2"
 *     weight = 10                 # percent of the requests, 0..100
 *     stickiness = "cookie"       # or "header"; absent: each request on its own
 *     sticky_key = "uid"
 *
 * Sticky: a client whose cookie (or header) value hashes into the share
 * always goes to `upstream`, the others never; a request without that
 * value is chosen at random.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "app/app_int.h"
#include "app/fields.h"
#include "app/plugin/plugins.h"

typedef enum sticky { S_NONE, S_COOKIE, S_HEADER } sticky;

typedef struct split_conf {
    char *upstream_name;
    const weir_cfg_upstream *upstream; /* resolved by link */
    uint32_t weight;
    sticky stickiness;
    char *key;
    int line; /* of 'upstream', for link's error */
} split_conf;

static void split_free(void *conf)
{
    split_conf *c = conf;
    free(c->upstream_name);
    free(c->key);
    free(c);
}

static bool split_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    split_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    bool present;
    c->upstream_name = weir__cfg_dup_string(ld, t, "upstream", section, &present);
    weir_toml_entry ue;
    c->line = weir__cfg_entry_of(t, "upstream", &ue) ? ue.line : weir_toml_line(t);
    if (!c->upstream_name && !present)
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'upstream'", section);
    int64_t v;
    if (weir__cfg_get_int(ld, t, "weight", section, 0, 100, &v))
        c->weight = (uint32_t)v;
    else if (!weir__cfg_entry_of(t, "weight", &(weir_toml_entry){0}))
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'weight' (percent)", section);
    char *s = weir__cfg_dup_string(ld, t, "stickiness", section, &present);
    weir_toml_entry e;
    if (s) {
        if (strcmp(s, "cookie") == 0)
            c->stickiness = S_COOKIE;
        else if (strcmp(s, "header") == 0)
            c->stickiness = S_HEADER;
        else {
            weir__cfg_entry_of(t, "stickiness", &e);
            weir__cfg_err_at(ld, e.line, "'stickiness' in [%s] must be cookie or header, not '%s'",
                             section, s);
        }
        free(s);
    }
    c->key = weir__cfg_dup_string(ld, t, "sticky_key", section, &present);
    if (c->stickiness == S_NONE && present) {
        weir__cfg_entry_of(t, "sticky_key", &e);
        weir__cfg_err_at(ld, e.line,
                         "'sticky_key' in [%s] needs 'stickiness' (cookie or header): without "
                         "it the split is random",
                         section);
    }
    if (c->stickiness != S_NONE && (!c->key || !c->key[0]))
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'sticky_key' with 'stickiness'",
                         section);
    return true;
}

static void split_link(loader *ld, void *conf, const char *section)
{
    split_conf *c = conf;
    if (!c->upstream_name)
        return;
    const weir_config *cfg = ld->cfg;
    for (size_t i = 0; i < cfg->n_upstreams; i++) {
        if (strcmp(cfg->upstreams[i].name, c->upstream_name) == 0) {
            c->upstream = &cfg->upstreams[i];
            return;
        }
    }
    const char *known[64] = {0};
    for (size_t k = 0; k < cfg->n_upstreams && k < 63; k++)
        known[k] = cfg->upstreams[k].name;
    const char *s = weir__cfg_suggest(c->upstream_name, known);
    weir__cfg_err_at(ld, c->line, "[%s] refers to undefined upstream '%s'%s%s%s", section,
                     c->upstream_name, s ? "; did you mean '" : "", s ? s : "", s ? "'?" : "");
}

/* 0..99, from the key's bytes (FNV-1a, then mixed), or at random. */
static uint32_t bucket(weir_str key)
{
    if (key.ptr && key.len) {
        uint64_t h = 0xcbf29ce484222325ull;
        for (size_t i = 0; i < key.len; i++) {
            h ^= (unsigned char)key.ptr[i];
            h *= 0x100000001b3ull;
        }
        h ^= h >> 31;
        h *= 0x7fb5d329728ea185ull;
        h ^= h >> 27;
        return (uint32_t)(h % 100);
    }
    static __thread uint64_t x;
    if (!x && getrandom(&x, sizeof(x), 0) != sizeof(x))
        x = (uint64_t)time(NULL) | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return (uint32_t)(x % 100);
}

static weir_phase_result split_request(weir_plugin_call *c)
{
    const split_conf *sc = c->plugin->conf;
    req_ctx *rc = c->req;
    if (!sc->upstream || sc->weight == 0)
        return WEIR_PHASE_CONTINUE;
    weir_headers *h = weir_session_req_headers(c->s);
    weir_str key = sc->stickiness == S_COOKIE   ? weir__cookie(h, sc->key)
                   : sc->stickiness == S_HEADER ? weir_headers_get(h, sc->key)
                                                : WEIR_STR_NULL;
    if (bucket(key) < sc->weight)
        rc->upstream = sc->upstream;
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_traffic_splitting = {
    .category = "traffic_splitting",
    .keys = (const weir_cfg_key[]){{"upstream", WEIR_CT_STRING, NULL},
                                   {"weight", WEIR_CT_INTEGER, NULL},
                                   {"stickiness", WEIR_CT_STRING, NULL},
                                   {"sticky_key", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    /* before the backend is chosen */
    .steps = WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST) | WEIR_STEP_BIT(WEIR_STEP_REQUEST),
    .default_step = WEIR_STEP_REQUEST,
    .parse = split_parse,
    .free = split_free,
    .link = split_link,
    .request = split_request,
};
