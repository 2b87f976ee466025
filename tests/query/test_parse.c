/*
 * The query parser (query/parse.c) against the grammar of SPEC.md 4.1:
 * names with '-' inside them versus binary minus, numbers, unary minus,
 * precedence, parentheses, `on`, calls with positional then keyword
 * arguments, `NAME@hex`, the limits (65,536 bytes, 200 levels of nesting,
 * 64 arguments), and syntax errors, each with TVS_EINVAL and the byte
 * offset in the message. tvs_ast_print must give text that parses back to
 * the same tree (print, parse, print: same text).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "query/parse.h"
#include "tests/support/support.h"

static void teardown(void) { tt_leak_check(); }

TestSuite(parse, .fini = teardown, .timeout = 30);

/* ---- helpers */

/* Parse @p q (must succeed); the tree stays in @p ast. */
static void parse_ok(tvs_ast *ast, const char *q)
{
    int rc = tvs_query_parse(ast, q, strlen(q));
    cr_assert_eq(rc, 0, "parsing \"%.200s\" returned %d: %s", q, rc, tvs_errmsg());
    cr_assert_not_null(ast->root);
}

/* The canonical text of @p q, malloc'd. */
static char *printed(const char *q)
{
    tvs_ast ast;
    tvs_buf b = TVS_BUF_INIT;
    parse_ok(&ast, q);
    tt_ok(tvs_ast_print(&b, ast.root));
    char *s = tt_fmt("%.*s", (int)b.len, b.ptr ? (const char *)b.ptr : "");
    tvs_buf_dispose(&b);
    tvs_ast_dispose(&ast);
    return s;
}

static void assert_prints(const char *q, const char *want)
{
    char *got = printed(q);
    cr_assert_str_eq(got, want, "\"%s\" parsed as %s, expected %s", q, got, want);
    free(got);
}

/* @p q (of @p len bytes) is a syntax error reported at byte @p at. */
static void assert_fails_n(const char *q, size_t len, size_t at)
{
    tvs_ast ast;
    memset(&ast, 0x5a, sizeof ast);
    int rc = tvs_query_parse(&ast, q, len);
    cr_assert_eq(rc, TVS_EINVAL, "\"%.80s\": expected TVS_EINVAL, got %d (%s)", q, rc,
                 tvs_errmsg());
    cr_assert_null(ast.root, "a failed parse leaves the tree empty");
    cr_assert_null(ast.arena, "a failed parse leaves the tree empty");
    char want[48];
    snprintf(want, sizeof want, "at byte %zu", at);
    cr_assert(strstr(tvs_errmsg(), want) != NULL, "\"%.80s\": message \"%s\" lacks \"%s\"", q,
              tvs_errmsg(), want);
}

static void assert_fails(const char *q, size_t at) { assert_fails_n(q, strlen(q), at); }

static size_t offset_of(const char *q, const char *needle)
{
    const char *p = strstr(q, needle);
    cr_assert_not_null(p);
    return (size_t)(p - q);
}

/* ---- names and minus */

Test(parse, names_with_a_dash_inside_are_one_ref_each)
{
    tvs_ast ast;
    parse_ok(&ast, "base-v1 + ft-math");
    tvs_ast_node *n = ast.root;
    cr_assert_eq(n->kind, TVS_AST_ADD);
    cr_assert_eq(n->pos, 8);
    cr_assert_eq(n->a->kind, TVS_AST_REF);
    cr_assert_str_eq(n->a->name, "base-v1");
    cr_assert_null(n->a->at);
    cr_assert_eq(n->b->kind, TVS_AST_REF);
    cr_assert_str_eq(n->b->name, "ft-math");
    cr_assert_eq(n->b->pos, 10);
    tvs_ast_dispose(&ast);
}

