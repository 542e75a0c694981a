/*
 * compression.c - compresses response bodies as they stream (nginx's gzip,
 * brotli and zstd filters; Pingap's compression plugin), and decodes a
 * compressed upstream response for a client that cannot read it.
 *
 *     [plugins.gz]
 *     category = "compression"
 *     gzip_level = 6               # 0 turns gzip off
 *     br_level = 4                 # 0 (off) unless given
 *     zstd_level = 3               # 0 (off) unless given
 *     encodings = "zstd, br, gzip" # preference among what the client takes equally
 *     min_length = 256             # a smaller Content-Length is sent as it is
 *     types = ["text/", "application/json"]   # prefixes; "*" for any
 *     decompression = true         # decode gzip/br/zstd/deflate for clients without it
 *
 * With no *_level key at all, gzip 6 is on (nginx's gzip_comp_level 6);
 * br and zstd are on when their level is given (Pingap: 0 means off).
 * Their encoders hold more memory per response (codec.h: brotli 5 MiB at
 * level 5, zstd 2.5 MiB at level 3, gzip 261 KiB).
 *
 * A response is compressed when the client accepts an encoding that is on
 * (Accept-Encoding, q-values: q=0 never), its type is one of `types`, its
 * Content-Length (if any) is at least min_length, and it is not HEAD, 1xx,
 * 204, 206 or 304, not already encoded, and not Cache-Control:
 * no-transform. A HEAD answer gets the fields its GET would (Content-Encoding,
 * Vary, the weak ETag, no Content-Length), a 304 the Vary and weak ETag. Then Content-Length and
 * Accept-Ranges go (the body is sent chunked), Content-Encoding is set, a strong ETag becomes weak,
 * and Vary: Accept-Encoding is added (also to an eligible response sent uncompressed, for caches).
 * Each piece is compressed as it passes, and the encoder is flushed when the source pauses
 * (weir_session_body_flushing) so server-sent events stay live.
 *
 * Its response hooks run after every other plugin's (runs_last): a
 * sub_filter listed after it still sees the plain body. Memory per
 * response: one encoder (and decoder) of codec.h's bounded windows.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/codec.h"
#include "app/plugin/plugins.h"
#include "app/toml/toml.h"

#define MAX_TYPES 32

typedef struct comp_conf {
    int level[WEIR_ENC_COUNT]; /* 0: off */
    weir_enc order[WEIR_ENC_COUNT];
    size_t n_order;
    uint64_t min_length;
    char **types; /* prefixes, lower case; NULL: the defaults */
    size_t n_types;
    bool decompression;
} comp_conf;

typedef struct comp_ctx {
    bool chosen;       /* want is decided */
    weir_enc want;     /* what the client gets, IDENTITY: nothing it accepts is on */
    uint32_t accepts;  /* bit e: the client accepts coding e (q > 0) */
    weir_codec *enc;   /* the response is compressed */
    weir_codec *dec;   /* the response is decoded first */
    bool active, done; /* encoding or decoding; the end was seen */
} comp_ctx;

static const char *const default_types[] = {
    "text/",
    "application/json",
    "application/javascript",
    "application/xml",
    "image/svg+xml",
    "application/wasm",
    "application/x-javascript",
    "application/ld+json",
    "application/manifest+json",
    "application/rss+xml",
    "application/atom+xml",
    "application/xhtml+xml",
    "application/problem+json",
    "application/graphql-response+json",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
};

static void comp_free(void *conf)
{
    comp_conf *c = conf;
    weir__cfg_free_list(c->types, c->n_types);
    free(c);
}

