/*
 * http_body.c - collecting a libcurl body (http_body.h).
 */
#include "app/http_body.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t weir__http_body_write(char *p, size_t size, size_t n, void *arg)
{
    weir_http_body *b = arg;
    size_t add = size * n;
    if (b->len + add > (b->max ? b->max : (size_t)1 << 20)) {
        b->too_big = true;
        return 0;
    }
    char *np = realloc(b->p, b->len + add + 1);
    if (!np)
        return 0;
    memcpy(np + b->len, p, add);
    b->p = np;
    b->len += add;
    b->p[b->len] = '\0';
    return add;
}

static size_t discard(char *p, size_t size, size_t n, void *arg)
{
    (void)p;
    (void)arg;
    return size * n;
}

long weir__http_send(void *handle, const char *method, const char *url, const char *ctype,
                     const char *body, size_t n, const char *const *headers, size_t n_headers,
                     long timeout_ms, char *err, size_t err_len)
{
    CURL *c = handle ? handle : curl_easy_init();
    if (!c) {
        snprintf(err, err_len, "no libcurl handle");
        return 0;
    }
    if (handle)
        curl_easy_reset(c);
    char ct[128];
    snprintf(ct, sizeof(ct), "Content-Type: %s", ctype);
    struct curl_slist *h = curl_slist_append(NULL, ct);
    for (size_t i = 0; h && i < n_headers; i++) {
        struct curl_slist *nh = curl_slist_append(h, headers[i]);
        if (nh)
            h = nh;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)n);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms < 3000 ? timeout_ms : 3000L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (!handle)
        curl_easy_cleanup(c);
    curl_slist_free_all(h);
    if (rc != CURLE_OK) {
        snprintf(err, err_len, "%s", curl_easy_strerror(rc));
        return 0;
    }
    if (status < 200 || status > 299)
        snprintf(err, err_len, "HTTP %ld", status);
    return status;
}