Test(parse, a_dash_between_name_characters_belongs_to_the_name)
{
    tvs_ast ast;
    parse_ok(&ast, "a-b");
    cr_assert_eq(ast.root->kind, TVS_AST_REF);
    cr_assert_str_eq(ast.root->name, "a-b");
    tvs_ast_dispose(&ast);
    parse_ok(&ast, "llama-3.1/math_v2-x");
    cr_assert_eq(ast.root->kind, TVS_AST_REF);
    cr_assert_str_eq(ast.root->name, "llama-3.1/math_v2-x");
    tvs_ast_dispose(&ast);
    /* a digit is a name character too */
    assert_prints("a-2", "a-2");
}

Test(parse, a_minus_with_a_space_on_either_side_subtracts)
{
    const char *qs[] = { "a - b", "a -b", "a- b", "a-(b)", "a\t-\nb" };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        tvs_ast ast;
        parse_ok(&ast, qs[i]);
        cr_assert_eq(ast.root->kind, TVS_AST_SUB, "\"%s\" is a subtraction", qs[i]);
        cr_assert_eq(ast.root->a->kind, TVS_AST_REF);
        cr_assert_str_eq(ast.root->a->name, "a", "\"%s\"", qs[i]);
        cr_assert_eq(ast.root->b->kind, TVS_AST_REF);
        cr_assert_str_eq(ast.root->b->name, "b", "\"%s\"", qs[i]);
        tvs_ast_dispose(&ast);
    }
    assert_prints("a--b", "(a - (-b))");
    assert_prints("ft - 2", "(ft - 2)");
}

/* ---- numbers */

static double num_of(const char *q)
{
    tvs_ast ast;
    parse_ok(&ast, q);
    cr_assert_eq(ast.root->kind, TVS_AST_NUM, "\"%s\" is a number", q);
    double v = ast.root->num;
    tvs_ast_dispose(&ast);
    return v;
}

Test(parse, numbers_are_c_decimal_floating_literals)
{
    cr_assert_eq(num_of("1e-3"), 1e-3);
    cr_assert_eq(num_of(".5"), 0.5);
    cr_assert_eq(num_of("2."), 2.0);
    cr_assert_eq(num_of("1E+2"), 100.0);
    cr_assert_eq(num_of("0.25e1"), 2.5);
    cr_assert_eq(num_of("  7  "), 7.0);
    cr_assert_eq(num_of("1e-400"), 0.0);   /* finite: rounds to zero */
}

Test(parse, a_number_longer_than_63_characters_still_parses)
{
    /* a valid C literal of 72 characters */
    char q[128];
    snprintf(q, sizeof q, "0.%070d", 5);
    cr_assert_eq(num_of(q), 5e-70);
}

Test(parse, malformed_or_infinite_numbers_are_errors_at_their_offset)
{
    assert_fails("1e", 0);
    assert_fails("1.2.3", 0);
    assert_fails("a + 1e999", 4);
    assert_fails("2 * 3x", 5);     /* the name starts at byte 5 */
    assert_fails("3x", 1);
    assert_fails("1e+", 0);
}

/* ---- operators */

Test(parse, unary_minus_binds_tighter_than_products)
{
    assert_prints("-a", "(-a)");
    assert_prints("--a", "(-(-a))");
    assert_prints("-2*a", "((-2) * a)");
    assert_prints("a * -b", "(a * (-b))");
    assert_prints("-(a + b)", "(-(a + b))");
    tvs_ast ast;
    parse_ok(&ast, "-x");
    cr_assert_eq(ast.root->kind, TVS_AST_NEG);
    cr_assert_eq(ast.root->a->kind, TVS_AST_REF);
    cr_assert_null(ast.root->b);
    tvs_ast_dispose(&ast);
}

Test(parse, products_bind_tighter_than_sums_and_both_go_left_to_right)
{
    assert_prints("a + 2*b - c", "(a + (2 * b) - c)");
    assert_prints("a - b - c", "(a - b - c)");
    assert_prints("a*b*c", "((a * b) * c)");
    assert_prints("2*(a + b)", "(2 * (a + b))");
    assert_prints("a + (b - c)", "(a + (b - c))");
    assert_prints("((a))", "a");
    tvs_ast ast;
    parse_ok(&ast, "a + 2*b - c");
    cr_assert_eq(ast.root->kind, TVS_AST_SUB);
    cr_assert_eq(ast.root->a->kind, TVS_AST_ADD);
    cr_assert_eq(ast.root->a->b->kind, TVS_AST_MUL);
    cr_assert_eq(ast.root->a->b->a->kind, TVS_AST_NUM);
    cr_assert_eq(ast.root->a->b->a->num, 2.0);
    tvs_ast_dispose(&ast);
}

