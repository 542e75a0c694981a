/*
 * sub_filter.c - replaces strings or regular expressions in response
 * bodies as they stream (nginx's sub_filter; the regex form of the
 * substitutions module's subs_filter).
 *
 *     [plugins.links]
 *     category = "sub_filter"
 *     filters = [["http://example.com", "https://example.com"],
 *                ["Old Name", "New Name"],
 *                ['v(\d+)\.(\d+)', 'version $1.$2', "rg"]]   # flags: r regex,
 *                                 # i ignore case, g every occurrence, o only the first
 *     once = false                 # every occurrence (default: the first of each, as nginx)
 *     ignore_case = true
 *     types = ["text/html", "text/css"]   # default ["text/html"]
 *
 * Only responses of those types are touched; their Content-Length goes,
 * so they are sent chunked. A body the backend compressed (one of gzip,
 * br, zstd, deflate) is decoded first and sent on without its
 * Content-Encoding; a compression plugin on the location encodes it again
 * for a client that takes it.
 *
 * Earliest match wins (the first listed of those starting at one place).
 * A match may straddle pieces of the body: only a tail that is the start
 * of a possible match waits for the next piece (a literal's prefix;
 * PCRE2's hard partial match for a regex), at most MAX_HOLD bytes, so a
 * match longer than that is not found. Regexes run with PCRE2's match
 * limit (100,000): one that exceeds it on a piece is taken as no match
 * there. A regex sees the bytes before a piece (its longest lookbehind, 1
 * at least), so ^, \b and lookbehinds do not take a piece's start for the
 * body's. Memory per response: two buffers about the size of a piece; the
 * replacements may make a piece's output at most 4 MiB longer than its
 * input, past that the response is cut.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "app/plugin/codec.h"
#include "app/plugin/plugins.h"
#include "app/toml/toml.h"

#define MAX_FILTERS 16
#define MAX_HOLD 65536
#define MAX_TO 65536
#define MAX_OUT (4u << 20)

typedef struct sub_rule {
    char *from, *to;
    size_t from_len, to_len;
    pcre2_code *re; /* a regex rule; NULL for a literal */
    bool once, icase, refs /* to holds $N */;
    uint32_t behind; /* its longest lookbehind (PCRE2_INFO_MAXLOOKBEHIND) */
} sub_rule;

typedef struct sub_conf {
    sub_rule r[MAX_FILTERS];
    size_t n;
    uint32_t max_groups;
    size_t context; /* bytes kept before undecided ones: the longest lookbehind, 1 at least */
    char **types;
    size_t n_types;
} sub_conf;

typedef struct sub_ctx {
    bool active;
    bool done_once[MAX_FILTERS];
    weir_codec *dec; /* the backend's encoding, decoded */
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    /* in[0..held_len): bytes kept back from the last piece (a match may
     * start there); a piece is appended to them. Both buffers are reused
     * from piece to piece and freed at logging. */
    char *in;
    size_t in_cap, held_len;
    char *out;
    size_t out_cap, out_len, out_max;
    size_t ctx_len; /* in[0..ctx_len): bytes before the held ones, already out */
} sub_ctx;

static void sub_free(void *conf)
{
    sub_conf *c = conf;
    for (size_t i = 0; i < c->n; i++) {
        free(c->r[i].from);
        free(c->r[i].to);
        pcre2_code_free(c->r[i].re);
    }
    weir__cfg_free_list(c->types, c->n_types);
    free(c);
}

