/*
 * test_config.c - configuration loading: the model a valid file produces and
 * one case per class of error.
 */
#include <criterion/criterion.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/config/config.h"

static weir_config *load(const char *text, weir_cfg_errors *errs)
{
    return weir__config_load(text, strlen(text), "t.toml", errs);
}

/* Asserts loading fails with an error containing `want`. */
static void expect_error(const char *text, const char *want)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load(text, &errs);
    cr_assert_null(c, "loaded although '%s' was expected", want);
    bool found = false;
    for (size_t i = 0; i < errs.n; i++)
        found = found || strstr(errs.v[i], want) != NULL;
    if (!found) {
        for (size_t i = 0; i < errs.n; i++)
            cr_log_error("got: %s", errs.v[i]);
    }
    cr_assert(found, "no error containing '%s'", want);
    weir__cfg_errors_free(&errs);
}

#define MINIMAL_TAIL                                                                               \
    "[locations.all]\nupstream = \"u\"\n"                                                          \
    "[upstreams.u]\naddrs = [\"127.0.0.1:9000\"]\n"

Test(config, valid_file_builds_the_model)
{
    const char *text = "[basic]\nthreads = 3\ngrace_period = \"1m30s\"\nlog_level = \"warn\"\n"
                       "[servers.web]\naddr = [\"127.0.0.1:8080\", \"[::1]:8080\"]\n"
                       "locations = [\"api\", \"all\"]\naccess_log = \"combined\"\n"
                       "client_header_timeout = \"250ms\"\nmax_body_size = \"10MB\"\n"
                       "[locations.api]\nhost = [\"api.example.com\", \"*.api.example.com\"]\n"
                       "path = \"/v1/\"\nweight = 10\nupstream = \"api\"\n"
                       "rewrite = \"^/v1/(.*) /$1\"\n"
                       "proxy_set_headers = [\"X-A: 1\", \"X-B:two words\"]\n"
                       "proxy_remove_headers = \"Cookie\"\n"
                       "client_max_body_size = 1024\n"
                       "[locations.all]\nupstream = \"api\"\n"
                       "[upstreams.api]\naddrs = [\"127.0.0.1:9000 3\", \"127.0.0.1:9001\"]\n"
                       "read_timeout = \"2s\"\nkeepalive = 8\n";
    weir_cfg_errors errs = {0};
    weir_config *c = load(text, &errs);
    for (size_t i = 0; i < errs.n; i++)
        cr_log_error("%s", errs.v[i]);
    cr_assert_not_null(c);
    cr_assert_eq(c->basic.threads, 3);
    cr_assert_eq(c->basic.grace_period_ms, 90000);
    cr_assert_str_eq(c->basic.log_level, "warn");
    cr_assert_eq(c->n_servers, 1);
    weir_cfg_server *s = &c->servers[0];
    cr_assert_str_eq(s->name, "web");
    cr_assert_eq(s->n_addrs, 2);
    cr_assert_eq(s->n_locations, 2);
    cr_assert_str_eq(s->locations[0]->name, "api");
    cr_assert_not_null(s->access_log);
    cr_assert_eq(s->opts.client_header_timeout_ms, 250);
    cr_assert_eq(s->opts.max_body_bytes, 10u << 20);
    weir_cfg_location *l = s->locations[0];
    cr_assert_eq(l->n_hosts, 2);
    cr_assert(l->has_weight && l->weight == 10);
    cr_assert_not_null(l->rewrite_re);
    cr_assert_str_eq(l->rewrite_repl, "/$1");
    cr_assert_eq(l->proxy_set.n, 2);
    cr_assert_str_eq(l->proxy_set.v[1].name, "X-B");
    cr_assert_str_eq(l->proxy_set.v[1].value, "two words");
    cr_assert_eq(l->proxy_remove.n, 1);
    cr_assert_null(l->proxy_remove.v[0].value);
    cr_assert(l->has_max_body && l->client_max_body_size == 1024);
    weir_cfg_upstream *u = l->upstream;
    cr_assert_str_eq(u->name, "api");
    cr_assert_eq(u->n_backends, 2);
    cr_assert_eq(u->backends[0].weight, 3);
    cr_assert_eq(u->read_timeout_ms, 2000);
    cr_assert_eq(u->keepalive, 8);
    cr_assert_not_null(s->router);
    weir_cfg_location *got =
        weir__router_match(s->router, WEIR_STR("x.api.example.com"), WEIR_STR("/v1/users"));
    cr_assert_eq(got, l);
    got = weir__router_match(s->router, WEIR_STR("other"), WEIR_STR("/v1/users"));
    cr_assert_str_eq(got->name, "all");
    /* A snapshot lives until its last reference goes. */
    weir__config_ref(c);
    weir__config_unref(c);
    weir__config_unref(c);
}

Test(config, default_config_is_valid)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load(weir__default_config, &errs);
    cr_assert_not_null(c);
    cr_assert_eq(c->n_servers, 3);
    weir__config_unref(c);
}

