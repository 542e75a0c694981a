/*
 * csrf.c - double-submit CSRF tokens, signed with a key.
 *
 *     [plugins.csrf]
 *     category = "csrf"
 *     token_path = "/csrf-token"   # GET here: a new token (JSON) and its cookie
 *     name = "x-csrf-token"        # the header and the cookie
 *     key = "a long random secret"
 *     ttl = "1h"
 *
 * A request with an unsafe method (anything but GET, HEAD, OPTIONS and
 * TRACE) must send the token twice, in the cookie and in the header, the
 * same, signed with `key` and not expired; else 403. A page served from the
 * same site reads the token (the cookie, or token_path's answer) and puts
 * it in the header; a forged cross-site form cannot, since it can neither
 * read the cookie nor set a header.
 *
 * Token: NONCE.EXPIRY.SIGNATURE, with NONCE 16 random bytes (hex), EXPIRY
 * seconds since 1970, SIGNATURE HMAC-SHA256(key, "NONCE.EXPIRY") in hex.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app/fields.h"
#include "app/plugin/plugins.h"

typedef struct csrf_conf {
    char *token_path;
    char *name;
    char *key;
    uint32_t ttl_s;
} csrf_conf;

static void csrf_free(void *conf)
{
    csrf_conf *c = conf;
    free(c->token_path);
    free(c->name);
    if (c->key)
        OPENSSL_cleanse(c->key, strlen(c->key));
    free(c->key);
    free(c);
}

static bool csrf_parse(loader *ld, const weir_toml_value *t, const char *section, void **conf)
{
    csrf_conf *c = calloc(1, sizeof(*c));
    if (!c)
        return false;
    *conf = c;
    bool present;
    c->token_path = weir__cfg_dup_string(ld, t, "token_path", section, &present);
    c->name = weir__cfg_dup_string(ld, t, "name", section, &present);
    if (!c->name)
        c->name = strdup("x-csrf-token");
    c->key = weir__cfg_dup_string(ld, t, "key", section, &present);
    if (!c->key || strlen(c->key) < 16)
        weir__cfg_err_at(ld, weir_toml_line(t),
                         "[%s] needs 'key', a secret of 16 characters or more", section);
    if (c->name && !weir__cfg_valid_token(c->name))
        weir__cfg_err_at(ld, weir_toml_line(t), "'name' in [%s] is not a header name", section);
    if (c->token_path && c->token_path[0] != '/')
        weir__cfg_err_at(ld, weir_toml_line(t), "'token_path' in [%s] must start with '/'",
                         section);
    uint32_t ms = 3600000;
    weir__cfg_get_duration(ld, t, "ttl", section, 86400000u * 30, false, &ms);
    c->ttl_s = ms / 1000 ? ms / 1000 : 1;
    return true;
}

static void hex(char *out, const unsigned char *in, size_t n)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[in[i] >> 4];
        out[2 * i + 1] = d[in[i] & 15];
    }
}

/* HMAC-SHA256(key, msg) as 64 hex digits into out. */
static bool sign(const csrf_conf *c, const char *msg, size_t len, char out[64])
{
    unsigned char mac[32];
    unsigned int ml = 0;
    if (!HMAC(EVP_sha256(), c->key, (int)strlen(c->key), (const unsigned char *)msg, len, mac,
              &ml) ||
        ml != 32)
        return false;
    hex(out, mac, 32);
    return true;
}

/* A new token into out (NUL-terminated); its length, or 0. */
static size_t make_token(const csrf_conf *c, char *out, size_t cap)
{
    unsigned char nonce[16];
    if (cap < 32 + 1 + 20 + 1 + 64 + 1 || RAND_bytes(nonce, sizeof(nonce)) != 1)
        return 0;
    hex(out, nonce, 16);
    int n = 32 + snprintf(out + 32, cap - 32, ".%lld", (long long)time(NULL) + c->ttl_s);
    out[n] = '.';
    if (!sign(c, out, (size_t)n, out + n + 1))
        return 0;
    out[n + 65] = '\0';
    return (size_t)n + 65;
}