/* Reads one [FROM, TO] or [FROM, TO, FLAGS] into r; false (reported) if bad. */
static bool load_rule(loader *ld, const weir_toml_value *pair, const char *section, sub_rule *r,
                      bool once, bool icase, uint32_t *max_groups)
{
    const char *usage = "must be a list of [\"FROM\", \"TO\"] pairs (or [FROM, TO, FLAGS])";
    size_t n = weir_toml_type_of(pair) == WEIR_TOML_ARRAY ? weir_toml_array_count(pair) : 0;
    size_t fl = 0, tl = 0, gl = 0;
    const char *from = n == 2 || n == 3 ? weir_toml_string(weir_toml_array_at(pair, 0), &fl) : NULL;
    const char *to = from ? weir_toml_string(weir_toml_array_at(pair, 1), &tl) : NULL;
    const char *flags = n == 3 && to ? weir_toml_string(weir_toml_array_at(pair, 2), &gl) : "";
    if (!from || !to || !flags || fl == 0 || fl > 256 || strlen(from) != fl || strlen(to) != tl ||
        tl > MAX_TO) {
        weir__cfg_err_at(ld, weir_toml_line(pair),
                         "'filters' in [%s] %s (FROM 1 to 256 bytes, TO at most 65536)", section,
                         usage);
        return false;
    }
    bool regex = false;
    r->once = once;
    r->icase = icase;
    for (const char *f = flags; *f; f++) {
        switch (*f) {
        case 'r':
            regex = true;
            break;
        case 'i':
            r->icase = true;
            break;
        case 'g':
            r->once = false;
            break;
        case 'o':
            r->once = true;
            break;
        default:
            weir__cfg_err_at(ld, weir_toml_line(pair),
                             "'filters' in [%s]: flag '%c' is not r, i, g or o", section, *f);
            return false;
        }
    }
    if (regex) {
        int err;
        PCRE2_SIZE off;
        r->re =
            pcre2_compile((PCRE2_SPTR)from, fl, r->icase ? PCRE2_CASELESS : 0, &err, &off, NULL);
        uint32_t minlen = 0, groups = 0;
        if (!r->re) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof(msg));
            weir__cfg_err_at(ld, weir_toml_line(pair), "'filters' in [%s]: regex '%s': %s at %zu",
                             section, from, (const char *)msg, (size_t)off);
            return false;
        }
        pcre2_pattern_info(r->re, PCRE2_INFO_MINLENGTH, &minlen);
        pcre2_pattern_info(r->re, PCRE2_INFO_CAPTURECOUNT, &groups);
        if (minlen == 0) {
            weir__cfg_err_at(ld, weir_toml_line(pair),
                             "'filters' in [%s]: regex '%s' can match the empty string", section,
                             from);
            return false;
        }
        if (groups > *max_groups)
            *max_groups = groups;
        uint32_t behind = 0;
        pcre2_pattern_info(r->re, PCRE2_INFO_MAXLOOKBEHIND, &behind);
        r->behind = behind > 4096 ? 4096 : behind;
        for (size_t i = 0; i + 1 < tl; i++)
            r->refs = r->refs || (to[i] == '$' &&
                                  ((to[i + 1] >= '0' && to[i + 1] <= '9') || to[i + 1] == '$'));
    }
    r->from = strndup(from, fl);
    r->to = strndup(to, tl);
    r->from_len = fl;
    r->to_len = tl;
    return r->from && r->to;
}

static bool sub_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    sub_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    bool once = true, icase = false;
    weir__cfg_get_bool(ld, t, "once", section, &once);
    weir__cfg_get_bool(ld, t, "ignore_case", section, &icase);
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
        if (c->n == MAX_FILTERS) {
            weir__cfg_err_at(ld, e.line, "'filters' in [%s]: at most %d", section, MAX_FILTERS);
            break;
        }
        sub_rule *r = &c->r[c->n];
        bool ok =
            load_rule(ld, weir_toml_array_at(e.value, i), section, r, once, icase, &c->max_groups);
        c->n++; /* freed with the conf either way */
        if (!ok)
            continue;
    }
    /* \b needs one byte before; a lookbehind its length. */
    c->context = 1;
    for (size_t i = 0; i < c->n; i++)
        if (c->r[i].behind + 1 > c->context)
            c->context = c->r[i].behind + 1;
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
    weir_headers *h = call->headers;
    /* A response without a body (HEAD, 204, 304) keeps its Content-Length:
     * it tells the length of the body a GET would get. */
    int status = weir_session_resp_status(call->s);
    weir_str m = weir_session_method(call->s);
    if (!x || !h || c->n == 0 || status == 204 || status == 304 || status == 206 || status < 200 ||
        (m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0) ||
        !type_matches(c, weir_headers_get(h, "content-type")))
        return WEIR_PHASE_CONTINUE;
    weir_str ce = weir__plugin_field(call->s, h, "content-encoding");
    if (ce.ptr && !(ce.len == 8 && strncasecmp(ce.ptr, "identity", 8) == 0)) {
        /* One coding it can decode, or the body is left whole. */
        int e = weir__enc_of(ce.ptr, ce.len);
        if (e <= WEIR_ENC_IDENTITY || !(x->dec = weir__codec_decoder((weir_enc)e, 0)))
            return WEIR_PHASE_CONTINUE;
        weir_headers_remove(h, "content-encoding");
    }
    x->active = true;
    /* Another body: no length, no ranges of it, a weak validator. */
    weir_headers_remove(h, "content-length");
    weir_headers_remove(h, "accept-ranges");
    weir__plugin_weaken_etag(call->s, h);
    return WEIR_PHASE_CONTINUE;
}

