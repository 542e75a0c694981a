/*
 * jwt.c - JSON Web Tokens (RFC 7519), Pingap's jwt keys and more.
 *
 *     [plugins.jwt]
 *     category = "jwt"
 *     header = "Authorization"        # "Bearer TOKEN" (the default); or cookie, query
 *     secret = "..."                   # HS256/384/512; or public_key_file, or jwks_url
 *     jwks_url = "https://idp.example/.well-known/jwks.json"
 *     jwks_refresh = "5m"
 *     algorithms = ["RS256", "ES256"]  # default: what the keys can verify
 *     issuer = "https://idp.example/"
 *     audience = ["api"]
 *     leeway = "30s"
 *     require_exp = true
 *     claims_headers = ["sub: X-User", "email: X-Email"]
 *     hide_credentials = true
 *     delay = "1s"
 *
 * A token passes when its header names an allowed algorithm that one of
 * the keys verifies (a key only ever verifies the algorithms of its type,
 * so an RSA key is never an HMAC secret; "none" is never allowed), its
 * signature checks, and its claims hold: exp and nbf with the leeway, iss
 * and aud when configured. Anything else is a 401 with an RFC 6750
 * challenge; the error log (info) says why.
 *
 * Keys from jwks_url are fetched with a sub-request by a request that needs
 * them, which waits: the first one, one that finds the set older than
 * jwks_refresh, and one whose kid is unknown (a rotation). Fetches are at
 * least a second apart, so tokens with made-up kids cannot hammer the
 * identity provider: a request that needs keys sooner waits for the next
 * fetch allowed.
 * Requests on any worker that need keys while a fetch is under way poll
 * for its end (every 20 ms, on the session timer); the others go on with
 * the keys they have. A failed fetch keeps the old keys.
 */
#include <jansson.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/fields.h"
#include "app/plugin/jwt_keys.h"
#include "app/plugin/plugins.h"

#define MAX_CLAIMS_HEADERS 32
#define JWKS_MAX_BODY (1024 * 1024)
#define JWKS_MIN_REFETCH_MS 1000
#define POLL_MS 20

typedef struct claim_header {
    char *claim, *header;
} claim_header;

typedef struct jwt_conf {
    char *header, *cookie, *query; /* where the token is (one) */
    jwt_keyset *keys;              /* secret and public_key_file */
    weir_plugin_url jwks;          /* jwks_url; peer.addr_len 0 without */
    uint32_t jwks_refresh_ms, jwks_timeout_ms;
    uint32_t algs; /* allowed */
    char *issuer;
    char **audience;
    size_t n_audience;
    int64_t leeway;
    bool require_exp, hide;
    claim_header claims[MAX_CLAIMS_HEADERS];
    size_t n_claims;
    uint32_t delay_ms;
} jwt_conf;

/* The keys fetched from jwks_url, shared by every worker and kept across
 * reloads (reset when the URL changes). */
typedef struct jwks_state {
    pthread_mutex_t lock;
    char url[512];
    jwt_keyset *ks; /* NULL until a fetch succeeded */
    uint64_t gen;   /* bumped when a fetch ends */
    bool fetching;
    uint64_t fetched_ms, attempt_ms; /* monotonic */
} jwks_state;

typedef struct jwt_ctx {
    const jwt_conf *conf;
    jwks_state *st;
    weir_str token;
    uint64_t waited_since, seen_gen;
    bool fetched;     /* this request already waited for a fetch */
    uint8_t rechecks; /* waits for the next fetch allowed */
} jwt_ctx;

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- configuration ---- */

static void jwt_free(void *conf)
{
    jwt_conf *c = conf;
    free(c->header);
    free(c->cookie);
    free(c->query);
    weir__jwt_keyset_unref(c->keys);
    weir__plugin_url_free(&c->jwks);
    free(c->issuer);
    weir__cfg_free_list(c->audience, c->n_audience);
    for (size_t i = 0; i < c->n_claims; i++) {
        free(c->claims[i].claim);
        free(c->claims[i].header);
    }
    free(c);
}

