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
/* Op kinds past the lists': a set or add whose value has no variable. */
enum { H_SET_PLAIN = H_LISTS, H_ADD_PLAIN };

/* One field to change: the lists flattened in their order, so that a
 * request walks one array (most plugins have one or two entries). */
typedef struct header_op {
    uint8_t kind; /* H_* */
    const weir_cfg_header *e;
} header_op;

typedef struct headers_conf {
    const weir_cfg_headers *lists[H_LISTS]; /* NULL = none */
    weir_cfg_headers own[H_LISTS];          /* what parse read (unused when borrowed) */
    bool borrowed;
    size_t n_ops;
    header_op *ops;
} headers_conf;

static const weir_cfg_key keys[] = {
    {"remove_headers", WEIR_CT_STRINGS, NULL}, {"rename_headers", WEIR_CT_STRINGS, NULL},
    {"set_headers", WEIR_CT_STRINGS, NULL},    {"set_headers_not_exists", WEIR_CT_STRINGS, NULL},
    {"add_headers", WEIR_CT_STRINGS, NULL},    {NULL, 0, NULL}};

static void headers_free(void *conf)
{
    headers_conf *h = conf;
    if (!h->borrowed) {
        for (int i = 0; i < H_LISTS; i++)
            weir__cfg_free_headers(&h->own[i]);
    }
    free(h->ops);
    free(h);
}

/* h->ops from h->lists; false when out of memory. */
static bool flatten(headers_conf *h)
{
    size_t n = 0;
    for (int k = 0; k < H_LISTS; k++)
        n += h->lists[k] ? h->lists[k]->n : 0;
    h->ops = calloc(n ? n : 1, sizeof(*h->ops));
    if (!h->ops)
        return false;
    for (int k = 0; k < H_LISTS; k++) {
        for (size_t i = 0; h->lists[k] && i < h->lists[k]->n; i++) {
            const weir_cfg_header *e = &h->lists[k]->v[i];
            int kind = k == H_SET && !e->tmpl   ? H_SET_PLAIN
                       : k == H_ADD && !e->tmpl ? H_ADD_PLAIN
                                                : k;
            h->ops[h->n_ops++] = (header_op){(uint8_t)kind, e};
        }
    }
    return true;
}

static bool parse(loader *ld, const weir_toml_value *t, const char *section, void **conf,
                  bool request)
{
    headers_conf *h = calloc(1, sizeof(*h));
    if (!h)
        return false;
    for (int i = 0; i < H_LISTS; i++) {
        weir__cfg_load_headers(ld, t, keys[i].name, section, i != H_REMOVE, request && i == H_SET,
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
    if (!flatten(h)) {
        headers_free(h);
        return false;
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
    if (!flatten(h)) {
        free(h);
        return NULL;
    }
    return h;
}

/* a's fields, then b's. */
static void *headers_merge(const void *a, const void *b)
{
    const headers_conf *x = a, *y = b;
    headers_conf *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->borrowed = true;
    h->ops = calloc(x->n_ops + y->n_ops + 1, sizeof(*h->ops));
    if (!h->ops) {
        free(h);
        return NULL;
    }
    memcpy(h->ops, x->ops, x->n_ops * sizeof(*h->ops));
    memcpy(h->ops + x->n_ops, y->ops, y->n_ops * sizeof(*h->ops));
    h->n_ops = x->n_ops + y->n_ops;
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
static inline void apply(weir_session *s, weir_headers *hs, const headers_conf *h)
{
    for (size_t i = 0; i < h->n_ops; i++) {
        const weir_cfg_header *e = h->ops[i].e;
        weir_str v;
        switch (h->ops[i].kind) {
        case H_REMOVE:
            weir_headers_remove(hs, e->name);
            break;
        case H_RENAME:
            v = weir_headers_get(hs, e->name);
            if (v.ptr) {
                weir_headers_remove(hs, e->name);
                weir_headers_set_ref(hs, (weir_str){e->value, e->value_len}, v);
            }
            break;
        case H_SET_PLAIN:
            weir_headers_set_ref(hs, name_of(e), (weir_str){e->value, e->value_len});
            break;
        case H_ADD_PLAIN:
            weir_headers_add_ref(hs, name_of(e), (weir_str){e->value, e->value_len});
            break;
        case H_SET:
            if ((v = value_of(e, s)).ptr)
                weir_headers_set_ref(hs, name_of(e), v);
            break;
        case H_SET_ABSENT:
            if (!weir_headers_get(hs, e->name).ptr && (v = value_of(e, s)).ptr)
                weir_headers_add_ref(hs, name_of(e), v);
            break;
        default:
            if ((v = value_of(e, s)).ptr)
                weir_headers_add_ref(hs, name_of(e), v);
            break;
        }
    }
}

/* Either step: c->headers is the request's or the response's. */
static weir_phase_result on_call(weir_plugin_call *c)
{
    if (c->headers)
        apply(c->s, c->headers, c->plugin->conf);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_request_headers = {
    .category = "request_headers",
    .keys = keys,
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_PROXY_UPSTREAM,
    .parse = parse_request,
    .free = headers_free,
    .request = on_call,
    .merge = headers_merge,
};

const weir_plugin_def weir__plugin_response_headers = {
    .category = "response_headers",
    .keys = keys,
    .steps = 0, /* the response step only */
    .default_step = WEIR_STEP_RESPONSE,
    .parse = parse_response,
    .free = headers_free,
    .response = on_call,
    .merge = headers_merge,
};