/* *buf with room for need bytes (its contents kept). */
static bool reserve(char **buf, size_t *cap, size_t need)
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

static bool emit(sub_ctx *x, const char *p, size_t len)
{
    if (!len)
        return true;
    if (x->out_len + len > x->out_max)
        return false;
    if (!reserve(&x->out, &x->out_cap, x->out_len + len))
        return false;
    memcpy(x->out + x->out_len, p, len);
    x->out_len += len;
    return true;
}

static bool same(const char *a, const char *b, size_t len, bool icase)
{
    return icase ? strncasecmp(a, b, len) == 0 : memcmp(a, b, len) == 0;
}

/* A literal rule over in[i..len): its first whole match (*pos, or len if
 * none) and, unless final, where a tail that is its prefix begins
 * (*partial, else len). */
static void find_literal(const sub_rule *r, const char *in, size_t i, size_t len, bool final,
                         size_t *pos, size_t *partial)
{
    *pos = *partial = len;
    for (size_t p = i; p + r->from_len <= len; p++) {
        if ((r->icase ? (in[p] | 0x20) == (r->from[0] | 0x20) || in[p] == r->from[0]
                      : in[p] == r->from[0]) &&
            same(in + p, r->from, r->from_len, r->icase)) {
            *pos = p;
            break;
        }
    }
    if (final)
        return;
    size_t start = len > r->from_len - 1 ? len - (r->from_len - 1) : 0;
    for (size_t p = start > i ? start : i; p < len; p++) {
        if (same(in + p, r->from, len - p, r->icase)) {
            *partial = p;
            return;
        }
    }
}

/* The replacement of a regex match: $0..$9 are its groups, $$ a '$'. */
static bool emit_replacement(sub_ctx *x, const sub_rule *r, const char *in, const PCRE2_SIZE *ov,
                             uint32_t n_pairs)
{
    if (!r->refs)
        return emit(x, r->to, r->to_len);
    for (size_t i = 0; i < r->to_len; i++) {
        char ch = r->to[i];
        if (ch == '$' && i + 1 < r->to_len && r->to[i + 1] == '$') {
            if (!emit(x, "$", 1))
                return false;
            i++;
        } else if (ch == '$' && i + 1 < r->to_len && r->to[i + 1] >= '0' && r->to[i + 1] <= '9') {
            uint32_t g = (uint32_t)(r->to[++i] - '0');
            if (g < n_pairs && ov[2 * g] != PCRE2_UNSET &&
                !emit(x, in + ov[2 * g], ov[2 * g + 1] - ov[2 * g]))
                return false;
        } else if (!emit(x, &ch, 1)) {
            return false;
        }
    }
    return true;
}

/* Replaces in x->in[start..len) into x->out (in[0..start) is context
 * already sent: what a regex's lookbehind or \b sees before); returns
 * where the undecided rest begins, or (size_t)-1 on an error (out of
 * memory, output over its cap). */