Test(parse, on_binds_loosest_and_goes_left_to_right)
{
    tvs_ast ast;
    parse_ok(&ast, "ft-math on base-v1");
    cr_assert_eq(ast.root->kind, TVS_AST_ON);
    cr_assert_str_eq(ast.root->a->name, "ft-math");
    cr_assert_str_eq(ast.root->b->name, "base-v1");
    tvs_ast_dispose(&ast);
    assert_prints("a + b on c", "((a + b) on c)");
    assert_prints("a on b on c", "((a on b) on c)");
    assert_prints("a on(b)", "(a on b)");
    assert_prints("0.5*d on b", "((0.5 * d) on b)");
    /* names that start with "on" are names */
    assert_prints("a + one", "(a + one)");
    assert_prints("on-top + x", "(on-top + x)");
    assert_fails("a on", 2);
    assert_fails("a onb", 2);
}

/* ---- calls */

Test(parse, calls_take_positional_arguments_then_keyword_arguments)
{
    tvs_ast ast;
    parse_ok(&ast, "dare(ft-a, 0.5*ft-b; drop=0.5, seed=3, lambda=-1.5)");
    tvs_ast_node *c = ast.root;
    cr_assert_eq(c->kind, TVS_AST_CALL);
    cr_assert_str_eq(c->name, "dare");
    cr_assert_eq(c->n_args, 2);
    cr_assert_eq(c->args[0]->kind, TVS_AST_REF);
    cr_assert_str_eq(c->args[0]->name, "ft-a");
    cr_assert_eq(c->args[1]->kind, TVS_AST_MUL);
    cr_assert_eq(c->n_kwargs, 3);
    cr_assert_str_eq(c->kwargs[0].key, "drop");
    cr_assert_eq(c->kwargs[0].value->kind, TVS_AST_NUM);
    cr_assert_eq(c->kwargs[0].value->num, 0.5);
    cr_assert_str_eq(c->kwargs[1].key, "seed");
    cr_assert_eq(c->kwargs[1].value->num, 3.0);
    cr_assert_str_eq(c->kwargs[2].key, "lambda");
    cr_assert_eq(c->kwargs[2].value->num, -1.5);
    tvs_ast_dispose(&ast);

    /* ',' also separates keyword arguments; spaces around '=' */
    parse_ok(&ast, "transfer(d, onto = base-v2@abcd)");
    c = ast.root;
    cr_assert_eq(c->n_args, 1);
    cr_assert_eq(c->n_kwargs, 1);
    cr_assert_str_eq(c->kwargs[0].key, "onto");
    cr_assert_eq(c->kwargs[0].value->kind, TVS_AST_REF);
    cr_assert_str_eq(c->kwargs[0].value->name, "base-v2");
    cr_assert_str_eq(c->kwargs[0].value->at, "abcd");
    tvs_ast_dispose(&ast);

    parse_ok(&ast, "soup()");
    cr_assert_eq(ast.root->kind, TVS_AST_CALL);
    cr_assert_eq(ast.root->n_args, 0);
    cr_assert_eq(ast.root->n_kwargs, 0);
    tvs_ast_dispose(&ast);

    assert_prints("soup(a, b; c)", "soup(a, b, c)");
    assert_prints("lerp(a, b, 0.25)", "lerp(a, b, 0.25)");
    assert_prints("x + soup(a, soup(b, c))", "(x + soup(a, soup(b, c)))");
    assert_prints("ties(a, b; density=0.5, lambda=- 2)", "ties(a, b; density=0.5, lambda=-2)");
}

