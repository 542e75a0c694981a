/*
 * answer.c - an ACME server's answers read from their bytes (answer.h).
 */
#include "app/acme/answer.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app/acme/client.h"

/* The longest wait an answer's Retry-After can ask for: a day. A CA
 * asking more is asked again then. */
#define RETRY_AFTER_MAX_S 86400

static json_t *object(const char *p, size_t n)
{
    json_error_t je;
    json_t *j = p ? json_loadb(p, n, 0, &je) : NULL;
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static const char *str(const json_t *o, const char *name)
{
    return json_string_value(json_object_get(o, name));
}

int weir__acme_parse_directory(const char *p, size_t n, weir_acme_dir *d)
{
    memset(d, 0, sizeof(*d));
    json_t *j = object(p, n);
    d->new_nonce = str(j, "newNonce");
    d->new_account = str(j, "newAccount");
    d->new_order = str(j, "newOrder");
    d->renewal_info = str(j, "renewalInfo");
    if (!d->new_nonce || !d->new_account || !d->new_order) {
        json_decref(j);
        memset(d, 0, sizeof(*d));
        return -1;
    }
    d->root = j;
    return 0;
}

void weir__acme_dir_free(weir_acme_dir *d)
{
    json_decref(d->root);
    memset(d, 0, sizeof(*d));
}

int weir__acme_parse_status(const char *p, size_t n, void **doc, const char **status)
{
    json_t *j = object(p, n);
    *doc = j;
    *status = str(j, "status");
    return j ? 0 : -1;
}

void weir__acme_doc_free(void *doc)
{
    json_decref(doc);
}

int weir__acme_parse_order(const char *p, size_t n, weir_acme_order_doc *o, bool *authz_bad)
{
    memset(o, 0, sizeof(*o));
    *authz_bad = false;
    json_t *j = object(p, n);
    if (!j)
        return -1;
    o->root = j;
    o->status = str(j, "status");
    o->finalize = str(j, "finalize");
    o->certificate = str(j, "certificate");
    const json_t *a = json_object_get(j, "authorizations");
    size_t cap = json_array_size(a);
    o->authz = calloc(cap + 1, sizeof(*o->authz));
    if (!o->authz) {
        weir__acme_order_free(o);
        return -1;
    }
    const json_t *x;
    size_t i;
    json_array_foreach(a, i, x)
    {
        if (json_is_string(x))
            o->authz[o->n_authz++] = json_string_value(x);
        else
            *authz_bad = true;
    }
    if (a && !json_is_array(a))
        *authz_bad = true;
    return 0;
}

void weir__acme_order_free(weir_acme_order_doc *o)
{
    free(o->authz);
    json_decref(o->root);
    memset(o, 0, sizeof(*o));
}

static bool base64url(const char *s)
{
    return *s && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                           "0123456789-_") == strlen(s);
}

int weir__acme_parse_authz(const char *p, size_t n, const char *type, weir_acme_authz *z)
{
    memset(z, 0, sizeof(*z));
    json_t *j = object(p, n);
    if (!j)
        return -1;
    z->root = j;
    z->status = str(j, "status");
    z->domain = str(json_object_get(j, "identifier"), "value");
    const json_t *x;
    size_t i;
    json_array_foreach(json_object_get(j, "challenges"), i, x)
    {
        const char *t = str(x, "type");
        if (!z->url && t && strcmp(t, type) == 0) {
            const char *token = str(x, "token");
            z->token = token && base64url(token) ? token : NULL;
            z->url = str(x, "url");
            if (!z->url)
                z->token = NULL;
        }
        if (!z->why)
            z->why = str(json_object_get(x, "error"), "detail");
    }
    return 0;
}

void weir__acme_authz_free(weir_acme_authz *z)
{
    json_decref(z->root);
    memset(z, 0, sizeof(*z));
}

/* src as a printable one-line string in dst: controls become '?', so
 * a hostile CA's text cannot forge log lines. */
static void printable(char *dst, size_t len, const char *src)
{
    size_t k = 0;
    for (; src && src[k] && k + 1 < len; k++)
        dst[k] = (unsigned char)src[k] < 0x20 || src[k] == 0x7f ? '?' : src[k];
    if (len)
        dst[k] = '\0';
}

int weir__acme_problem_kind(long status, const char *p, size_t n, char *type, size_t type_len,
                            char *detail, size_t detail_len)
{
    json_t *j = object(p, n);
    const char *t = str(j, "type");
    printable(type, type_len, t);
    printable(detail, detail_len, str(j, "detail"));
    int kind = WEIR_ACME_ERR;
    if (t && strcmp(t, "urn:ietf:params:acme:error:rateLimited") == 0)
        kind = WEIR_ACME_RATE_LIMITED;
    else if (!j || status >= 500)
        kind = WEIR_ACME_UNREACHABLE;
    json_decref(j);
    return kind;
}

bool weir__acme_is_bad_nonce(long status, const char *p, size_t n)
{
    if (status != 400)
        return false;
    json_t *j = object(p, n);
    const char *t = str(j, "type");
    bool bad = t && strcmp(t, "urn:ietf:params:acme:error:badNonce") == 0;
    json_decref(j);
    return bad;
}

int64_t weir__acme_rfc3339(const char *s)
{
    struct tm tm = {0};
    const char *e = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!e)
        return 0;
    if (*e == '.')
        while (*++e >= '0' && *e <= '9')
            ;
    int64_t t = (int64_t)timegm(&tm);
    if ((e[0] == '+' || e[0] == '-') && strlen(e) == 6 && e[3] == ':') {
        int d[4];
        for (int i = 0; i < 4; i++) {
            char c = e[i < 2 ? 1 + i : 2 + i];
            if (c < '0' || c > '9')
                return 0;
            d[i] = c - '0';
        }
        int64_t off = (d[0] * 10 + d[1]) * 3600 + (d[2] * 10 + d[3]) * 60;
        t += e[0] == '+' ? -off : off;
    } else if (e[0] != 'Z' || e[1]) {
        return 0;
    }
    return t;
}

int weir__acme_parse_window(const char *p, size_t n, int64_t *start, int64_t *end)
{
    json_t *j = object(p, n);
    const json_t *w = json_object_get(j, "suggestedWindow");
    *start = weir__acme_rfc3339(str(w, "start"));
    *end = weir__acme_rfc3339(str(w, "end"));
    json_decref(j);
    return *start && *end >= *start ? 0 : -1;
}

int64_t weir__acme_retry_after(const char *v, size_t n)
{
    int64_t s = 0;
    size_t i = 0;
    for (; i < n && v[i] >= '0' && v[i] <= '9'; i++)
        if (s <= RETRY_AFTER_MAX_S)
            s = s * 10 + (v[i] - '0');
    if (i == 0 || i != n)
        return 1; /* an HTTP date, or not a number: soon */
    return s > RETRY_AFTER_MAX_S ? RETRY_AFTER_MAX_S : s;
}
