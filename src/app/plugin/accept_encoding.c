/*
 * accept_encoding.c - rewrites the client's Accept-Encoding to the
 * encodings weir wants the backend (or a cache) to see, in weir's order of
 * preference: fewer variants of each response, and the backend never
 * asked for an encoding the client refused (q=0).
 *
 *     [plugins.ae]
 *     category = "accept_encoding"
 *     encodings = "zstd, br, gzip"   # preference, first best
 *     only_one_encoding = true       # keep only the best one the client takes
 *
 * A client that accepts none of them loses the field (identity). "*"
 * accepts every encoding not named with q=0.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/plugins.h"

#define MAX_ENC 8

typedef struct ae_conf {
    char *names[MAX_ENC];
    size_t n;
    bool only_one;
} ae_conf;

static void ae_free(void *conf)
{
    ae_conf *a = conf;
    for (size_t i = 0; i < a->n; i++)
        free(a->names[i]);
    free(a);
}

static bool ae_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    ae_conf *a = calloc(1, sizeof(*a));
    if (!a)
        return false;
    *conf = a;
    size_t n = 0;
    int line = 0;
    char **list = weir__cfg_get_string_list(ld, t, "encodings", section, &n, &line);
    if (!list) {
        if (!weir__cfg_entry_of(t, "encodings", &(weir_toml_entry){0}))
            weir__cfg_err_at(ld, weir_toml_line(t), "[%s] needs 'encodings'", section);
        return true;
    }
    if (!weir__cfg_split_commas(&list, &n))
        weir__cfg_err_at(ld, line, "out of memory");
    for (size_t i = 0; i < n; i++) {
        if (a->n == MAX_ENC || !weir__cfg_valid_token(list[i])) {
            weir__cfg_err_at(ld, line, "'encodings' in [%s]: '%s' %s", section, list[i],
                             a->n == MAX_ENC ? "is one too many (8 at most)"
                                             : "is not a content-coding");
            continue;
        }
        a->names[a->n++] = list[i];
        list[i] = NULL;
    }
    weir__cfg_free_list(list, n);
    weir__cfg_get_bool(ld, t, "only_one_encoding", section, &a->only_one);
    return true;
}

/* The q of `coding` in an Accept-Encoding value: -1 if not named, and the
 * q of "*" through *star (-1 without one). */
static int q_of(weir_str v, const char *coding, int *star)
{
    size_t cl = strlen(coding);
    int q = -1;
    *star = -1;
    const char *p = v.ptr, *end = v.ptr + v.len;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
            p++;
        const char *s = p;
        while (p < end && *p != ',' && *p != ';' && *p != ' ' && *p != '\t')
            p++;
        size_t nl = (size_t)(p - s);
        int qv = 1000;
        while (p < end && *p != ',') {
            if (*p == ';') {
                p++;
                while (p < end && (*p == ' ' || *p == '\t'))
                    p++;
                if (end - p >= 2 && (p[0] == 'q' || p[0] == 'Q') && p[1] == '=') {
                    p += 2;
                    int whole = p < end && *p == '1' ? 1 : 0;
                    int frac = 0, digits = 0;
                    if (p < end && (*p == '0' || *p == '1'))
                        p++;
                    if (p < end && *p == '.') {
                        p++;
                        while (p < end && *p >= '0' && *p <= '9' && digits < 3) {
                            frac = frac * 10 + (*p++ - '0');
                            digits++;
                        }
                        while (digits < 3) {
                            frac *= 10;
                            digits++;
                        }
                    }
                    qv = whole ? 1000 : frac;
                    continue;
                }
            }
            p++;
        }
        if (nl == cl && strncasecmp(s, coding, cl) == 0)
            q = qv;
        else if (nl == 1 && s[0] == '*')
            *star = qv;
    }
    return q;
}

static weir_phase_result ae_request(weir_plugin_call *c)
{
    const ae_conf *a = c->plugin->conf;
    weir_headers *h = weir_session_req_headers(c->s);
    weir_str v = weir_headers_get(h, "accept-encoding");
    if (!v.ptr) {
        return WEIR_PHASE_CONTINUE;
    }
    char out[128];
    size_t n = 0;
    for (size_t i = 0; i < a->n; i++) {
        int star;
        int q = q_of(v, a->names[i], &star);
        bool ok = q > 0 || (q < 0 && star > 0);
        if (!ok)
            continue;
        size_t l = strlen(a->names[i]);
        if (n + l + 2 >= sizeof(out))
            break;
        if (n) {
            out[n++] = ',';
            out[n++] = ' ';
        }
        memcpy(out + n, a->names[i], l);
        n += l;
        if (a->only_one)
            break;
    }
    if (n == 0) {
        weir_headers_remove(h, "accept-encoding");
        return WEIR_PHASE_CONTINUE;
    }
    char *copy = weir_session_alloc(c->s, n + 1);
    if (!copy)
        return WEIR_PHASE_ERROR;
    memcpy(copy, out, n);
    copy[n] = '\0';
    weir_headers_set_ref(h, WEIR_STR("Accept-Encoding"), (weir_str){copy, n});
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_accept_encoding = {
    .category = "accept_encoding",
    .keys = (const weir_cfg_key[]){{"encodings", WEIR_CT_STRINGS, NULL},
                                   {"only_one_encoding", WEIR_CT_BOOLEAN, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_EARLY_REQUEST,
    .parse = ae_parse,
    .free = ae_free,
    .request = ae_request,
};
