/*
 * weir-acme-order.c - test tool: one ACME order with weir's client
 * (src/app/acme/client.c), its HTTP-01 answers written as files under a
 * web root that the test serves.
 *
 *   weir-acme-order DIRECTORY_URL CA_FILE WEBROOT ACCOUNT_KEY OUT DOMAIN...
 *
 * Env: WEIR_ACME_KEY_TYPE (ec256 ...), WEIR_ACME_WRONG=1 (answer a wrong
 * key authorization). Prints "ok BAD_NONCES ACCOUNT_URL" and writes the
 * chain to OUT, or prints the error and exits with 10 - the error kind.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app/acme/client.h"
#include "app/acme/jws.h"

static int present(void *arg, const char *domain, const char *token, const char *ka, char *err,
                   size_t err_len)
{
    (void)domain;
    char path[4096];
    snprintf(path, sizeof(path), "%s/.well-known/acme-challenge/%s", (const char *)arg, token);
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, err_len, "%s: %s", path, strerror(errno));
        return -1;
    }
    fputs(getenv("WEIR_ACME_WRONG") ? "wrong" : ka, f);
    fclose(f);
    return 0;
}

static void cleanup(void *arg, const char *domain, const char *token)
{
    (void)domain;
    char path[4096];
    snprintf(path, sizeof(path), "%s/.well-known/acme-challenge/%s", (const char *)arg, token);
    unlink(path);
}

int main(int argc, char **argv)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s DIRECTORY CA WEBROOT ACCOUNT_KEY OUT DOMAIN...\n", argv[0]);
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/.well-known", argv[3]);
    mkdir(dir, 0755);
    snprintf(dir, sizeof(dir), "%s/.well-known/acme-challenge", argv[3]);
    mkdir(dir, 0755);
    weir_acme_key_type kt = WEIR_ACME_EC256;
    const char *kts = getenv("WEIR_ACME_KEY_TYPE");
    if (kts && weir__acme_key_type(kts, &kt) != 0)
        return 2;
    char err[1024];
    EVP_PKEY *account = weir__acme_key_load_or_create(argv[4], WEIR_ACME_EC256, err, sizeof(err));
    EVP_PKEY *key = weir__acme_key_new(kt);
    if (!account || !key) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    weir_acme_options o = {.directory = argv[1],
                           .ca_file = argv[2],
                           .account_key = account,
                           .email = "ops@example.com",
                           .max_wait_ms = 30000};
    weir_acme *a = weir__acme_new(&o);
    weir_acme_challenge_ops ops = {"http-01", present, cleanup, argv[3]};
    char *chain = NULL;
    int64_t ra = 0;
    int rc = weir__acme_order(a, (const char *const *)argv + 6, (size_t)(argc - 6), key, &ops,
                              &chain, &ra, err, sizeof(err));
    int status = 0;
    if (rc == WEIR_ACME_OK) {
        FILE *f = fopen(argv[5], "w");
        fputs(chain, f);
        fclose(f);
        printf("ok %llu %s\n", (unsigned long long)weir__acme_bad_nonces(a),
               weir__acme_account_url(a));
    } else {
        printf("error %d %s\n", rc, err);
        status = 10 - rc;
    }
    free(chain);
    weir__acme_free(a);
    EVP_PKEY_free(account);
    EVP_PKEY_free(key);
    return status;
}
