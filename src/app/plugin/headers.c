/*
 * headers.c - request_headers and response_headers: remove, rename, set,
 * set when absent and add header fields, with variables in the values
 * (app/vars.h). A location's proxy_*_headers and response_*_headers keys
 * are the same plugins, over the location's lists.
 *
 *     [plugins.h]
 *     category = "response_headers"
 *     add_headers = ["X-Served-By: $hostname"]
 *     set_headers = ["Cache-Control: no-store"]
 *     remove_headers = ["Server"]
 *     rename_headers = ["X-Old: X-New"]
 *     set_headers_not_exists = ["X-Frame-Options: DENY"]
 *
 * Order: remove, rename, set, set when absent, add.
 */
#include <stdlib.h>
#include <string.h>

#include "app/plugin/plugins.h"
#include "app/vars.h"

enum { H_REMOVE, H_RENAME, H_SET, H_SET_ABSENT, H_ADD, H_LISTS };

typedef struct headers_conf {
    const weir_cfg_headers *lists[H_LISTS]; /* NULL = none */
    weir_cfg_headers own[H_LISTS];          /* what parse read (unused when borrowed) */
    bool borrowed;
} headers_conf;

static const char *const keys[] = {"remove_headers",         "rename_headers", "set_headers",
                                   "set_headers_not_exists", "add_headers",    NULL};

static void headers_free(void *conf)
{
    headers_conf *h = conf;
    if (!h->borrowed) {
        for (int i = 0; i < H_LISTS; i++)
            weir__cfg_free_headers(&h->own[i]);
    }
    free(h);
}

static bool parse(loader *ld, const weir_toml_value *t, const char *section, void **conf,
                  bool request)
{
    headers_conf *h = calloc(1, sizeof(*h));
    if (!h)
        return false;
    for (int i = 0; i < H_LISTS; i++) {
        weir__cfg_load_headers(ld, t, keys[i], section, i != H_REMOVE, request && i == H_SET,
                               &h->own[i]);
        h->lists[i] = h->own[i].n ? &h->own[i] : NULL;
    }
    /* A rename's "value" is the new name: a field name too. */
    for (size_t i = 0; i < h->own[H_RENAME].n; i++) {
        const weir_cfg_header *e = &h->own[H_RENAME].v[i];
        weir_toml_entry en;
        weir__cfg_entry_of(t, "rename_headers", &en);
        const char *why = weir__cfg_forbidden_field(e->value, false);
        if (!weir__cfg_valid_token(e->value) || e->tmpl)
            weir__cfg_err_at(ld, en.line, "'rename_headers' in [%s]: '%s' is not a header name",
                             section, e->value);
        else if (why)
            weir__cfg_err_at(
                ld, en.line,
                "'rename_headers' in [%s]: '%s' cannot be changed by a header rule: %s", section,
                e->value, why);
    }
    *conf = h;
    return true;
}

static bool parse_request(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    return parse(ld, t, section, conf, true);
}

static bool parse_response(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    return parse(ld, t, section, conf, false);
}

void *weir__plugin_headers_borrow(const weir_cfg_headers *remove, const weir_cfg_headers *set,
                                  const weir_cfg_headers *add)
{
    headers_conf *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->borrowed = true;
    h->lists[H_REMOVE] = remove && remove->n ? remove : NULL;
    h->lists[H_SET] = set && set->n ? set : NULL;
    h->lists[H_ADD] = add && add->n ? add : NULL;
    return h;
}

/* The field's value for this request: as written (checked at load), or
 * rendered (vars.c keeps line breaks out). */
static weir_str value_of(const weir_cfg_header *e, weir_session *s)
{
    return e->tmpl ? weir__tmpl_render(e->tmpl, s) : (weir_str){e->value, e->value_len};
}

static weir_str name_of(const weir_cfg_header *e)
{
    return (weir_str){e->name, e->name_len};
}

/* The configuration lives as long as the request (its snapshot is pinned),
 * so its strings go into the table by reference. */
static void apply(weir_session *s, weir_headers *hs, const headers_conf *h)
{
    const weir_cfg_headers *l;
    if ((l = h->lists[H_REMOVE]))
        for (size_t i = 0; i < l->n; i++)
            weir_headers_remove(hs, l->v[i].name);
    if ((l = h->lists[H_RENAME])) {
        for (size_t i = 0; i < l->n; i++) {
            weir_str v = weir_headers_get(hs, l->v[i].name);
            if (!v.ptr)
                continue;
            weir_headers_remove(hs, l->v[i].name);
            weir_headers_set_ref(hs, (weir_str){l->v[i].value, l->v[i].value_len}, v);
        }
    }
    if ((l = h->lists[H_SET]))
        for (size_t i = 0; i < l->n; i++) {
            weir_str v = value_of(&l->v[i], s);
            if (v.ptr)
                weir_headers_set_ref(hs, name_of(&l->v[i]), v);
        }
    if ((l = h->lists[H_SET_ABSENT]))
        for (size_t i = 0; i < l->n; i++) {
            if (weir_headers_get(hs, l->v[i].name).ptr)
                continue;
            weir_str v = value_of(&l->v[i], s);
            if (v.ptr)
                weir_headers_add_ref(hs, name_of(&l->v[i]), v);
        }
    if ((l = h->lists[H_ADD]))
        for (size_t i = 0; i < l->n; i++) {
            weir_str v = value_of(&l->v[i], s);
            if (v.ptr)
                weir_headers_add_ref(hs, name_of(&l->v[i]), v);
        }
}

static weir_phase_result on_request(weir_plugin_call *c)
{
    apply(c->s, weir_session_req_headers(c->s), c->plugin->conf);
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result on_response(weir_plugin_call *c)
{
    weir_headers *h = weir_session_resp_headers(c->s);
    if (h)
        apply(c->s, h, c->plugin->conf);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_request_headers = {
    .category = "request_headers",
    .keys = keys,
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_PROXY_UPSTREAM,
    .parse = parse_request,
    .free = headers_free,
    .request = on_request,
};

const weir_plugin_def weir__plugin_response_headers = {
    .category = "response_headers",
    .keys = keys,
    .steps = 0, /* the response step only */
    .default_step = WEIR_STEP_RESPONSE,
    .parse = parse_response,
    .free = headers_free,
    .response = on_response,
};