static bool comp_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    comp_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    static const struct {
        const char *key;
        weir_enc e;
        int max, def;
    } levels[] = {
        {"gzip_level", WEIR_ENC_GZIP, 9, 6},
        {"br_level", WEIR_ENC_BR, 11, 0},
        {"zstd_level", WEIR_ENC_ZSTD, 19, 0},
    };
    bool any = false;
    for (size_t i = 0; i < 3; i++) {
        int64_t v;
        if (weir__cfg_get_int(ld, t, levels[i].key, section, 0, levels[i].max, &v)) {
            c->level[levels[i].e] = (int)v;
            any = true;
        } else if (weir__cfg_entry_of(t, levels[i].key, &(weir_toml_entry){0})) {
            any = true; /* an invalid value: reported */
        }
    }
    if (!any) {
        for (size_t i = 0; i < 3; i++)
            c->level[levels[i].e] = levels[i].def;
    }
    size_t n = 0;
    int line = weir_toml_line(t);
    char **list = weir__cfg_get_string_list(ld, t, "encodings", section, &n, &line);
    if (list) {
        if (!weir__cfg_split_commas(&list, &n))
            weir__cfg_err_at(ld, line, "out of memory");
        for (size_t i = 0; i < n; i++) {
            int e = weir__enc_of(list[i], strlen(list[i]));
            if (e != WEIR_ENC_GZIP && e != WEIR_ENC_BR && e != WEIR_ENC_ZSTD) {
                weir__cfg_err_at(ld, line, "'encodings' in [%s]: '%s' is not gzip, br or zstd",
                                 section, list[i]);
                continue;
            }
            bool dup = false;
            for (size_t k = 0; k < c->n_order; k++)
                dup = dup || c->order[k] == (weir_enc)e;
            if (!dup)
                c->order[c->n_order++] = (weir_enc)e;
        }
        weir__cfg_free_list(list, n);
    } else {
        /* Pingap's fixed order: the smallest output first. */
        c->order[0] = WEIR_ENC_ZSTD;
        c->order[1] = WEIR_ENC_BR;
        c->order[2] = WEIR_ENC_GZIP;
        c->n_order = 3;
    }
    weir__cfg_get_size(ld, t, "min_length", section, UINT32_MAX, &c->min_length);
    c->types = weir__cfg_get_string_list(ld, t, "types", section, &c->n_types, &line);
    if (c->types && c->n_types > MAX_TYPES)
        weir__cfg_err_at(ld, line, "'types' in [%s]: at most %d", section, MAX_TYPES);
    for (size_t i = 0; c->types && i < c->n_types; i++) {
        for (char *p = c->types[i]; *p; p++)
            *p = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
    }
    weir__cfg_get_bool(ld, t, "decompression", section, &c->decompression);
    /* Pingap's "mode": both of its modes are what this plugin does. */
    bool present = false;
    char *mode = weir__cfg_dup_string(ld, t, "mode", section, &present);
    if (present && (!mode || (strcmp(mode, "response") != 0 && strcmp(mode, "upstream") != 0)))
        weir__cfg_err_at(ld, line, "'mode' in [%s] must be \"response\" or \"upstream\"", section);
    free(mode);
    return true;
}

static bool type_ok(const comp_conf *c, weir_str ct)
{
    if (!ct.ptr)
        return false;
    size_t len = 0;
    while (len < ct.len && ct.ptr[len] != ';' && ct.ptr[len] != ' ' && ct.ptr[len] != '\t')
        len++;
    size_t n = c->types ? c->n_types : sizeof(default_types) / sizeof(default_types[0]);
    for (size_t i = 0; i < n; i++) {
        const char *p = c->types ? c->types[i] : default_types[i];
        size_t pl = strlen(p);
        if ((pl == 1 && p[0] == '*') || (pl <= len && strncasecmp(ct.ptr, p, pl) == 0))
            return true;
    }
    return false;
}

/* Decides what the client gets, from its own Accept-Encoding. */
static void choose(const comp_conf *c, comp_ctx *x, weir_session *s)
{
    if (x->chosen)
        return;
    x->chosen = true;
    weir_str ae = weir__plugin_field(s, weir_session_req_headers(s), "accept-encoding");
    weir_enc on[WEIR_ENC_COUNT];
    size_t n = 0;
    for (size_t i = 0; i < c->n_order; i++) {
        if (c->level[c->order[i]] > 0)
            on[n++] = c->order[i];
    }
    x->want = weir__enc_choose(ae, on, n);
    for (int e = WEIR_ENC_GZIP; e < WEIR_ENC_COUNT; e++) {
        if (weir__enc_q(ae, (weir_enc)e) > 0)
            x->accepts |= 1u << e;
    }
}