static size_t substitute(const sub_conf *c, sub_ctx *x, size_t start, size_t len, bool final)
{
    const char *in = x->in;
    size_t i = start;
    /* What each rule found from some earlier i: its first whole match
     * (pos, end; len if none) and where a partial match at the tail
     * begins (tail). Still true while both are not behind i, so a rule
     * is searched again only when another rule's replacement passed over
     * what it found: each byte is scanned about once per rule. */
    size_t pos[MAX_FILTERS], end[MAX_FILTERS], tail[MAX_FILTERS];
    bool known[MAX_FILTERS] = {false};
    PCRE2_SIZE groups[MAX_FILTERS][20];
    uint32_t pairs[MAX_FILTERS];
    for (;;) {
        size_t best = len, hold = len, bk = 0;
        const sub_rule *br = NULL;
        for (size_t k = 0; k < c->n; k++) {
            const sub_rule *r = &c->r[k];
            if (!r->from || (r->once && x->done_once[k]))
                continue;
            if (!known[k] || pos[k] < i || tail[k] < i) {
                known[k] = true;
                pairs[k] = 0;
                if (!r->re) {
                    find_literal(r, in, i, len, final, &pos[k], &tail[k]);
                    end[k] = pos[k] + r->from_len;
                } else {
                    int rc = pcre2_match(r->re, (PCRE2_SPTR)in, len, i,
                                         final ? 0 : PCRE2_PARTIAL_HARD, x->md, x->mctx);
                    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(x->md);
                    pos[k] = end[k] = tail[k] = len;
                    if (rc == PCRE2_ERROR_PARTIAL) {
                        tail[k] = ov[0];
                    } else if (rc > 0) {
                        pos[k] = ov[0];
                        end[k] = ov[1];
                        pairs[k] = (uint32_t)rc > 10 ? 10 : (uint32_t)rc;
                        memcpy(groups[k], ov, 2 * pairs[k] * sizeof(*ov));
                    }
                }
            }
            if (tail[k] < hold)
                hold = tail[k];
            if (pos[k] < best) {
                best = pos[k];
                br = r;
                bk = k;
            }
        }
        if (br && best < hold) {
            if (!emit(x, in + i, best - i) || !emit_replacement(x, br, in, groups[bk], pairs[bk]))
                return (size_t)-1;
            x->done_once[bk] = true;
            i = end[bk];
            continue;
        }
        /* Nothing decided before the earliest possible match: what comes
         * before it goes, it waits (within MAX_HOLD). */
        if (len - hold > MAX_HOLD)
            hold = len - MAX_HOLD;
        if (hold < i)
            hold = i;
        if (!emit(x, in + i, hold - i))
            return (size_t)-1;
        return hold;
    }
}

static weir_phase_result sub_body(weir_plugin_call *call, weir_str *chunk, bool end)
{
    const sub_conf *c = call->plugin->conf;
    sub_ctx *x = call->ctx;
    if (!x || !x->active)
        return WEIR_PHASE_CONTINUE;
    weir_str piece = *chunk;
    if (x->dec) {
        weir_str out;
        if (weir__codec_run(x->dec, piece.ptr, piece.len, end ? WEIR_CODEC_END : WEIR_CODEC_RUN,
                            &out) != WEIR_OK)
            return WEIR_PHASE_ERROR; /* a corrupt body: the response is cut */
        piece = out;
    }
    if (!x->md) {
        x->md = pcre2_match_data_create(c->max_groups + 1, NULL);
        x->mctx = pcre2_match_context_create(NULL);
        if (!x->md || !x->mctx)
            return WEIR_PHASE_ERROR;
        pcre2_set_match_limit(x->mctx, 100000);
    }
    /* in = context + held + piece */
    size_t start = x->ctx_len, in_len = start + x->held_len + piece.len;
    if (!reserve(&x->in, &x->in_cap, in_len + 1))
        return WEIR_PHASE_ERROR;
    if (piece.len)
        memcpy(x->in + start + x->held_len, piece.ptr, piece.len);
    x->out_len = 0;
    /* Replacements may grow a piece, within bounds: past them the
     * response is cut rather than held in memory. */
    x->out_max = in_len + MAX_OUT;
    size_t used = substitute(c, x, start, in_len, end);
    if (used == (size_t)-1)
        return WEIR_PHASE_ERROR;
    /* What was not decided waits for the next piece, after the last
     * bytes before it (what a regex looks behind at). */
    size_t keep = used < c->context ? used : c->context;
    x->ctx_len = keep;
    x->held_len = in_len - used;
    memmove(x->in, x->in + used - keep, keep + x->held_len);
    *chunk = (weir_str){x->out, x->out_len};
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
    weir__codec_free(x->dec);
    x->dec = NULL;
    pcre2_match_data_free(x->md);
    pcre2_match_context_free(x->mctx);
    x->md = NULL;
    x->mctx = NULL;
}

const weir_plugin_def weir__plugin_sub_filter = {
    .category = "sub_filter",
    .keys = (const weir_cfg_key[]){{"filters", WEIR_CT_ARRAY, NULL},
                                   {"once", WEIR_CT_BOOLEAN, NULL},
                                   {"ignore_case", WEIR_CT_BOOLEAN, NULL},
                                   {"types", WEIR_CT_STRINGS, NULL},
                                   {NULL, 0, NULL}},
    .steps = 0,
    .default_step = WEIR_STEP_RESPONSE,
    .parse = sub_parse,
    .free = sub_free,
    .ctx_size = sizeof(sub_ctx),
    .response = sub_response,
    .response_body = sub_body,
    .logging = sub_logging,
};
