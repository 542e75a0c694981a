/*
 * answer.h - what an ACME server answers (RFC 8555, RFC 9773), read from
 * its bytes apart from the HTTP exchange (client.c), so that every answer
 * a hostile or broken server can send is fuzzed (fuzz/acme_answer_fuzz.c):
 * the directory, problem documents, accounts, orders, authorizations, the
 * ARI window, and the Retry-After and badNonce signals.
 *
 * A parsed document keeps its JSON root; the string fields point into it
 * and live until its _free. A field the answer lacks, or that is not a
 * string, is NULL.
 */
#ifndef WEIR_APP_ACME_ANSWER_H
#define WEIR_APP_ACME_ANSWER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weir_acme_dir {
    void *root;
    const char *new_nonce, *new_account, *new_order; /* all three, or it is no directory */
    const char *renewal_info;                        /* ARI; NULL when the CA offers none */
} weir_acme_dir;

/* 0 and *d for a directory (an object naming the three URLs), else -1
 * (nothing to free). */
int weir__acme_parse_directory(const char *p, size_t n, weir_acme_dir *d);
void weir__acme_dir_free(weir_acme_dir *d);

/* The "status" of an account, order or authorization: 0 and *doc (free
 * it with weir__acme_doc_free; *status NULL when there is none), or -1
 * when p is no JSON object. */
int weir__acme_parse_status(const char *p, size_t n, void **doc, const char **status);
void weir__acme_doc_free(void *doc);

typedef struct weir_acme_order_doc {
    void *root;
    const char *status, *finalize, *certificate;
    const char **authz; /* n_authz URLs, the strings of "authorizations" */
    size_t n_authz;
} weir_acme_order_doc;

/* 0 and *o for an order object, else -1. An authorization that is no
 * string is left out, and the order then fails (n_authz is short of
 * its array: authz_bad). */
int weir__acme_parse_order(const char *p, size_t n, weir_acme_order_doc *o, bool *authz_bad);
void weir__acme_order_free(weir_acme_order_doc *o);

typedef struct weir_acme_authz {
    void *root;
    const char *status, *domain; /* identifier.value */
    /* The first challenge of the asked type: its token (only when it is
     * base64url, as RFC 8555 8.1 says, so it is safe in a path and a
     * file name) and URL. */
    const char *token, *url;
    const char *why; /* the first challenge error's "detail" */
} weir_acme_authz;

/* 0 and *z for an authorization object, else -1. */
int weir__acme_parse_authz(const char *p, size_t n, const char *type, weir_acme_authz *z);
void weir__acme_authz_free(weir_acme_authz *z);

/* Error kinds of a problem document (the values of weir_acme_error). */
int weir__acme_problem_kind(long status, const char *p, size_t n, char *type, size_t type_len,
                            char *detail, size_t detail_len);

/* True for a problem document of type badNonce. */
bool weir__acme_is_bad_nonce(long status, const char *p, size_t n);

/* ARI's "suggestedWindow" as Unix times: 0, or -1 when it has none or
 * its end is before its start. */
int weir__acme_parse_window(const char *p, size_t n, int64_t *start, int64_t *end);

/* "2026-12-06T21:00:00Z" (fractions, and offsets such as "+01:00") as Unix
 * time; 0 when it is not one. */
int64_t weir__acme_rfc3339(const char *s);

/* A Retry-After value (n bytes, trimmed) in seconds: delay-seconds, or 1
 * for an HTTP date or anything else ("soon"). */
int64_t weir__acme_retry_after(const char *v, size_t n);

#endif