static weir_phase_result comp_request(weir_plugin_call *call)
{
    if (call->ctx)
        choose(call->plugin->conf, call->ctx, call->s);
    return WEIR_PHASE_CONTINUE;
}

/* True if the comma-separated list v holds `token` (case-insensitive;
 * parameters after ';' ignored). */
static bool list_has(weir_str v, const char *token)
{
    size_t tl = strlen(token), i = 0;
    while (i < v.len) {
        while (i < v.len && (v.ptr[i] == ' ' || v.ptr[i] == '\t' || v.ptr[i] == ','))
            i++;
        size_t start = i;
        while (i < v.len && v.ptr[i] != ',' && v.ptr[i] != ';' && v.ptr[i] != ' ' &&
               v.ptr[i] != '\t' && v.ptr[i] != '=')
            i++;
        if (i - start == tl && strncasecmp(v.ptr + start, token, tl) == 0)
            return true;
        while (i < v.len && v.ptr[i] != ',')
            i++;
    }
    return false;
}

/* True if any field `name` lists `token`. */
static bool field_has(const weir_headers *h, const char *name, const char *token)
{
    size_t nl = strlen(name);
    for (size_t i = 0, n = weir_headers_count(h); i < n; i++) {
        weir_header f = weir_headers_at(h, i);
        if (f.name.len == nl && strncasecmp(f.name.ptr, name, nl) == 0 && list_has(f.value, token))
            return true;
    }
    return false;
}

/* Adds Accept-Encoding to Vary unless it is there (or Vary is "*"). */
static void add_vary(weir_headers *h)
{
    if (!field_has(h, "vary", "accept-encoding") && !field_has(h, "vary", "*"))
        weir_headers_add(h, "Vary", "Accept-Encoding");
}

/* A Content-Length under min_length (one without a length is long enough). */
static bool too_short(const comp_conf *c, weir_headers *h)
{
    weir_str cl = weir_headers_get(h, "content-length");
    if (!c->min_length || !cl.ptr)
        return false;
    uint64_t len = 0;
    for (size_t i = 0; i < cl.len && cl.ptr[i] >= '0' && cl.ptr[i] <= '9'; i++)
        len = len * 10 + (uint64_t)(cl.ptr[i] - '0');
    return len < c->min_length;
}

static weir_phase_result comp_response(weir_plugin_call *call)
{
    const comp_conf *c = call->plugin->conf;
    comp_ctx *x = call->ctx;
    weir_session *s = call->s;
    weir_headers *h = call->headers;
    if (!x || !h)
        return WEIR_PHASE_CONTINUE;
    choose(c, x, s);
    int status = weir_session_resp_status(s);
    weir_str m = weir_session_method(s);
    bool head = m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0;
    if (status < 200 || status == 204 || status == 206 ||
        /* RFC 9111 5.2.2.6: a proxy leaves such a body alone */
        field_has(h, "cache-control", "no-transform"))
        return WEIR_PHASE_CONTINUE;
    if (head || status == 304) {
        /* No body to encode, but the fields a GET would get (RFC 9110
         * 9.3.2), and a 304's validator as the compressed 200 had it
         * (RFC 9110 15.4.5), so caches match the two. */
        weir_str ce = weir__plugin_field(s, h, "content-encoding");
        weir_str ct = weir_headers_get(h, "content-type");
        if ((ce.ptr && !(ce.len == 8 && strncasecmp(ce.ptr, "identity", 8) == 0)) ||
            (ct.ptr && !type_ok(c, ct)) || (!ct.ptr && status != 304))
            return WEIR_PHASE_CONTINUE;
        if (head && too_short(c, h))
            return WEIR_PHASE_CONTINUE;
        add_vary(h);
        if (x->want == WEIR_ENC_IDENTITY)
            return WEIR_PHASE_CONTINUE;
        weir__plugin_weaken_etag(s, h);
        if (head) {
            weir_headers_set(h, "Content-Encoding", weir__enc_name(x->want));
            weir_headers_remove(h, "content-length");
            weir_headers_remove(h, "accept-ranges");
        }
        return WEIR_PHASE_CONTINUE;
    }
    weir_str ce = weir__plugin_field(s, h, "content-encoding");
    bool encoded = ce.ptr && !(ce.len == 8 && strncasecmp(ce.ptr, "identity", 8) == 0);
    if (encoded) {
        /* Decoded only for a client that cannot read it, and only a
         * single coding we know. */
        int e = weir__enc_of(ce.ptr, ce.len);
        if (!c->decompression || e <= WEIR_ENC_IDENTITY || (x->accepts >> e & 1))
            return WEIR_PHASE_CONTINUE;
        x->dec = weir__codec_decoder((weir_enc)e, 0);
        if (!x->dec)
            return WEIR_PHASE_CONTINUE;
        weir_headers_remove(h, "content-encoding");
        add_vary(h); /* decoded for some clients, not for others */
    }
    bool eligible = type_ok(c, weir_headers_get(h, "content-type"));
    if (eligible && too_short(c, h))
        eligible = false;
    if (eligible)
        add_vary(h);
    if (eligible && x->want != WEIR_ENC_IDENTITY) {
        x->enc = weir__codec_encoder(x->want, c->level[x->want]);
        if (x->enc)
            weir_headers_set(h, "Content-Encoding", weir__enc_name(x->want));
    }
    if (!x->enc && !x->dec)
        return WEIR_PHASE_CONTINUE;
    x->active = true;
    weir_headers_remove(h, "content-length");
    weir_headers_remove(h, "accept-ranges");
    weir__plugin_weaken_etag(s, h);
    return WEIR_PHASE_CONTINUE;
}