static bool token_valid(const csrf_conf *c, weir_str t)
{
    /* NONCE(32) "." EXPIRY "." SIG(64) */
    if (t.len < 32 + 3 + 64 || t.len > 32 + 22 + 64 || t.ptr[32] != '.' || t.ptr[t.len - 65] != '.')
        return false;
    char exp[24];
    size_t el = t.len - 65 - 33;
    if (el == 0 || el >= sizeof(exp))
        return false;
    memcpy(exp, t.ptr + 33, el);
    exp[el] = '\0';
    char *end;
    long long e = strtoll(exp, &end, 10);
    if (*end || e < (long long)time(NULL))
        return false;
    char want[64];
    if (!sign(c, t.ptr, t.len - 65, want))
        return false;
    return CRYPTO_memcmp(want, t.ptr + t.len - 64, 64) == 0;
}

static bool safe_method(weir_str m)
{
    return (m.len == 3 && memcmp(m.ptr, "GET", 3) == 0) ||
           (m.len == 4 && memcmp(m.ptr, "HEAD", 4) == 0) ||
           (m.len == 7 && memcmp(m.ptr, "OPTIONS", 7) == 0) ||
           (m.len == 5 && memcmp(m.ptr, "TRACE", 5) == 0);
}

static weir_phase_result forbidden(weir_session *s)
{
    static const char body[] = "403 invalid or missing CSRF token\n";
    return weir__plugin_respond_text(s, 403, body, sizeof(body) - 1);
}

static weir_phase_result csrf_request(weir_plugin_call *call)
{
    const csrf_conf *c = call->plugin->conf;
    weir_session *s = call->s;
    weir_str m = weir_session_method(s);
    weir_str path = weir_session_path(s);
    if (c->token_path && m.len == 3 && memcmp(m.ptr, "GET", 3) == 0 &&
        path.len == strlen(c->token_path) && memcmp(path.ptr, c->token_path, path.len) == 0) {
        char tok[160], body[200], set[400];
        size_t tl = make_token(c, tok, sizeof(tok));
        if (!tl)
            return WEIR_PHASE_ERROR;
        int bl = snprintf(body, sizeof(body), "{\"token\": \"%s\"}\n", tok);
        weir_tls_info ti;
        int sl = snprintf(set, sizeof(set), "%s=%s; Path=/; Max-Age=%u; SameSite=Strict%s", c->name,
                          tok, c->ttl_s, weir_session_tls(s, &ti) ? "; Secure" : "");
        weir_header h[3] = {{WEIR_STR("Content-Type"), WEIR_STR("application/json")},
                            {WEIR_STR("Cache-Control"), WEIR_STR("no-store")},
                            {WEIR_STR("Set-Cookie"), {set, (size_t)sl}}};
        if (weir_session_respond(s, 200, h, 3, body, (size_t)bl) != WEIR_OK)
            return WEIR_PHASE_ERROR;
        return WEIR_PHASE_ANSWERED;
    }
    if (safe_method(m))
        return WEIR_PHASE_CONTINUE;
    weir_headers *h = weir_session_req_headers(s);
    weir_str given = weir_headers_get(h, c->name);
    weir_str kept = weir__cookie(h, c->name);
    if (!given.ptr || !kept.ptr || given.len != kept.len ||
        CRYPTO_memcmp(given.ptr, kept.ptr, given.len) != 0 || !token_valid(c, given))
        return forbidden(s);
    return WEIR_PHASE_CONTINUE;
}

const weir_plugin_def weir__plugin_csrf = {
    .category = "csrf",
    .keys = (const weir_cfg_key[]){{"token_path", WEIR_CT_STRING, NULL},
                                   {"name", WEIR_CT_STRING, NULL},
                                   {"key", WEIR_CT_STRING, NULL},
                                   {"ttl", WEIR_CT_DURATION, NULL},
                                   {NULL, 0, NULL}},
    .steps = WEIR_STEPS_REQUEST_SIDE,
    .default_step = WEIR_STEP_REQUEST,
    .parse = csrf_parse,
    .free = csrf_free,
    .request = csrf_request,
};
