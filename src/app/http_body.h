/*
 * http_body.h - an HTTP answer's body collected by libcurl (its write
 * callback), NUL-terminated, up to a limit: past it the transfer stops and
 * too_big says why. For the control-thread clients (etcd, ACME, OCSP).
 * And one send whose answer's body does not matter (webhooks, traces,
 * Pushgateway).
 */
#ifndef WEIR_APP_HTTP_BODY_H
#define WEIR_APP_HTTP_BODY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct weir_http_body {
    char *p; /* malloc'd, NUL-terminated; NULL until the first byte */
    size_t len;
    size_t max; /* 0: 1 MiB */
    bool too_big;
} weir_http_body;

/* CURLOPT_WRITEFUNCTION with CURLOPT_WRITEDATA a weir_http_body. */
size_t weir__http_body_write(char *p, size_t size, size_t n, void *arg);

/*
 * Sends body (n bytes) to url (http or https) with method ("POST", "PUT"),
 * Content-Type ctype and the extra "Name: value" header lines, within
 * timeout_ms (connect within 3 s), over the libcurl handle c (reset first,
 * so its connection may be reused), or a handle of its own when c is
 * NULL. The answer's body is dropped. Returns the HTTP status, or 0 with
 * err set when none came; a status outside 2xx also sets err ("HTTP 503").
 */
long weir__http_send(void *c, const char *method, const char *url, const char *ctype,
                     const char *body, size_t n, const char *const *headers, size_t n_headers,
                     long timeout_ms, char *err, size_t err_len);

#endif
