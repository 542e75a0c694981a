/*
 * sub_filter.c - replaces strings in response bodies as they stream
 * (nginx's sub_filter).
 *
 *     [plugins.links]
 *     category = "sub_filter"
 *     filters = [["http://example.com", "https://example.com"], ["Old Name", "New Name"]]
 *     once = false                 # every occurrence (default: the first of each, as nginx)
 *     ignore_case = true
 *     types = ["text/html", "text/css"]   # default ["text/html"]
 *
 * Only responses of those types and without a Content-Encoding are
 * touched (a compressed body is left whole); their Content-Length goes,
 * so they are sent chunked. A match may straddle two pieces of the body:
 * the last (longest pattern - 1) bytes of each piece wait for the next.
 * Memory per response: one buffer about the size of a piece.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/plugins.h"
#include "app/toml/toml.h"

#define MAX_FILTERS 16

typedef struct sub_conf {
    char *from[MAX_FILTERS], *to[MAX_FILTERS];
    size_t from_len[MAX_FILTERS], to_len[MAX_FILTERS];
    size_t n, longest;
    bool once, ignore_case;
    char **types;
    size_t n_types;
} sub_conf;

typedef struct sub_ctx {
    bool active;
    bool done_once[MAX_FILTERS];
    char *held; /* bytes kept back: a match may start there */
    size_t held_len;
    char *out;
    size_t out_cap;
} sub_ctx;

static void sub_free(void *conf)
{
    sub_conf *c = conf;
    for (size_t i = 0; i < c->n; i++) {
        free(c->from[i]);
        free(c->to[i]);
    }
    weir__cfg_free_list(c->types, c->n_types);
    free(c);
}

static bool sub_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    sub_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    weir_toml_entry e;
    if (!weir__cfg_entry_of(t, "filters", &e)) {
        weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'filters'", section);
        return true;
    }
    const char *usage = "must be a list of [\"FROM\", \"TO\"] pairs";
    if (weir_toml_type_of(e.value) != WEIR_TOML_ARRAY) {
        weir__cfg_err_at(ld, e.line, "'filters' in [%s] %s", section, usage);
        return true;
    }
    for (size_t i = 0; i < weir_toml_array_count(e.value); i++) {
        const weir_toml_value *pair = weir_toml_array_at(e.value, i);
        size_t fl = 0, tl = 0;
        const char *from =
            weir_toml_type_of(pair) == WEIR_TOML_ARRAY && weir_toml_array_count(pair) == 2
                ? weir_toml_string(weir_toml_array_at(pair, 0), &fl)
                : NULL;
        const char *to = from ? weir_toml_string(weir_toml_array_at(pair, 1), &tl) : NULL;
        if (!from || !to || fl == 0 || fl > 256 || strlen(from) != fl || strlen(to) != tl) {
            weir__cfg_err_at(ld, weir_toml_line(pair),
                             "'filters' in [%s] %s (FROM 1 to 256 "
                             "bytes)",
                             section, usage);
            continue;
        }
        if (c->n == MAX_FILTERS) {
            weir__cfg_err_at(ld, weir_toml_line(pair), "'filters' in [%s]: at most %d", section,
                             MAX_FILTERS);
            break;
        }
        c->from[c->n] = strndup(from, fl);
        c->to[c->n] = strndup(to, tl);
        c->from_len[c->n] = fl;
        c->to_len[c->n] = tl;
        if (fl > c->longest)
            c->longest = fl;
        c->n++;
    }
    c->once = true;
    weir__cfg_get_bool(ld, t, "once", section, &c->once);
    weir__cfg_get_bool(ld, t, "ignore_case", section, &c->ignore_case);
    int line = 0;
    c->types = weir__cfg_get_string_list(ld, t, "types", section, &c->n_types, &line);
    return true;
}

static bool type_matches(const sub_conf *c, weir_str ct)
{
    if (!ct.ptr)
        return false;
    size_t len = 0;
    while (len < ct.len && ct.ptr[len] != ';' && ct.ptr[len] != ' ')
        len++;
    if (!c->types)
        return len == 9 && strncasecmp(ct.ptr, "text/html", 9) == 0;
    for (size_t i = 0; i < c->n_types; i++) {
        if (strlen(c->types[i]) == len && strncasecmp(ct.ptr, c->types[i], len) == 0)
            return true;
    }
    return false;
}

