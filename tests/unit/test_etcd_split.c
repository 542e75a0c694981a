/*
 * test_etcd_split.c - the configuration in etcd: a file cut into its
 * sections (src/app/etcd/split.c), the keys put back together with an
 * instance's --local file, errors named by key and line
 * (src/app/etcd/source.c), and the URL's parts.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config/config.h"
#include "app/etcd/source.h"
#include "app/etcd/split.h"

static weir_cfg_section *secs;
static size_t n_secs;
static int err_line;
static char err[200];

static int split(const char *t, bool fragment)
{
    weir__cfg_sections_free(secs, n_secs);
    secs = NULL;
    n_secs = 0;
    err_line = 0;
    err[0] = '\0';
    return weir__cfg_split(t, strlen(t), fragment, &secs, &n_secs, &err_line, err, sizeof(err));
}

static void done(void)
{
    weir__cfg_sections_free(secs, n_secs);
    secs = NULL;
    n_secs = 0;
}

static bool body_is(size_t i, const char *want)
{
    return secs[i].body_len == strlen(want) && memcmp(secs[i].body, want, secs[i].body_len) == 0;
}

Test(etcd_split, sections_with_their_bodies, .fini = done)
{
    const char *t = "# a comment\n"
                    "[basic]\nthreads = 2\n\n\n"
                    "[servers]\n"
                    "[servers.main]\naddr = \"127.0.0.1:80\" # [x]\nlocations = [\n  \"[a]\",\n"
                    "  \"b\"]\n\n"
                    "[locations.\"odd name\"]\nupstream = \"u\"\nx = \"\"\"\n[servers.no]\n\"\"\"\n"
                    "[ upstreams . u ] # trailing comment\naddrs = ['1.2.3.4:5']\n";
    cr_assert_eq(split(t, false), 0, "%d: %s", err_line, err);
    cr_assert_eq(n_secs, 4);
    cr_assert_str_eq(secs[0].section, "basic");
    cr_assert_null(secs[0].name);
    cr_assert_eq(secs[0].line, 2);
    cr_assert(body_is(0, "threads = 2\n"));
    cr_assert_str_eq(secs[1].section, "servers");
    cr_assert_str_eq(secs[1].name, "main");
    cr_assert_eq(secs[1].line, 7);
    cr_assert(body_is(1, "addr = \"127.0.0.1:80\" # [x]\nlocations = [\n  \"[a]\",\n  \"b\"]\n"));
    cr_assert_str_eq(secs[2].name, "odd name");
    cr_assert(body_is(2, "upstream = \"u\"\nx = \"\"\"\n[servers.no]\n\"\"\"\n"));
    cr_assert_str_eq(secs[3].section, "upstreams");
    cr_assert_str_eq(secs[3].name, "u");
    cr_assert(body_is(3, "addrs = ['1.2.3.4:5']\n"));
}

Test(etcd_split, what_is_not_a_section, .fini = done)
{
    struct {
        const char *text;
        int line;
        const char *msg;
    } bad[] = {
        {"a = 1\n[basic]\n", 1, "keys outside a section"},
        {"[servers]\nx = 1\n", 2, "keys outside a section"},
        {"[basic]\n[[upstreams]]\n", 2, "an array of tables"},
        {"[basic]\n\n[upstreams.u.health]\nx = 1\n", 3, "a sub-table header"},
        {"[basic.x]\n", 1, "a sub-table header"},
        {"[nosuch]\n", 1, "not a configuration section"},
        {"[servers.a] x = 1\n", 1, "text after a header"},
        {"[servers.a\n", 1, "a header weir cannot read"},
        {"[basic]\nx = \"no end\n", 2, "a string that does not end"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_assert_eq(split(bad[i].text, false), -1, "%zu", i);
        cr_assert_eq(err_line, bad[i].line, "%zu: line %d", i, err_line);
        cr_assert(strstr(err, bad[i].msg), "%zu: %s", i, err);
    }
}

Test(etcd_split, a_fragment_holds_no_header, .fini = done)
{
    cr_assert_eq(split("addr = \"x\"\n# [not a header]\ns = '''\n[nor this]\n'''\n", true), 0, "%s",
                 err);
    cr_assert_eq(n_secs, 0);
    cr_assert_eq(split("a = 1\n\n  [servers.other]\nb = 2\n", true), -1);
    cr_assert_eq(err_line, 3);
    cr_assert(strstr(err, "no [header]"), "%s", err);
}

static weir_etcd_kvs kvs_of(const char *const *kv, size_t n)
{
    weir_etcd_kvs k = {calloc(n, sizeof(weir_etcd_kv)), n, 7};
    for (size_t i = 0; i < n; i++) {
        k.v[i].key = strdup(kv[2 * i]);
        k.v[i].key_len = strlen(kv[2 * i]);
        k.v[i].value = strdup(kv[2 * i + 1]);
        k.v[i].value_len = strlen(kv[2 * i + 1]);
        k.v[i].mod_revision = (int64_t)i + 1;
    }
    return k;
}

Test(etcd_split, keys_assemble_with_the_local_file_first)
{
    const char *kv[] = {"/p/upstreams/u",     "addrs = [\"127.0.0.1:9\"]",
                        "/p/servers/main",    "addr = \"0.0.0.0:80\"\nlocations = [\"l\"]\n",
                        "/p/locations/l",     "upstream = \"u\"\n",
                        "/p/instances/w1",    "{\"id\": \"w1\"}",
                        "/p/locks/singleton", "w1",
                        "/px/basic",          "not ours"};
    weir_etcd_kvs k = kvs_of(kv, 6);
    const char *local = "[servers.main]\naddr = \"127.0.0.1:8080\"\nlocations = [\"l\"]\n";
    weir_cfg_errors errs = {0};
    size_t len = 0;
    char *t = weir__etcd_assemble(&k, "/p", "etcd://h:1/p", "local.toml", local, strlen(local),
                                  true, &len, NULL, &errs);
    cr_assert_not_null(t, "%s", errs.n ? errs.v[0] : "");
    cr_assert_eq(strlen(t), len);
    cr_assert(strncmp(t, "# weir config from etcd://h:1/p at revision 7\n", 46) == 0, "%s", t);
    const char *mine = strstr(t, "addr = \"127.0.0.1:8080\"");
    const char *up = strstr(t, "[upstreams.u]\naddrs = [\"127.0.0.1:9\"]\n");
    cr_assert(mine && up && mine < up, "%s", t);
    cr_assert_null(strstr(t, "0.0.0.0:80"), "etcd's [servers.main] is replaced: %s", t);
    cr_assert_null(strstr(t, "w1"), "the fleet's keys are not config: %s", t);
    cr_assert_null(strstr(t, "not ours"), "%s", t);
    /* The text loads, and splits back into the same sections. */
    weir__config_resolve_names = false;
    weir_config *c = weir__config_load(t, len, "x", &errs);
    cr_assert_not_null(c, "%s", errs.n ? errs.v[0] : "");
    weir__config_unref(c);
    cr_assert_eq(split(t, false), 0, "%s", err);
    cr_assert_eq(n_secs, 3);
    done();
    free(t);
    weir__etcd_kvs_free(&k);
}

