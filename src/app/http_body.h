/*
 * http_body.h - an HTTP answer's body collected by libcurl (its write
 * callback), NUL-terminated, up to a limit: past it the transfer stops and
 * too_big says why. For the control-thread clients (etcd, ACME, OCSP).
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

#endif