Test(config, error_classes)
{
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n" MINIMAL_TAIL
                 "[upstreams.v]\nadrs = [\"127.0.0.1:1\"]\n",
                 "t.toml:9: unknown key 'adrs' in [upstreams.v]; did you mean 'addrs'?");
    expect_error("[basic]\nthreads = \"four\"\n",
                 "t.toml:2: 'threads' in [basic] must be an integer, not string");
    expect_error("[basic]\nthreads = -1\n",
                 "t.toml:2: 'threads' in [basic] is -1; it must be between 0 and 1024");
    expect_error("[basic]\ngrace_period = 10\n", "'grace_period' in [basic] must be a duration");
    expect_error("[basic]\ngrace_period = \"10 s\"\n", "must be a duration");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\nmax_body_size = "
                 "\"1TB\"\n" MINIMAL_TAIL,
                 "t.toml:4: 'max_body_size' in [servers.a] must be a size");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                 "[locations.all]\nupstream = \"uu\"\n[upstreams.u]\naddrs = []\n",
                 "t.toml:5: [locations.all] refers to undefined upstream 'uu'; did you mean 'u'?");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"al\"]\n" MINIMAL_TAIL,
                 "t.toml:3: [servers.a] refers to undefined location 'al'; did you mean 'all'?");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                 "[servers.b]\naddr = [\"127.0.0.1:2\", \"127.0.0.1:1\"]\nlocations = "
                 "[\"all\"]\n" MINIMAL_TAIL,
                 "t.toml:4: listen address 127.0.0.1:1 of [servers.b] is also used by [servers.a]");
    expect_error(
        "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
        "[locations.all]\npath = \"~^/(a\"\nupstream = \"u\"\n[upstreams.u]\naddrs = []\n",
        "t.toml:5: [locations.all]: invalid path regex '^/(a': missing closing parenthesis");
    expect_error(
        "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
        "[locations.all]\nhost = \"a.*.com\"\nupstream = \"u\"\n[upstreams.u]\naddrs = []\n",
        "t.toml:5: [locations.all]: invalid host 'a.*.com'");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                 "[locations.all]\npath = \"api\"\nupstream = \"u\"\n[upstreams.u]\naddrs = []\n",
                 "'path' in [locations.all] must be");
    expect_error(
        "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
        "[locations.all]\nupstream = \"u\"\n[upstreams.u]\naddrs = [\"nosuchhost.invalid:80\"]\n",
        "t.toml:7: cannot resolve 'nosuchhost.invalid' in [upstreams.u]");
    expect_error("[servers.a]\naddr = \"localhost:1\"\nlocations = [\"all\"]\n" MINIMAL_TAIL,
                 "t.toml:2: invalid listen address 'localhost:1' in [servers.a]");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n" MINIMAL_TAIL
                 "[upstreams.w]\naddrs = [\"127.0.0.1:1 0\"]\n",
                 "invalid weight '0' in [upstreams.w]");
    expect_error("[upstreams.u]\naddrs = []\n", "no [servers.NAME] section");
    expect_error("x = [1,\n", "t.toml:");
    expect_error(
        "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
        "[locations.all]\nupstream = \"u\"\nrewrite = \"^/(x /$1\"\n[upstreams.u]\naddrs = []\n",
        "t.toml:6: invalid regex in 'rewrite' of [locations.all]");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\naccess_log = "
                 "\"{nope}\"\n" MINIMAL_TAIL,
                 "t.toml:4: 'access_log' in [servers.a]: unknown variable '{nope}'");
    expect_error("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                 "[locations.all]\nupstream = \"u\"\nproxy_set_headers = [\"Bad Name: "
                 "v\"]\n[upstreams.u]\naddrs = []\n",
                 "invalid header name 'Bad Name'");
}

Test(config, every_error_is_reported)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load("[basic]\nthreads = -1\nbogus = 1\n"
                          "[servers.a]\naddr = \"x\"\nlocations = [\"nope\"]\n",
                          &errs);
    cr_assert_null(c);
    cr_assert_geq(errs.n, 4, "got %zu errors", errs.n);
    weir__cfg_errors_free(&errs);
}

Test(config, empty_upstream_is_valid)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                          "[locations.all]\nupstream = \"u\"\n[upstreams.u]\naddrs = []\n",
                          &errs);
    cr_assert_not_null(c);
    cr_assert_eq(c->upstreams[0].n_backends, 0);
    weir__config_unref(c);
}

Test(config, rewrite_keeps_its_text)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load("[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                          "[locations.all]\nupstream = \"u\"\nrewrite = \"^/v1/(.*)  /$1\"\n"
                          "[upstreams.u]\naddrs = []\n",
                          &errs);
    cr_assert_not_null(c);
    cr_assert_str_eq(c->locations[0].rewrite_text, "^/v1/(.*)  /$1", "as written");
    cr_assert_str_eq(c->locations[0].rewrite_repl, "/$1");
    weir__config_unref(c);
}

/* ---- [certificates.NAME] no server lists ---- */

