/*
 * registry.c - the plugin categories weir knows (a static table, as
 * nginx's ngx_modules[]), and what every plugin shares: steps, freeing,
 * state references (see plugin.h).
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/config/config.h"
#include "app/plugin/plugin.h"
#include "app/plugin/plugins.h"

const weir_plugin_def *const weir__plugin_defs[] = {
    /* built from a location's or server's own keys (also usable by name) */
    &weir__plugin_echo,
    &weir__plugin_body_limit,
    &weir__plugin_rewrite,
    &weir__plugin_request_headers,
    &weir__plugin_response_headers,
    &weir__plugin_redirect,
    /* Pingap's request plugins */
    &weir__plugin_mock,
    &weir__plugin_ping,
    &weir__plugin_request_id,
    &weir__plugin_limit,
    &weir__plugin_ip_restriction,
    &weir__plugin_referer_restriction,
    &weir__plugin_ua_restriction,
    &weir__plugin_cors,
    &weir__plugin_traffic_splitting,
    &weir__plugin_accept_encoding,
    &weir__plugin_stats,
    &weir__plugin_csrf,
    &weir__plugin_basic_auth,
    &weir__plugin_forward_auth,
    &weir__plugin_combined_auth,
    &weir__plugin_jwt,
    &weir__plugin_key_auth,
    &weir__plugin_sub_filter,
    &weir__plugin_cache,
    /* body plugins */
    &weir__plugin_compression,
    &weir__plugin_directory,
};
const size_t weir__n_plugin_defs = sizeof(weir__plugin_defs) / sizeof(weir__plugin_defs[0]);

const weir_plugin_def *weir__plugin_def(const char *category)
{
    for (size_t i = 0; i < weir__n_plugin_defs; i++) {
        if (strcmp(weir__plugin_defs[i]->category, category) == 0)
            return weir__plugin_defs[i];
    }
#ifdef WEIR_TEST_PLUGINS
    /* a test build's own categories (test_body.c), never suggested */
    if (strcmp(weir__plugin_test_request_body.category, category) == 0)
        return &weir__plugin_test_request_body;
#endif
    return NULL;
}

static const char *const step_names[WEIR_STEP_COUNT] = {
    "early_request", "request", "proxy_upstream", "upstream_response", "response",
};

int weir__plugin_step_of(const char *name)
{
    for (int i = 0; i < WEIR_STEP_COUNT; i++) {
        if (strcmp(step_names[i], name) == 0)
            return i;
    }
    return -1;
}

const char *weir__plugin_step_name(weir_plugin_step step)
{
    return step < WEIR_STEP_COUNT ? step_names[step] : "?";
}

bool weir__plugin_states(weir_config *cfg, const weir_config *old)
{
    if (!weir__cfg_cache_stores(cfg, old))
        return false;
    for (size_t i = 0; i < cfg->n_plugins; i++) {
        weir_plugin *p = cfg->plugins[i];
        if (!p->def || !p->def->state_new || p->state)
            continue;
        for (size_t k = 0; old && k < old->n_plugins; k++) {
            const weir_plugin *o = old->plugins[k];
            if (o->state && o->def == p->def && strcmp(o->name, p->name) == 0) {
                atomic_fetch_add_explicit(&o->state->refs, 1, memory_order_relaxed);
                p->state = o->state;
                break;
            }
        }
        if (p->state)
            continue;
        weir_plugin_state *st = calloc(1, sizeof(*st));
        if (!st || !(st->data = p->def->state_new(p->conf))) {
            free(st);
            return false;
        }
        atomic_init(&st->refs, 1);
        st->free = p->def->state_free;
        p->state = st;
    }
    return true;
}

void weir__plugin_state_unref(weir_plugin_state *st)
{
    if (!st || atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (st->free)
        st->free(st->data);
    free(st);
}

void weir__plugin_free(weir_plugin *p)
{
    if (!p)
        return;
    if (p->def && p->def->free && p->conf)
        p->def->free(p->conf);
    weir__plugin_state_unref(p->state);
    free(p->name);
    free(p);
}

weir_phase_result weir__plugin_respond_text(weir_session *s, int status, const char *text,
                                            size_t len)
{
    weir_header h = {WEIR_STR("Content-Type"), WEIR_STR("text/plain; charset=utf-8")};
    if (weir_session_respond(s, status, &h, 1, text, len) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

weir_str weir__plugin_field(weir_session *s, const weir_headers *h, const char *name)
{
    size_t nl = strlen(name), n = weir_headers_count(h), count = 0, total = 0;
    weir_str first = WEIR_STR_NULL;
    for (size_t i = 0; i < n; i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len == nl && strncasecmp(f.name.ptr, name, nl) == 0) {
            if (!count++)
                first = f.value;
            total += f.value.len + 2;
        }
    }
    if (count < 2)
        return first;
    char *out = weir_session_alloc(s, total);
    if (!out)
        return first;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len == nl && strncasecmp(f.name.ptr, name, nl) == 0) {
            if (o) {
                out[o++] = ',';
                out[o++] = ' ';
            }
            memcpy(out + o, f.value.ptr, f.value.len);
            o += f.value.len;
        }
    }
    return (weir_str){out, o};
}

/* A strong validator no longer names these bytes: it becomes weak. */
void weir__plugin_weaken_etag(weir_session *s, weir_headers *h)
{
    weir_str et = weir_headers_get(h, "etag");
    if (!et.ptr || (et.len >= 2 && et.ptr[0] == 'W' && et.ptr[1] == '/'))
        return;
    char *w = weir_session_alloc(s, et.len + 3);
    if (!w)
        return;
    memcpy(w, "W/", 2);
    memcpy(w + 2, et.ptr, et.len);
    w[et.len + 2] = '\0';
    weir_headers_set(h, "ETag", w);
}

bool weir__plugin_parse_path(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    bool present;
    char *path = weir__cfg_dup_string(ld, t, "path", section, &present);
    if (!path) {
        if (!present)
            weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'path'", section);
        return false;
    }
    if (path[0] != '/') {
        weir_toml_entry e;
        weir__cfg_entry_of(t, "path", &e);
        weir__cfg_err_at(ld, e.line, "'path' in [%s] must start with '/'", section);
    }
    *conf = path;
    return true;
}