Test(parse, whitespace_between_a_function_name_and_its_parenthesis_is_ignored)
{
    /* SPEC 4.1: whitespace separates tokens and is otherwise ignored */
    tvs_ast ast;
    parse_ok(&ast, "soup (a, b)");
    cr_assert_eq(ast.root->kind, TVS_AST_CALL);
    cr_assert_eq(ast.root->n_args, 2);
    tvs_ast_dispose(&ast);
}

Test(parse, keyword_arguments_allow_a_newline_before_the_equals_sign)
{
    tvs_ast ast;
    parse_ok(&ast, "dare(a;\n drop\n= 0.5)");
    cr_assert_eq(ast.root->n_kwargs, 1);
    cr_assert_str_eq(ast.root->kwargs[0].key, "drop");
    tvs_ast_dispose(&ast);
}

Test(parse, keyword_values_are_numbers_or_refs_not_expressions)
{
    /* arg := IDENT '=' (NUMBER | REF | '-' NUMBER) */
    assert_fails("dare(a; drop=(0.5))", 13);
    assert_fails("dare(a; drop=x + y)", 15);
    assert_fails("dare(a; drop=)", 13);
}

Test(parse, a_keyword_value_cannot_be_a_call)
{
    /* arg := IDENT '=' (NUMBER | REF | '-' NUMBER) */
    static const char *const qs[] = {
        "transfer(d, onto=soup(a, b))",
        "transfer(d, onto=soup (a, b))",   /* 'name (' is a call too */
        "dare(a; seed=f\n(x))",
    };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        tvs_ast ast;
        int rc = tvs_query_parse(&ast, qs[i], strlen(qs[i]));
        if (rc == 0)
            tvs_ast_dispose(&ast);
        cr_assert_eq(rc, TVS_EINVAL, "\"%s\": a call as a keyword value is not in the grammar "
                     "(rc %d)", qs[i], rc);
        cr_assert(strstr(tvs_errmsg(), "at byte 17") != NULL || i == 2, "%s", tvs_errmsg());
    }
}

Test(parse, deeply_nested_calls_in_keyword_values_fail_cleanly)
{
    /* f(x=f(x=f(x=...))) 13,000 deep (65,001 bytes): a syntax error (a call
     * is not a keyword value, and nesting is limited to 200), never a stack
     * overflow */
    size_t depth = 13000, len = depth * 5 + 1;
    char *q = malloc(len + 1);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++) {
        memcpy(q + n, "f(x=", 4);
        n += 4;
    }
    q[n++] = 'a';
    for (size_t i = 0; i < depth; i++)
        q[n++] = ')';
    q[n] = 0;
    tvs_ast ast;
    int rc = tvs_query_parse(&ast, q, n);
    cr_assert_eq(rc, TVS_EINVAL, "rc %d (%s)", rc, tvs_errmsg());
    free(q);
}

Test(parse, ref_ids_take_4_to_32_hex_digits)
{
    tvs_ast ast;
    parse_ok(&ast, "NAME@abcd");
    cr_assert_eq(ast.root->kind, TVS_AST_REF);
    cr_assert_str_eq(ast.root->name, "NAME");
    cr_assert_str_eq(ast.root->at, "abcd");
    tvs_ast_dispose(&ast);
    parse_ok(&ast, "m@0123456789abcdef0123456789ABCDEF + x");
    cr_assert_str_eq(ast.root->a->at, "0123456789abcdef0123456789ABCDEF");
    tvs_ast_dispose(&ast);
    assert_prints("base-v1@00ff + ft@1234", "(base-v1@00ff + ft@1234)");

    assert_fails("x@12", 2);
    assert_fails("x@", 2);
    assert_fails("a + x@zz12", 6);
    assert_fails("x@0123456789abcdef0123456789abcdef0", 2);   /* 33 digits */
}

/* ---- syntax errors and limits */