/* A self-signed P-256 certificate and its key in DIR/NAME.crt, DIR/NAME.key. */
static void make_cert(const char *dir, const char *name)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    cr_assert(k && x);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
    X509_set_issuer_name(x, n);
    cr_assert(X509_sign(x, k, EVP_sha256()) > 0);
    char path[300];
    snprintf(path, sizeof(path), "%s/%s.crt", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert(f && PEM_write_X509(f, x));
    fclose(f);
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    f = fopen(path, "w");
    cr_assert(f && PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL));
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(k);
}

static char cert_dir[64];

static void make_certs(void)
{
    snprintf(cert_dir, sizeof(cert_dir), "/tmp/weir-test-certs-XXXXXX");
    cr_assert_not_null(mkdtemp(cert_dir));
    make_cert(cert_dir, "a");
    make_cert(cert_dir, "b");
}

static void remove_certs(void)
{
    const char *names[] = {"a.crt", "a.key", "b.crt", "b.key"};
    char path[300];
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof(path), "%s/%s", cert_dir, names[i]);
        unlink(path);
    }
    rmdir(cert_dir);
}

/* A config whose line 1 opens [certificates.spare], line 2 is its cert and
 * line 3 its key; no server lists it. `upstream_extra` goes into
 * [upstreams.u] (line 11 on). */
static char *spare_cert_config(const char *cert, const char *key, const char *upstream_extra)
{
    char *text = NULL;
    int n = asprintf(&text,
                     "[certificates.spare]\ncert = \"%s\"\nkey = \"%s\"\n"
                     "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                     "[locations.all]\nupstream = \"u\"\n"
                     "[upstreams.u]\naddrs = []\n%s",
                     cert, key, upstream_extra);
    cr_assert_geq(n, 0);
    return text;
}

/* Loading fails with exactly one error, and it is `want`. */
static void expect_only_error(const char *text, const char *want)
{
    weir_cfg_errors errs = {0};
    weir_config *c = load(text, &errs);
    cr_assert_null(c, "loaded although '%s' was expected", want);
    for (size_t i = 0; i < errs.n; i++)
        cr_log_info("got: %s", errs.v[i]);
    cr_assert_eq(errs.n, 1, "%zu errors", errs.n);
    cr_assert(strncmp(errs.v[0], want, strlen(want)) == 0, "got '%s', expected '%s...'", errs.v[0],
              want);
    weir__cfg_errors_free(&errs);
}

Test(config, unlisted_certificate_files_are_checked, .init = make_certs, .fini = remove_certs)
{
    char crt[300], key[300], other_key[300], missing[300], want[700];
    snprintf(crt, sizeof(crt), "%s/a.crt", cert_dir);
    snprintf(key, sizeof(key), "%s/a.key", cert_dir);
    snprintf(other_key, sizeof(other_key), "%s/b.key", cert_dir);
    snprintf(missing, sizeof(missing), "%s/missing.pem", cert_dir);

    /* Good files: valid although no server uses them. */
    char *text = spare_cert_config(crt, key, "");
    weir_cfg_errors errs = {0};
    weir_config *c = load(text, &errs);
    for (size_t i = 0; i < errs.n; i++)
        cr_log_error("%s", errs.v[i]);
    cr_assert_not_null(c);
    weir__config_unref(c);
    free(text);

    /* Each bad file at the line naming it. */
    text = spare_cert_config(missing, key, "");
    snprintf(want, sizeof(want),
             "t.toml:2: [certificates.spare]: TLS: cannot read certificate file %s", missing);
    expect_only_error(text, want);
    free(text);

    text = spare_cert_config(crt, missing, "");
    snprintf(want, sizeof(want), "t.toml:3: [certificates.spare]: TLS: cannot read key file %s",
             missing);
    expect_only_error(text, want);
    free(text);

    text = spare_cert_config(crt, other_key, "");
    snprintf(want, sizeof(want),
             "t.toml:3: [certificates.spare]: TLS: the key in %s does not match its certificate",
             other_key);
    expect_only_error(text, want);
    free(text);

    /* Used only as an upstream's client certificate: reported once, at the
     * file's line, not again by the upstream. */
    text = spare_cert_config(crt, other_key, "tls = true\nclient_cert = \"spare\"\n");
    snprintf(want, sizeof(want), "t.toml:3: [certificates.spare]: TLS: the key in %s", other_key);
    expect_only_error(text, want);
    free(text);
}

Test(config, listed_certificate_errors_are_reported_once, .init = make_certs, .fini = remove_certs)
{
    char crt[300], other_key[300], want[700];
    snprintf(crt, sizeof(crt), "%s/a.crt", cert_dir);
    snprintf(other_key, sizeof(other_key), "%s/b.key", cert_dir);
    char *text = NULL;
    cr_assert_geq(asprintf(&text,
                           "[certificates.site]\ncert = \"%s\"\nkey = \"%s\"\n"
                           "[servers.a]\naddr = \"127.0.0.1:1\"\nlocations = [\"all\"]\n"
                           "certificates = \"site\"\n" MINIMAL_TAIL,
                           crt, other_key),
                  0);
    /* The server checks it (with its own settings); the unlisted check
     * leaves it alone. */
    snprintf(want, sizeof(want), "t.toml:3: [servers.a]: TLS: the key in %s", other_key);
    expect_only_error(text, want);
    free(text);
}