static void parse_claims_headers(loader *ld, jwt_conf *c, const weir_toml_value *t,
                                 const char *section)
{
    size_t n = 0;
    int line = weir_toml_line(t);
    char **v = weir__cfg_get_string_list(ld, t, "claims_headers", section, &n, &line);
    for (size_t i = 0; i < n; i++) {
        char *colon = strchr(v[i], ':');
        char *h = colon ? colon + 1 : NULL;
        while (h && *h == ' ')
            h++;
        if (!colon || colon == v[i] || !h || !*h) {
            weir__cfg_err_at(ld, line, "'claims_headers' in [%s]: '%s' is not \"claim: Header\"",
                             section, v[i]);
            continue;
        }
        *colon = '\0';
        const char *why = weir__cfg_forbidden_field(h, true);
        if (!weir__cfg_valid_token(h) || why) {
            weir__cfg_err_at(ld, line, "'claims_headers' in [%s]: '%s' %s", section, h,
                             why ? why : "is not a field name");
            continue;
        }
        if (c->n_claims == MAX_CLAIMS_HEADERS) {
            weir__cfg_err_at(ld, line, "'claims_headers' in [%s]: at most %d", section,
                             MAX_CLAIMS_HEADERS);
            break;
        }
        c->claims[c->n_claims].claim = strdup(v[i]);
        c->claims[c->n_claims].header = strdup(h);
        c->n_claims++;
    }
    weir__cfg_free_list(v, n);
}

static uint32_t parse_algorithms(loader *ld, const weir_toml_value *t, const char *section,
                                 const char *key)
{
    size_t n = 0;
    int line = weir_toml_line(t);
    char **v = weir__cfg_get_string_list(ld, t, key, section, &n, &line);
    uint32_t algs = 0;
    for (size_t i = 0; i < n; i++) {
        int a = weir__jwt_alg(v[i], strlen(v[i]));
        if (a < 0)
            weir__cfg_err_at(ld, line,
                             "'%s' in [%s]: '%s' is not one of HS256, HS384, HS512, RS256, "
                             "RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA",
                             key, section, v[i]);
        else
            algs |= JWT_BIT(a);
    }
    weir__cfg_free_list(v, n);
    return algs;
}

static bool jwt_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    jwt_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    int line = weir_toml_line(t);
    bool present;
    c->header = weir__cfg_dup_string(ld, t, "header", section, &present);
    c->cookie = weir__cfg_dup_string(ld, t, "cookie", section, &present);
    c->query = weir__cfg_dup_string(ld, t, "query", section, &present);
    int where = !!c->header + !!c->cookie + !!c->query;
    if (where > 1)
        weir__cfg_err_at(ld, line, "[%s] takes one of 'header', 'cookie' and 'query'", section);
    if (where == 0)
        c->header = strdup("Authorization");
    if (c->header &&
        (!weir__cfg_valid_token(c->header) || weir__cfg_forbidden_field(c->header, false)))
        weir__cfg_err_at(ld, line, "'header' in [%s] is not a field a token can be in", section);
    if (c->query && (!c->query[0] || strpbrk(c->query, "&=#? ")))
        weir__cfg_err_at(ld, line, "'query' in [%s] is not a query parameter name", section);
    c->keys = weir__jwt_keyset_new();
    if (!c->keys)
        return false;
    char *secret = weir__cfg_dup_string(ld, t, "secret", section, &present);
    if (secret) {
        size_t sl = strlen(secret);
        if (sl == 0)
            weir__cfg_err_at(ld, line, "'secret' in [%s] is empty", section);
        else if (!weir__jwt_add_secret(c->keys, secret, sl))
            return false;
        else if (sl < 32)
            weir_log(WEIR_LEVEL_WARN,
                     "%s:%d: 'secret' in [%s] has %zu bytes: HS256 wants 32 or more (RFC 7518 3.2)",
                     ld->file, line, section, sl);
        OPENSSL_cleanse(secret, sl);
        free(secret);
    }
    char *pem = weir__cfg_dup_string(ld, t, "public_key_file", section, &present);
    if (pem) {
        char err[512];
        if (!weir__jwt_add_pem(c->keys, pem, err, sizeof(err)))
            weir__cfg_err_at(ld, line, "'public_key_file' in [%s]: %s", section, err);
        free(pem);
    }
    weir__plugin_url(ld, t, "jwks_url", section, &c->jwks);
    if (c->keys->n == 0 && !c->jwks.peer.addr_len && ld->errs->n == 0)
        weir__cfg_err_at(ld, line, "[%s] needs keys: 'secret', 'public_key_file' or 'jwks_url'",
                         section);
    c->jwks_refresh_ms = 300000;
    weir__cfg_get_duration(ld, t, "jwks_refresh", section, 86400000, false, &c->jwks_refresh_ms);
    c->jwks_timeout_ms = 5000;
    weir__cfg_get_duration(ld, t, "jwks_timeout", section, 60000, false, &c->jwks_timeout_ms);
    c->jwks.peer.connect_timeout_ms = c->jwks_timeout_ms;
    /* What the keys can verify, narrowed by algorithms / Pingap's algorithm. */
    uint32_t can = c->jwks.peer.addr_len ? (1u << JWT_N_ALGS) - 1 : 0;
    for (size_t i = 0; i < c->keys->n; i++)
        can |= c->keys->keys[i].algs;
    uint32_t want = parse_algorithms(ld, t, section, "algorithms") |
                    parse_algorithms(ld, t, section, "algorithm");
    c->algs = want ? want & can : can;
    if (want && !(want & can) && ld->errs->n == 0)
        weir__cfg_err_at(ld, line, "'algorithms' in [%s]: none of them fits the keys given",
                         section);
    c->issuer = weir__cfg_dup_string(ld, t, "issuer", section, &present);
    int al = line;
    c->audience = weir__cfg_get_string_list(ld, t, "audience", section, &c->n_audience, &al);
    uint32_t leeway = 0;
    weir__cfg_get_duration(ld, t, "leeway", section, 3600000, true, &leeway);
    c->leeway = leeway / 1000;
    weir__cfg_get_bool(ld, t, "require_exp", section, &c->require_exp);
    weir__cfg_get_bool(ld, t, "hide_credentials", section, &c->hide);
    weir__cfg_get_duration(ld, t, "delay", section, 60000, true, &c->delay_ms);
    parse_claims_headers(ld, c, t, section);
    weir_toml_entry ap;
    if (weir__cfg_entry_of(t, "auth_path", &ap))
        weir__cfg_err_at(ld, ap.line,
                         "'auth_path' in [%s]: Pingap's token signing endpoint is not in weir; "
                         "sign tokens in the application that logs users in",
                         section);
    return true;
}