Test(parse, syntax_errors_say_where)
{
    assert_fails("(a + b", 6);
    assert_fails("((a)", 4);
    assert_fails("a + b)", 5);
    assert_fails("a b", 2);
    assert_fails("", 0);
    assert_fails("   ", 3);
    assert_fails("a +", 3);
    assert_fails("a * * b", 4);
    assert_fails("soup(a,)", 7);
    assert_fails("soup(a b)", 7);
    assert_fails("soup(a", 6);
    assert_fails("a + _b", 4);
    assert_fails("a + #", 4);
    /* a name cannot end in '-': the '-' is then a binary minus with nothing after it */
    assert_fails("a-", 2);
}

Test(parse, a_keyword_argument_given_twice_is_an_error)
{
    const char *q = "dare(a, b; drop=0.5, seed=1, drop=0.6)";
    assert_fails(q, offset_of(q, "drop=0.6"));
    cr_assert(strstr(tvs_errmsg(), "twice") != NULL, "%s", tvs_errmsg());
}

Test(parse, a_positional_argument_after_a_keyword_argument_is_an_error)
{
    const char *q = "dare(a; drop=0.5, b)";
    assert_fails(q, offset_of(q, "b)"));
    const char *q2 = "soup(a, x=1, b + c)";
    assert_fails(q2, offset_of(q2, "b + c"));
}

/* "f(a0, a1, …)" with @p n positional arguments, malloc'd. */
static char *call_of(size_t n, const char *extra)
{
    size_t cap = 16 + n * 8 + strlen(extra);
    char *q = malloc(cap);
    size_t k = (size_t)snprintf(q, cap, "f(");
    for (size_t i = 0; i < n; i++)
        k += (size_t)snprintf(q + k, cap - k, "%sa%zu", i ? ", " : "", i);
    snprintf(q + k, cap - k, "%s)", extra);
    return q;
}

Test(parse, calls_take_at_most_64_arguments)
{
    char *q = call_of(64, "");
    tvs_ast ast;
    parse_ok(&ast, q);
    cr_assert_eq(ast.root->n_args, 64);
    cr_assert_str_eq(ast.root->args[63]->name, "a63");
    tvs_ast_dispose(&ast);
    free(q);

    q = call_of(65, "");
    assert_fails(q, offset_of(q, "a64"));
    free(q);
}

Test(parse, calls_take_at_most_64_keyword_arguments)
{
    char q[2048];
    size_t k = (size_t)snprintf(q, sizeof q, "f(a");
    for (int i = 0; i < 65; i++)
        k += (size_t)snprintf(q + k, sizeof q - k, ", k%d=%d", i, i);
    snprintf(q + k, sizeof q - k, ")");
    assert_fails(q, offset_of(q, "k64="));
}

/* @p n opening parentheses, a name, @p n closing ones; malloc'd. */
static char *nested(size_t n)
{
    char *q = malloc(2 * n + 2);
    memset(q, '(', n);
    q[n] = 'a';
    memset(q + n + 1, ')', n);
    q[2 * n + 1] = 0;
    return q;
}

Test(parse, parentheses_nest_200_deep)
{
    /* SPEC 4.1: queries are nested at most 200 deep */
    char *q = nested(200);
    tvs_ast ast;
    int rc = tvs_query_parse(&ast, q, strlen(q));
    cr_assert_eq(rc, 0, "200 nested parentheses: rc %d (%s)", rc, tvs_errmsg());
    cr_assert_eq(ast.root->kind, TVS_AST_REF);
    tvs_ast_dispose(&ast);
    free(q);
}

Test(parse, nesting_deeper_than_200_is_an_error_not_a_crash)
{
    char *q = nested(201);
    tvs_ast ast;
    int rc = tvs_query_parse(&ast, q, strlen(q));
    cr_assert_eq(rc, TVS_EINVAL);
    cr_assert(strstr(tvs_errmsg(), "at byte ") != NULL, "%s", tvs_errmsg());
    cr_assert(strstr(tvs_errmsg(), "nested") != NULL, "%s", tvs_errmsg());
    free(q);

    /* far deeper, with every kind of nesting: clean errors */
    size_t n = 60000;
    q = malloc(n + 2);
    memset(q, '-', n);
    q[n] = 'a';
    q[n + 1] = 0;
    cr_assert_eq(tvs_query_parse(&ast, q, n + 1), TVS_EINVAL);
    for (size_t i = 0; i + 5 <= n; i += 5)
        memcpy(q + i, "f((-(", 5);
    cr_assert_eq(tvs_query_parse(&ast, q, n + 1), TVS_EINVAL);
    free(q);
}