Test(etcd_split, bad_keys_are_named)
{
    const char *kv[] = {"/p/servers",       "addr = \"x\"\n",
                        "/p/basic/x",       "threads = 1\n",
                        "/p/nosuch/a",      "x = 1\n",
                        "/p/upstreams/a/b", "addrs = []\n",
                        "/p/upstreams/ok",  "addrs = [\n",
                        "/p/locations/l",   "upstream = \"u\"\n[servers.x]\n",
                        "/p/basic",         "threads = 1\nconfig_cache = \"/tmp/c\"\n"};
    weir_etcd_kvs k = kvs_of(kv, 7);
    weir_cfg_errors errs = {0};
    size_t len;
    char *t =
        weir__etcd_assemble(&k, "/p", "etcd://h:1/p", NULL, NULL, 0, false, &len, NULL, &errs);
    cr_assert_null(t);
    const char *want[] = {"/p/servers: not a configuration key",
                          "/p/basic/x: not a configuration key",
                          "/p/nosuch/a: not a configuration key",
                          "/p/upstreams/a/b: a section name has no '/'",
                          "/p/upstreams/ok:2:1:",
                          "/p/locations/l:2: a fragment holds one section's keys",
                          "/p/basic:2: 'config_cache' is the instance's own"};
    cr_assert_eq(errs.n, 7, "%zu", errs.n);
    for (size_t i = 0; i < 7; i++)
        cr_assert(strncmp(errs.v[i], want[i], strlen(want[i])) == 0, "%zu: %s", i, errs.v[i]);
    weir__cfg_errors_free(&errs);
    weir__etcd_kvs_free(&k);
}