static void *state_new(const void *conf)
{
    jwks_state *st = calloc(1, sizeof(*st));
    if (st)
        pthread_mutex_init(&st->lock, NULL);
    return st;
}

static void state_free(void *data)
{
    jwks_state *st = data;
    weir__jwt_keyset_unref(st->ks);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* ---- the token ---- */

/* The token of the request into *tok; false if there is none, or more
 * than one (two fields, two parameters: two opinions). */
static bool find_token(weir_session *s, const jwt_conf *c, weir_str *tok)
{
    weir_headers *h = weir_session_req_headers(s);
    if (c->header) {
        size_t nl = strlen(c->header), count = 0;
        weir_str v = WEIR_STR_NULL;
        for (size_t i = 0; i < weir_headers_count(h); i++) {
            weir_header f = weir_headers_at(h, i);
            if (f.name.len == nl && strncasecmp(f.name.ptr, c->header, nl) == 0 && !count++)
                v = f.value;
        }
        if (count != 1)
            return false;
        if (v.len > 7 && strncasecmp(v.ptr, "Bearer ", 7) == 0) {
            v.ptr += 7;
            v.len -= 7;
        }
        while (v.len && v.ptr[0] == ' ') {
            v.ptr++;
            v.len--;
        }
        *tok = v;
    } else if (c->cookie) {
        *tok = weir__cookie(h, c->cookie);
    } else if (weir__query_params(weir_session_query(s), c->query, tok) != 1) {
        return false;
    }
    return tok->ptr && tok->len > 0 && tok->len <= JWT_MAX_TOKEN;
}

typedef enum { V_OK, V_BAD, V_NO_KEY } verdict;

/* Tries the keys of ks that fit; V_NO_KEY when none has the token's kid
 * and algorithm. */
static verdict try_keys(const jwt_keyset *ks, const jwt_parsed *p, weir_str tok, const char *d2,
                        const unsigned char *sig, size_t sig_len)
{
    bool any = false;
    for (size_t i = 0; ks && i < ks->n; i++) {
        const jwt_key *k = &ks->keys[i];
        if (!(k->algs & JWT_BIT(p->alg)))
            continue;
        if (p->has_kid && k->kid && strcmp(k->kid, p->kid) != 0)
            continue;
        any = true;
        if (weir__jwt_verify(k, p->alg, tok.ptr, (size_t)(d2 - tok.ptr), sig, sig_len))
            return V_OK;
    }
    return any ? V_BAD : V_NO_KEY;
}

static bool number_claim(json_t *claims, const char *name, int64_t *out, bool *bad)
{
    json_t *v = json_object_get(claims, name);
    if (!v)
        return false;
    if (json_is_integer(v))
        *out = json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) > -9e15 && json_real_value(v) < 9e15)
        *out = (int64_t)json_real_value(v);
    else
        *bad = true;
    return !*bad;
}