static weir_phase_result sub_response(weir_plugin_call *call)
{
    const sub_conf *c = call->plugin->conf;
    sub_ctx *x = call->ctx;
    weir_headers *h = weir_session_resp_headers(call->s);
    if (!x || !h || c->n == 0 || weir_headers_get(h, "content-encoding").ptr ||
        !type_matches(c, weir_headers_get(h, "content-type")))
        return WEIR_PHASE_CONTINUE;
    x->active = true;
    weir_headers_remove(h, "content-length");
    return WEIR_PHASE_CONTINUE;
}

static bool match_at(const sub_conf *c, size_t k, const char *p)
{
    return c->ignore_case ? strncasecmp(p, c->from[k], c->from_len[k]) == 0
                          : memcmp(p, c->from[k], c->from_len[k]) == 0;
}

static bool grow(sub_ctx *x, size_t need)
{
    if (need <= x->out_cap)
        return true;
    size_t cap = x->out_cap ? x->out_cap : 16384;
    while (cap < need)
        cap *= 2;
    char *nb = realloc(x->out, cap);
    if (!nb)
        return false;
    x->out = nb;
    x->out_cap = cap;
    return true;
}

static weir_phase_result sub_body(weir_plugin_call *call, weir_str *chunk, bool end)
{
    const sub_conf *c = call->plugin->conf;
    sub_ctx *x = call->ctx;
    if (!x || !x->active)
        return WEIR_PHASE_CONTINUE;
    /* in = held + chunk, in one buffer (the tail of out). */
    size_t in_len = x->held_len + chunk->len;
    char *in = malloc(in_len ? in_len : 1);
    /* The output grows as replacements need it, from about a piece. */
    if (!in || !grow(x, in_len + 1)) {
        free(in);
        return WEIR_PHASE_ERROR;
    }
    size_t filled = 0;
    if (x->held_len && x->held) {
        memcpy(in, x->held, x->held_len);
        filled = x->held_len;
    }
    if (chunk->len) {
        memcpy(in + filled, chunk->ptr, chunk->len);
        filled += chunk->len;
    }
    in_len = filled;
    /* Bytes at or after `safe` might begin a match that the next piece
     * completes: they wait, unless this is the end. */
    size_t keep = end || c->longest <= 1 ? 0 : c->longest - 1;
    size_t safe = in_len > keep ? in_len - keep : 0;
    size_t i = 0, o = 0;
    while (i < in_len) {
        /* From `safe` on, a longer pattern may still complete with the
         * next piece: nothing there is decided yet. */
        if (i >= safe)
            break;
        size_t hit = c->n;
        for (size_t k = 0; k < c->n; k++) {
            if ((c->once && x->done_once[k]) || i + c->from_len[k] > in_len)
                continue;
            if (match_at(c, k, in + i)) {
                hit = k;
                break;
            }
        }
        if (hit < c->n) {
            if (!grow(x, o + c->to_len[hit] + (in_len - i) + 1)) {
                free(in);
                return WEIR_PHASE_ERROR;
            }
            memcpy(x->out + o, c->to[hit], c->to_len[hit]);
            o += c->to_len[hit];
            i += c->from_len[hit];
            x->done_once[hit] = true;
            continue;
        }
        x->out[o++] = in[i++];
    }
    free(x->held);
    x->held = NULL;
    x->held_len = in_len - i;
    if (x->held_len) {
        x->held = malloc(x->held_len);
        if (!x->held) {
            x->held_len = 0;
            free(in);
            return WEIR_PHASE_ERROR;
        }
        memcpy(x->held, in + i, x->held_len);
    }
    free(in);
    *chunk = (weir_str){x->out, o};
    return WEIR_PHASE_CONTINUE;
}

static void sub_logging(weir_plugin_call *call, const weir_session_stats *st)
{
    sub_ctx *x = call->ctx;
    if (!x)
        return;
    free(x->held);
    free(x->out);
    x->held = x->out = NULL;
}

const weir_plugin_def weir__plugin_sub_filter = {
    .category = "sub_filter",
    .keys = (const char *const[]){"filters", "once", "ignore_case", "types", NULL},
    .steps = 0,
    .default_step = WEIR_STEP_RESPONSE,
    .parse = sub_parse,
    .free = sub_free,
    .ctx_size = sizeof(sub_ctx),
    .response = sub_response,
    .response_body = sub_body,
    .logging = sub_logging,
};