Test(etcd_split, load_errors_name_the_key_and_its_line)
{
    const char *kv[] = {"/p/locations/l", "upstream = \"u\"\n\nbogus = 1\n", "/p/upstreams/u",
                        "addrs = [\"127.0.0.1:9\"]\n"};
    weir_etcd_kvs k = kvs_of(kv, 2);
    const char *local =
        "[servers.main]\naddr = \"127.0.0.1:8080\"\nlocations = [\"l\", \"gone\"]\n";
    weir_cfg_errors errs = {0};
    size_t len;
    weir_etcd_map *map = NULL;
    char *t = weir__etcd_assemble(&k, "/p", "etcd://h:1/p", "local.toml", local, strlen(local),
                                  false, &len, &map, &errs);
    cr_assert_not_null(t);
    weir__config_resolve_names = false;
    weir_config *c = weir__config_load(t, len, WEIR_ETCD_TEXT_NAME, &errs);
    cr_assert_null(c);
    weir__etcd_map_errors(map, &errs);
    bool in_etcd = false, in_local = false;
    for (size_t i = 0; i < errs.n; i++) {
        in_etcd |= strncmp(errs.v[i], "/p/locations/l:3:", 17) == 0 && strstr(errs.v[i], "bogus");
        in_local |= strncmp(errs.v[i], "local.toml:3:", 13) == 0 && strstr(errs.v[i], "gone");
        cr_assert(strncmp(errs.v[i], WEIR_ETCD_TEXT_NAME, strlen(WEIR_ETCD_TEXT_NAME)) != 0, "%s",
                  errs.v[i]);
    }
    cr_assert(in_etcd && in_local, "%zu: %s", errs.n, errs.n ? errs.v[0] : "");
    weir__cfg_errors_free(&errs);
    weir__etcd_map_free(map);
    free(t);
    weir__etcd_kvs_free(&k);
}

Test(etcd_split, urls)
{
    weir_etcd_url u;
    char e[300];
    cr_assert_eq(
        weir__etcd_url_parse("etcd://a:1,b:2/fleet/x?user=u&password=p%26q", &u, e, sizeof(e)), 0,
        "%s", e);
    cr_assert_eq(u.n_endpoints, 2);
    cr_assert_str_eq(u.endpoints[0], "http://a:1");
    cr_assert_str_eq(u.endpoints[1], "http://b:2");
    cr_assert_str_eq(u.prefix, "/fleet/x");
    cr_assert_str_eq(u.user, "u");
    cr_assert_str_eq(u.password, "p&q");
    weir__etcd_url_free(&u);
    cr_assert_eq(weir__etcd_url_parse("etcds://a:1/p/", &u, e, sizeof(e)), 0, "%s", e);
    cr_assert_str_eq(u.endpoints[0], "https://a:1");
    cr_assert_str_eq(u.prefix, "/p");
    weir__etcd_url_free(&u);
    const char *bad[] = {
        "etcd://a:1",        "etcd://a:1/",      "etcd://a/p",
        "etcd:///p",         "etcd://a:1/p?x=1", "etcd://a:1/p?user=u",
        "etcd://a:1/p?user", "etcd://a:1,/p",    "etcd://a:1/p?user=u&password=a&password=b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(weir__etcd_url_parse(bad[i], &u, e, sizeof(e)), -1, "%s", bad[i]);
    /* Every password masked, whatever its length; nothing else. */
    const char *masks[][2] = {
        {"etcd://a:1/p", "etcd://a:1/p"},
        {"etcd://a:1/p?password=", "etcd://a:1/p?password=***"},
        {"etcd://a:1/p?user=u&password=x", "etcd://a:1/p?user=u&password=***"},
        {"etcd://a:1/p?password=long&user=mypassword=x&password=z",
         "etcd://a:1/p?password=***&user=mypassword=x&password=***"}};
    for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
        char *m = weir__etcd_url_masked(masks[i][0]);
        cr_assert_str_eq(m, masks[i][1]);
        free(m);
    }
}