static bool claims_hold(const jwt_conf *c, json_t *claims, const char **why)
{
    int64_t now = (int64_t)time(NULL), exp = 0, nbf = 0;
    bool bad = false;
    bool has_exp = number_claim(claims, "exp", &exp, &bad);
    bool has_nbf = !bad && number_claim(claims, "nbf", &nbf, &bad);
    if (bad) {
        *why = "exp or nbf is not a number";
        return false;
    }
    if (!has_exp && c->require_exp) {
        *why = "no exp";
        return false;
    }
    if (has_exp && now > exp + c->leeway) {
        *why = "expired (exp)";
        return false;
    }
    if (has_nbf && now + c->leeway < nbf) {
        *why = "not valid yet (nbf)";
        return false;
    }
    if (c->issuer) {
        const char *iss = json_string_value(json_object_get(claims, "iss"));
        if (!iss || strcmp(iss, c->issuer) != 0) {
            *why = "another issuer (iss)";
            return false;
        }
    }
    if (c->n_audience) {
        json_t *aud = json_object_get(claims, "aud");
        bool ok = false;
        for (size_t i = 0; i < c->n_audience && !ok; i++) {
            if (json_is_string(aud))
                ok = strcmp(json_string_value(aud), c->audience[i]) == 0;
            size_t k;
            json_t *a;
            json_array_foreach(json_is_array(aud) ? aud : NULL, k, a)
            {
                if (json_is_string(a) && strcmp(json_string_value(a), c->audience[i]) == 0)
                    ok = true;
            }
        }
        if (!ok) {
            *why = "another audience (aud)";
            return false;
        }
    }
    return true;
}

/* A claim as a field value in session memory: strings, numbers, booleans,
 * and arrays of those joined with ","; NULL for anything else. */
static char *claim_text(weir_session *s, json_t *v)
{
    char buf[64];
    if (json_is_string(v)) {
        const char *t = json_string_value(v);
        size_t n = strlen(t);
        char *out = weir_session_alloc(s, n + 1);
        if (out)
            memcpy(out, t, n + 1);
        return out;
    }
    if (json_is_integer(v))
        snprintf(buf, sizeof(buf), "%lld", (long long)json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, sizeof(buf), "%s", json_is_true(v) ? "true" : "false");
    else if (json_is_array(v)) {
        size_t total = 1, i;
        json_t *e;
        json_array_foreach(v, i, e)
        {
            if (!json_is_string(e))
                return NULL;
            total += strlen(json_string_value(e)) + 1;
        }
        char *out = weir_session_alloc(s, total);
        if (!out)
            return NULL;
        size_t o = 0;
        json_array_foreach(v, i, e)
        {
            size_t n = strlen(json_string_value(e));
            if (o)
                out[o++] = ',';
            memcpy(out + o, json_string_value(e), n);
            o += n;
        }
        out[o] = '\0';
        return out;
    } else {
        return NULL;
    }
    size_t n = strlen(buf);
    char *out = weir_session_alloc(s, n + 1);
    if (out)
        memcpy(out, buf, n + 1);
    return out;
}

/* ---- answers ---- */

/* 401; a token in a header gets RFC 6750's challenge (without an error
 * code when there was no token). */
