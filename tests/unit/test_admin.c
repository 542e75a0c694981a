/*
 * test_admin.c - the admin API's pure helpers: the constant-time token
 * comparison and the rewrite of an upstream's `addrs` in the TOML text.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "app/admin/admin.h"

static bool teq(const char *a, const char *b)
{
    return weir__admin_token_equal(a, strlen(a), b, strlen(b));
}

Test(admin_token, equal_only_when_every_byte_and_the_length_match)
{
    cr_assert(teq("secret", "secret"));
    cr_assert(!teq("secreT", "secret"));
    cr_assert(!teq("Secret", "secret"));
    cr_assert(!teq("secre", "secret"));
    cr_assert(!teq("secrets", "secret"));
    cr_assert(!teq("", "secret"));
    /* embedded NUL: lengths are what count, not C strings */
    cr_assert(!weir__admin_token_equal("sec\0et", 6, "sec\0ez", 6));
    cr_assert(weir__admin_token_equal("sec\0et", 6, "sec\0et", 6));
}

/* Rewrites and returns the new text (or NULL, err filled). */
static char *rewrite(const char *text, const char *up, const char *const *addrs, size_t n,
                     char *err)
{
    char *out = NULL;
    size_t len = 0;
    if (weir__admin_rewrite_addrs(text, strlen(text), up, addrs, n, &out, &len, err, 300) < 0)
        return NULL;
    cr_assert_eq(strlen(out), len);
    return out;
}

Test(admin_rewrite, replaces_only_the_addrs_value_and_keeps_comments)
{
    const char *in = "# top\n"
                     "[upstreams.a]\n"
                     "addrs = [\"10.0.0.1:80\"] # keep\n"
                     "algo = \"random\"\n"
                     "\n"
                     "[upstreams.b] # the one\n"
                     "  addrs = [ # multi-line\n"
                     "    \"10.0.0.2:80\", # x ] not the end\n"
                     "    \"10.0.0.3:80 2\",\n"
                     "  ]   # trailing\n"
                     "keepalive = 4\n";
    const char *addrs[] = {"127.0.0.1:1", "127.0.0.1:2 3"};
    char err[300];
    char *out = rewrite(in, "b", addrs, 2, err);
    cr_assert(out, "%s", err);
    cr_assert_str_eq(out, "# top\n"
                          "[upstreams.a]\n"
                          "addrs = [\"10.0.0.1:80\"] # keep\n"
                          "algo = \"random\"\n"
                          "\n"
                          "[upstreams.b] # the one\n"
                          "  addrs = [\"127.0.0.1:1\", \"127.0.0.1:2 3\"]   # trailing\n"
                          "keepalive = 4\n");
    free(out);
    out = rewrite(in, "a", addrs, 0, err);
    cr_assert(out, "%s", err);
    cr_assert(strstr(out, "[upstreams.a]\naddrs = [] # keep\nalgo"));
    free(out);
}

Test(admin_rewrite, skips_strings_that_look_like_sections)
{
    const char *in = "[basic]\n"
                     "pid_file = \"\"\"\n"
                     "[upstreams.u]\n"
                     "addrs = [\"x\"]\n"
                     "\"\"\"\n"
                     "[upstreams.\"u\"]\n"
                     "'addrs' = ['10.0.0.1:80']\r\n"
                     "[upstreams.u.sub]\n"
                     "addrs = 1\n";
    const char *addrs[] = {"127.0.0.1:1"};
    char err[300];
    char *out = rewrite(in, "u", addrs, 1, err);
    cr_assert(out, "%s", err);
    cr_assert(strstr(out,
                     "addrs = [\"x\"]\n\"\"\"\n[upstreams.\"u\"]\naddrs = [\"127.0.0.1:1\"]\r\n"
                     "[upstreams.u.sub]\naddrs = 1\n"),
              "%s", out);
    free(out);
}

Test(admin_rewrite, refuses_what_it_cannot_rewrite)
{
    const char *addrs[] = {"127.0.0.1:1"};
    char err[300];
    cr_assert_null(rewrite("[upstreams.a]\naddrs = []\n", "b", addrs, 1, err));
    cr_assert(strstr(err, "no [upstreams.b] section"), "%s", err);
    cr_assert_null(rewrite("[upstreams.b]\nalgo = \"random\"\n", "b", addrs, 1, err));
    cr_assert(strstr(err, "no 'addrs' key"), "%s", err);
    cr_assert_null(rewrite("[upstreams]\nb = { addrs = [] }\n", "b", addrs, 1, err));
    cr_assert_null(rewrite("[upstreams.b]\naddrs = \"10.0.0.1:80\"\n", "b", addrs, 1, err));
    cr_assert(strstr(err, "not a plain array"), "%s", err);
    cr_assert_null(rewrite("[upstreams.b]\naddrs.x = []\n", "b", addrs, 1, err));
    cr_assert_null(rewrite("[upstreams.b]\naddrs = [\"unterminated]\n", "b", addrs, 1, err));
    cr_assert(strstr(err, "line 2"), "%s", err);
    cr_assert_null(rewrite("[upstreams.b]\naddrs = [\n", "b", addrs, 1, err));
    cr_assert_null(rewrite("[upstreams.b\naddrs = []\n", "b", addrs, 1, err));
    cr_assert_null(rewrite("[upstreams.b]\naddrs = []\naddrs = []\n", "b", addrs, 1, err));
    cr_assert_null(rewrite("", "b", addrs, 1, err));
}

Test(admin_rewrite, never_reads_past_the_given_length)
{
    /* Every prefix of a document either rewrites or fails cleanly. */
    const char *doc = "[upstreams.u]\naddrs = [\"1.2.3.4:5\", '''x''', \"\"\"y\"\"\"] # c\n";
    const char *addrs[] = {"127.0.0.1:1"};
    size_t n = strlen(doc);
    for (size_t k = 0; k <= n; k++) {
        char *copy = malloc(k ? k : 1);
        memcpy(copy, doc, k);
        char *out = NULL;
        size_t len;
        char err[300];
        if (weir__admin_rewrite_addrs(copy, k, "u", addrs, 1, &out, &len, err, sizeof(err)) == 0)
            free(out);
        free(copy);
    }
}