static weir_phase_result comp_body(weir_plugin_call *call, weir_str *chunk, bool end)
{
    comp_ctx *x = call->ctx;
    if (!x || !x->active || x->done)
        return WEIR_PHASE_CONTINUE;
    weir_str piece = *chunk;
    if (x->dec) {
        weir_str out;
        int mode = end ? WEIR_CODEC_END : WEIR_CODEC_RUN;
        if (weir__codec_run(x->dec, piece.ptr, piece.len, mode, &out) != WEIR_OK)
            return WEIR_PHASE_ERROR; /* a corrupt body: the response is cut */
        piece = out;
    }
    if (x->enc) {
        int mode = end ? WEIR_CODEC_END : call->flush ? WEIR_CODEC_FLUSH : WEIR_CODEC_RUN;
        if (!piece.len && mode == WEIR_CODEC_RUN) {
            *chunk = piece;
            return WEIR_PHASE_CONTINUE;
        }
        weir_str out;
        if (weir__codec_run(x->enc, piece.ptr, piece.len, mode, &out) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        piece = out;
    }
    x->done = end;
    *chunk = piece;
    return WEIR_PHASE_CONTINUE;
}

static void comp_logging(weir_plugin_call *call, const weir_session_stats *st)
{
    comp_ctx *x = call->ctx;
    if (!x)
        return;
    weir__codec_free(x->enc);
    weir__codec_free(x->dec);
    x->enc = x->dec = NULL;
}

const weir_plugin_def weir__plugin_compression = {
    .category = "compression",
    .keys = (const weir_cfg_key[]){{"gzip_level", WEIR_CT_INTEGER, NULL},
                                   {"br_level", WEIR_CT_INTEGER, NULL},
                                   {"zstd_level", WEIR_CT_INTEGER, NULL},
                                   {"encodings", WEIR_CT_STRINGS, NULL},
                                   {"min_length", WEIR_CT_SIZE, NULL},
                                   {"types", WEIR_CT_STRINGS, NULL},
                                   {"decompression", WEIR_CT_BOOLEAN, NULL},
                                   {"mode", WEIR_CT_STRING, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEP_BIT(WEIR_STEP_EARLY_REQUEST),
    .default_step = WEIR_STEP_EARLY_REQUEST,
    .parse = comp_parse,
    .free = comp_free,
    .ctx_size = sizeof(comp_ctx),
    .request = comp_request,
    .response = comp_response,
    .response_body = comp_body,
    .logging = comp_logging,
    .runs_last = true,
    .keeps_ranges = true,
};