Test(parse, a_nul_byte_is_an_error_at_its_offset)
{
    const char q[] = "a + b\0c";
    assert_fails_n(q, sizeof q - 1, 5);
}

Test(parse, queries_are_at_most_65536_bytes)
{
    char *q = malloc(TVS_QUERY_MAX + 2);
    memset(q, 'a', TVS_QUERY_MAX + 1);
    q[TVS_QUERY_MAX + 1] = 0;
    tvs_ast ast;
    /* exactly the limit: one ref of 65,536 characters */
    parse_ok(&ast, q + 1);
    cr_assert_eq(ast.root->kind, TVS_AST_REF);
    cr_assert_eq(strlen(ast.root->name), TVS_QUERY_MAX);
    tvs_ast_dispose(&ast);

    memset(&ast, 0x5a, sizeof ast);
    cr_assert_eq(tvs_query_parse(&ast, q, TVS_QUERY_MAX + 1), TVS_EINVAL);
    cr_assert_null(ast.root);
    cr_assert(strstr(tvs_errmsg(), "65536") != NULL, "%s", tvs_errmsg());
    free(q);
}

Test(parse, the_longest_query_of_small_nodes_fits_its_arena)
{
    /* 65,536 bytes of "a+" and "f(a;k=1)": many nodes per byte of input */
    char *q = malloc(TVS_QUERY_MAX + 1);
    size_t n = 0;
    while (n + 2 <= TVS_QUERY_MAX - 1) {
        memcpy(q + n, "a+", 2);
        n += 2;
    }
    q[n++] = 'a';
    q[n] = 0;
    tvs_ast ast;
    parse_ok(&ast, q);
    tvs_ast_dispose(&ast);

    n = 0;
    while (n + 16 <= TVS_QUERY_MAX - 1) {
        memcpy(q + n, "f(a,b;k=1,j=2)+", 15);
        n += 15;
    }
    q[n++] = 'a';
    q[n] = 0;
    parse_ok(&ast, q);
    tvs_ast_dispose(&ast);
    free(q);
}

/* ---- printing */

static void assert_round_trip(const char *q)
{
    char *once = printed(q);
    char *twice = printed(once);
    cr_assert_str_eq(once, twice, "\"%s\" printed as \"%s\", which prints as \"%s\"", q, once,
                     twice);
    free(once);
    free(twice);
}

Test(parse, printed_trees_parse_back_to_the_same_text)
{
    static const char *const qs[] = {
        "base-v1 + ft-math",
        "a-b",
        "a - b -c",
        "base + 0.5*ft-a + 0.5*ft-b",
        "-(-x)",
        "-2*a + 3 * -b",
        "1e-3*a + .5*b + 2.*c",
        "0.1*a + 1e300*b + 4.9406564584124654e-324*c",
        "a on b on c",
        "(a + b) on (c - d)",
        "soup(a, b, c)",
        "lerp(a, b, 0.3)",
        "transfer(ft-math - base-v1, onto=base-v2)",
        "dare(a, b; drop=0.9, seed=42, lambda=-0.5)",
        "ties(a, b, c; density=0.2) on base",
        "breadcrumbs(a - b, c; top=0.01, bottom=0.9)",
        "x@abcd + y@0123456789abcdef0123456789abcdef",
        "soup(soup(a, b), lerp(c, d, 1), transfer(e; onto=f@beef))",
        "f()",
        "  a\n+\tb  ",
    };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++)
        assert_round_trip(qs[i]);
}

Test(parse, a_call_with_only_keyword_arguments_prints_as_it_parses)
{
    /* "f(k=1)" parses; its printed form must parse too */
    assert_round_trip("f(k=1)");
    assert_round_trip("dare(drop=0.5, seed=2)");
}