static weir_phase_result refuse(weir_session *s, const jwt_conf *c, const char *why, bool had_token)
{
    weir_str id = weir_session_request_id(s);
    weir_log(WEIR_LEVEL_INFO, "jwt: %s (request %.*s): 401", why, (int)id.len, id.ptr);
    static const char body[] = "401 Unauthorized\n";
    weir_header h[2] = {
        {WEIR_STR("Content-Type"), WEIR_STR("text/plain; charset=utf-8")},
        {WEIR_STR("WWW-Authenticate"),
         had_token ? WEIR_STR("Bearer error=\"invalid_token\"") : WEIR_STR("Bearer")}};
    if (weir_session_respond(s, 401, h, c->header ? 2 : 1, body, sizeof(body) - 1) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_ANSWERED;
}

static void delayed(weir_session *s, void *ctx)
{
    jwt_ctx *x = weir__plugin_parked_ctx(s);
    weir__plugin_resume(s, x ? refuse(s, x->conf, "refused after the delay", x->token.len > 0)
                             : WEIR_PHASE_ERROR);
}

/* A refusal, after the delay if there is one. */
static weir_phase_result deny(weir_session *s, jwt_ctx *x, const char *why)
{
    if (!x->conf->delay_ms)
        return refuse(s, x->conf, why, x->token.len > 0);
    weir_str id = weir_session_request_id(s);
    weir_log(WEIR_LEVEL_INFO, "jwt: %s (request %.*s): 401 after the delay", why, (int)id.len,
             id.ptr);
    weir_session_set_timer(s, x->conf->delay_ms, delayed);
    return WEIR_PHASE_PENDING;
}

static weir_phase_result unavailable(weir_session *s)
{
    static const char body[] = "503 Service Unavailable (no keys to verify the token)\n";
    return weir__plugin_respond_text(s, 503, body, sizeof(body) - 1);
}

/* The token passed: the claims go upstream, the token maybe not. */
static weir_phase_result pass(weir_session *s, const jwt_conf *c, json_t *claims)
{
    weir_headers *h = weir_session_req_headers(s);
    for (size_t i = 0; i < c->n_claims; i++) {
        weir_headers_remove(h, c->claims[i].header);
        json_t *v = json_object_get(claims, c->claims[i].claim);
        char *text = v ? claim_text(s, v) : NULL;
        if (text && weir_headers_set(h, c->claims[i].header, text) != WEIR_OK)
            weir_log(WEIR_LEVEL_INFO, "jwt: claim '%s' cannot be a field value: not passed on",
                     c->claims[i].claim);
    }
    if (c->hide && c->header)
        weir_headers_remove(h, c->header);
    if (c->hide && c->query && weir__drop_query_param(s, c->query) != WEIR_OK)
        return WEIR_PHASE_ERROR;
    return WEIR_PHASE_CONTINUE;
}

/* ---- key sets from jwks_url ---- */

/* The fetched keys (a reference), after resetting them if the URL changed. */
static jwt_keyset *jwks_keys(jwks_state *st, const jwt_conf *c, uint64_t *gen, bool *fetching,
                             uint64_t *fetched_ms, uint64_t *attempt_ms)
{
    char url[512];
    snprintf(url, sizeof(url), "%s%s", c->jwks.authority, c->jwks.target);
    pthread_mutex_lock(&st->lock);
    if (strcmp(st->url, url) != 0) { /* a reload changed jwks_url */
        snprintf(st->url, sizeof(st->url), "%s", url);
        weir__jwt_keyset_unref(st->ks);
        st->ks = NULL;
        st->fetched_ms = st->attempt_ms = 0;
    }
    jwt_keyset *ks = weir__jwt_keyset_ref(st->ks);
    *gen = st->gen;
    *fetching = st->fetching;
    *fetched_ms = st->fetched_ms;
    *attempt_ms = st->attempt_ms;
    pthread_mutex_unlock(&st->lock);
    return ks;
}

static weir_phase_result check(weir_session *s, jwt_ctx *x);

static void fetched(weir_session *s, void *arg, const weir_subrequest_result *r)
{
    jwt_ctx *x = arg;
    jwks_state *st = x->st;
    jwt_keyset *ks = NULL;
    const char *why = r->error;
    char err[256] = "";
    size_t skipped = 0;
    if (r->error_code == WEIR_SUBREQ_OK && r->status == 200) {
        ks = weir__jwt_keyset_new();
        int n =
            ks ? weir__jwt_add_jwks(ks, r->body.ptr, r->body.len, &skipped, err, sizeof(err)) : -1;
        if (n <= 0) {
            why = n == 0 ? "no key weir can verify with" : err;
            weir__jwt_keyset_unref(ks);
            ks = NULL;
        }
    } else if (r->error_code == WEIR_SUBREQ_OK) {
        snprintf(err, sizeof(err), "status %d", r->status);
        why = err;
    }
    pthread_mutex_lock(&st->lock);
    st->fetching = false;
    st->gen++;
    if (ks) {
        weir__jwt_keyset_unref(st->ks);
        st->ks = ks;
        st->fetched_ms = mono_ms();
    }
    pthread_mutex_unlock(&st->lock);
    if (ks)
        weir_log(WEIR_LEVEL_INFO, "jwt: %zu keys from %s%s (%zu skipped)", ks->n,
                 x->conf->jwks.authority, x->conf->jwks.target, skipped);
    else
        weir_log(WEIR_LEVEL_WARN, "jwt: keys from %s%s: %s; the old ones stay",
                 x->conf->jwks.authority, x->conf->jwks.target, why ? why : "failed");
    if (r->error_code == WEIR_SUBREQ_CANCELLED) {
        weir__plugin_resume(s, WEIR_PHASE_ERROR); /* the client left */
        return;
    }
    x->fetched = true;
    weir__plugin_resume(s, check(s, x));
}

/* The next fetch is allowed now: check again (once or twice at most). */
static void recheck(weir_session *s, void *ctx)
{
    jwt_ctx *x = weir__plugin_parked_ctx(s);
    if (!x) {
        weir__plugin_resume(s, WEIR_PHASE_ERROR);
        return;
    }
    if (x->rechecks > 2)
        x->fetched = true;
    weir__plugin_resume(s, check(s, x));
}

static void poll_fetch(weir_session *s, void *ctx)
{
    jwt_ctx *x = weir__plugin_parked_ctx(s);
    if (!x) {
        weir__plugin_resume(s, WEIR_PHASE_ERROR);
        return;
    }
    pthread_mutex_lock(&x->st->lock);
    bool done = !x->st->fetching || x->st->gen != x->seen_gen;
    pthread_mutex_unlock(&x->st->lock);
    if (!done && mono_ms() - x->waited_since < x->conf->jwks_timeout_ms + 1000) {
        weir_session_set_timer(s, POLL_MS, poll_fetch);
        return;
    }
    x->fetched = true;
    weir__plugin_resume(s, check(s, x));
}

/* Waits for keys: starts the fetch if none is under way (this request's,
 * it resumes in `fetched`), else polls for the other one's end. */
static weir_phase_result wait_for_keys(weir_session *s, jwt_ctx *x, uint64_t gen)
{
    jwks_state *st = x->st;
    pthread_mutex_lock(&st->lock);
    bool mine = !st->fetching;
    if (mine) {
        st->fetching = true;
        st->attempt_ms = mono_ms();
    }
    pthread_mutex_unlock(&st->lock);
    x->seen_gen = gen;
    x->waited_since = mono_ms();
    if (!mine) {
        weir_session_set_timer(s, POLL_MS, poll_fetch);
        return WEIR_PHASE_PENDING;
    }
    weir_subrequest_spec spec = {
        .target = {x->conf->jwks.target, strlen(x->conf->jwks.target)},
        .authority = {x->conf->jwks.authority, strlen(x->conf->jwks.authority)},
        .headers = &(weir_header){WEIR_STR("Accept"), WEIR_STR("application/json")},
        .n_headers = 1,
        .max_body = JWKS_MAX_BODY,
        .timeout_ms = x->conf->jwks_timeout_ms,
    };
    if (!weir_subrequest_start(s, &x->conf->jwks.peer, &spec, fetched, x)) {
        pthread_mutex_lock(&st->lock);
        st->fetching = false;
        pthread_mutex_unlock(&st->lock);
        return WEIR_PHASE_ERROR;
    }
    return WEIR_PHASE_PENDING;
}

/* ---- the check ---- */

static weir_phase_result check(weir_session *s, jwt_ctx *x)
{
    const jwt_conf *c = x->conf;
    jwt_parsed p = {0};
    const char *why = NULL;
    if (!weir__jwt_parse(x->token.ptr, x->token.len, &p, &why)) {
        json_decref(p.claims);
        return deny(s, x, why);
    }
    weir_phase_result res;
    if (!(c->algs & JWT_BIT(p.alg))) {
        res = deny(s, x, "an algorithm not allowed here");
        goto out;
    }
    unsigned char sig[1024];
    const char *end = x->token.ptr + x->token.len;
    long sl = weir__b64url_decode(p.dot2 + 1, (size_t)(end - p.dot2 - 1), sig, sizeof(sig));
    if (sl <= 0) {
        res = deny(s, x, "a malformed signature");
        goto out;
    }
    verdict v = try_keys(c->keys, &p, x->token, p.dot2, sig, (size_t)sl);
    if (v != V_OK && c->jwks.peer.addr_len) {
        verdict mine = v;
        uint64_t gen, fetched_ms, attempt_ms;
        bool fetching;
        jwt_keyset *ks = jwks_keys(x->st, c, &gen, &fetching, &fetched_ms, &attempt_ms);
        v = try_keys(ks, &p, x->token, p.dot2, sig, (size_t)sl);
        if (v == V_NO_KEY)
            v = mine; /* a configured key that fits said no */
        weir__jwt_keyset_unref(ks);
        uint64_t now = mono_ms();
        bool stale = ks && now - fetched_ms >= c->jwks_refresh_ms;
        bool may_refetch = !attempt_ms || now - attempt_ms >= JWKS_MIN_REFETCH_MS;
        /* Keys are needed (none yet, none with this kid: a rotation) or
         * due: fetch them, or wait for the fetch under way or for the
         * next one allowed. */
        if (!x->fetched && (v == V_NO_KEY || (stale && may_refetch && !fetching))) {
            json_decref(p.claims);
            if (fetching || may_refetch)
                return wait_for_keys(s, x, gen);
            x->rechecks++;
            weir_session_set_timer(s, (uint32_t)(attempt_ms + JWKS_MIN_REFETCH_MS - now) + 1,
                                   recheck);
            return WEIR_PHASE_PENDING;
        }
        if (v == V_NO_KEY && !ks) {
            res = unavailable(s);
            goto out;
        }
    }
    if (v != V_OK) {
        res = deny(s, x, v == V_NO_KEY ? "no key for its kid and algorithm" : "a bad signature");
        goto out;
    }
    res = claims_hold(c, p.claims, &why) ? pass(s, c, p.claims) : deny(s, x, why);
out:
    json_decref(p.claims);
    return res;
}

static weir_phase_result jwt_request(weir_plugin_call *call)
{
    jwt_ctx *x = call->ctx;
    x->conf = call->plugin->conf;
    x->st = call->plugin->state ? call->plugin->state->data : NULL;
    if (!find_token(call->s, x->conf, &x->token)) {
        x->token = WEIR_STR_NULL;
        return deny(call->s, x, "no token, or more than one");
    }
    if (x->conf->jwks.peer.addr_len && !x->st)
        return WEIR_PHASE_ERROR;
    return check(call->s, x);
}

static const weir_cfg_key jwt_keys[] = {{"header", WEIR_CT_STRING, NULL},
                                        {"cookie", WEIR_CT_STRING, NULL},
                                        {"query", WEIR_CT_STRING, NULL},
                                        {"secret", WEIR_CT_STRING, NULL},
                                        {"public_key_file", WEIR_CT_STRING, NULL},
                                        {"jwks_url", WEIR_CT_STRING, NULL},
                                        {"jwks_refresh", WEIR_CT_DURATION, NULL},
                                        {"jwks_timeout", WEIR_CT_DURATION, NULL},
                                        {"ca_file", WEIR_CT_STRING, NULL},
                                        {"algorithms", WEIR_CT_STRINGS, NULL},
                                        {"algorithm", WEIR_CT_STRING, NULL},
                                        {"issuer", WEIR_CT_STRING, NULL},
                                        {"audience", WEIR_CT_STRINGS, NULL},
                                        {"leeway", WEIR_CT_DURATION, NULL},
                                        {"require_exp", WEIR_CT_BOOLEAN, NULL},
                                        {"claims_headers", WEIR_CT_STRINGS, NULL},
                                        {"hide_credentials", WEIR_CT_BOOLEAN, NULL},
                                        {"delay", WEIR_CT_DURATION, NULL},
                                        {"auth_path", WEIR_CT_REFUSED, NULL},
                                        {NULL, 0, NULL}};

const weir_plugin_def weir__plugin_jwt = {
    .category = "jwt",
    .keys = jwt_keys,
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = jwt_parse,
    .free = jwt_free,
    .ctx_size = sizeof(jwt_ctx),
    .state_new = state_new,
    .state_free = state_free,
    .request = jwt_request,
};
