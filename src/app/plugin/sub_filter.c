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
 * Memory per response: two buffers about the size of a piece (what came
 * in, what goes out), reused from piece to piece.
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
    /* in[0..held_len): bytes kept back from the last piece (a match may
     * start there); a piece is appended to them. Both buffers are reused
     * from piece to piece and freed at logging. */
    char *in;
    size_t in_cap, held_len;
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
    if (weir_toml_array_count(e.value) == 0) {
        weir__cfg_err_at(ld, e.line, "'filters' in [%s] is empty: it %s", section, usage);
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
    /* A response without a body (HEAD, 204, 304) keeps its Content-Length:
     * it tells the length of the body a GET would get. */
    int status = weir_session_resp_status(call->s);
    weir_str m = weir_session_method(call->s);
    if (!x || !h || c->n == 0 || status == 204 || status == 304 || status < 200 ||
        (m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0) ||
        weir_headers_get(h, "content-encoding").ptr ||
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

/* *buf with room for need bytes (its contents kept). */
static bool grow(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap : 16384;
    while (n < need)
        n *= 2;
    char *nb = realloc(*buf, n);
    if (!nb)
        return false;
    *buf = nb;
    *cap = n;
    return true;
}

static weir_phase_result sub_body(weir_plugin_call *call, weir_str *chunk, bool end)
{
    const sub_conf *c = call->plugin->conf;
    sub_ctx *x = call->ctx;
    if (!x || !x->active)
        return WEIR_PHASE_CONTINUE;
    /* in = held + chunk; the output grows as replacements need it, from
     * about a piece. */
    size_t in_len = x->held_len + chunk->len;
    if (!grow(&x->in, &x->in_cap, in_len + 1) || !grow(&x->out, &x->out_cap, in_len + 1))
        return WEIR_PHASE_ERROR;
    if (chunk->len)
        memcpy(x->in + x->held_len, chunk->ptr, chunk->len);
    const char *in = x->in;
    /* Bytes at or after `safe` might begin a match that the next piece
     * completes: they wait, unless this is the end. */
    size_t keep = end || c->longest <= 1 ? 0 : c->longest - 1;
    size_t safe = in_len > keep ? in_len - keep : 0;
    size_t i = 0, o = 0;
    while (i < safe) {
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
            if (!grow(&x->out, &x->out_cap, o + c->to_len[hit] + (in_len - i) + 1))
                return WEIR_PHASE_ERROR;
            memcpy(x->out + o, c->to[hit], c->to_len[hit]);
            o += c->to_len[hit];
            i += c->from_len[hit];
            x->done_once[hit] = true;
            continue;
        }
        x->out[o++] = in[i++];
    }
    /* What was not decided waits at the start of in for the next piece. */
    x->held_len = in_len - i;
    memmove(x->in, in + i, x->held_len);
    *chunk = (weir_str){x->out, o};
    return WEIR_PHASE_CONTINUE;
}

static void sub_logging(weir_plugin_call *call, const weir_session_stats *st)
{
    sub_ctx *x = call->ctx;
    if (!x)
        return;
    free(x->in);
    free(x->out);
    x->in = x->out = NULL;
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
