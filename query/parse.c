/*
 * Recursive-descent parser for the query language (query/parse.h).
 *
 * The arena is sized once from the input length: every node consumes at
 * least one byte of input, so it can never run out, and no pointer into it
 * moves. Nesting is limited so that hostile input cannot exhaust the stack.
 */
#include "query/parse.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NEST 200

typedef struct {
    const char *s;
    size_t len, pos;
    tvs_ast *ast;
    int depth;
} parser;

static void *alloc(parser *p, size_t n)
{
    size_t at = (p->ast->arena_len + 15) & ~(size_t)15;
    if (at + n > p->ast->arena_cap)
        return NULL;   /* cannot happen: the arena is sized for the input */
    p->ast->arena_len = at + n;
    memset(p->ast->arena + at, 0, n);
    return p->ast->arena + at;
}

static char *dup_str(parser *p, const char *s, size_t n)
{
    char *d = alloc(p, n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

static int fail_at(parser *p, size_t pos, const char *what)
{
    char near[24];
    size_t n = TVS_MIN(p->len - TVS_MIN(pos, p->len), sizeof near - 1);
    memcpy(near, p->s + TVS_MIN(pos, p->len), n);
    near[n] = 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)near[i] < 32)
            near[i] = ' ';
    if (pos >= p->len)
        return tvs__fail(TVS_EINVAL, "query: %s at byte %zu (end of query)", what, pos);
    return tvs__fail(TVS_EINVAL, "query: %s at byte %zu, near \"%s\"", what, pos, near);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' ||
                               p->s[p->pos] == '\n' || p->s[p->pos] == '\r'))
        p->pos++;
}

static int peek(parser *p)
{
    skip_ws(p);
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int is_alpha(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static int is_digit(int c) { return c >= '0' && c <= '9'; }
static int is_name(int c) { return is_alpha(c) || is_digit(c) || c == '_' || c == '.' || c == '/'; }

/* A name: letters first, then name characters; '-' only between them. */
static size_t scan_name(parser *p, size_t at)
{
    size_t i = at;
    if (i >= p->len || !is_alpha((unsigned char)p->s[i]))
        return 0;
    while (i < p->len) {
        int c = (unsigned char)p->s[i];
        if (is_name(c) || (c == '-' && i + 1 < p->len && is_name((unsigned char)p->s[i + 1])))
            i++;
        else
            break;
    }
    return i - at;
}

static tvs_ast_node *node(parser *p, tvs_ast_kind k, size_t pos)
{
    tvs_ast_node *n = alloc(p, sizeof *n);
    if (n) {
        n->kind = k;
        n->pos = pos;
    }
    return n;
}

static int parse_expr(parser *p, tvs_ast_node **out);

static int parse_number(parser *p, tvs_ast_node **out)
{
    size_t at = p->pos;
    size_t i = at;
    while (i < p->len &&
           (is_digit((unsigned char)p->s[i]) || p->s[i] == '.' || p->s[i] == 'e' ||
            p->s[i] == 'E' ||
            ((p->s[i] == '-' || p->s[i] == '+') && i > at &&
             (p->s[i - 1] == 'e' || p->s[i - 1] == 'E'))))
        i++;
    char *buf = dup_str(p, p->s + at, i - at);   /* the arena has room: it is input */
    if (!buf)
        return tvs__fail(TVS_ENOMEM, "query: out of arena");
    char *end;
    double v = strtod(buf, &end);
    if (end == buf || *end || !isfinite(v))
        return fail_at(p, at, "malformed number");
    if (i < p->len && is_alpha((unsigned char)p->s[i]))
        return fail_at(p, i, "a number runs into a name (write '2*x', and ref names start "
                             "with a letter)");
    p->pos = i;
    if (!(*out = node(p, TVS_AST_NUM, at)))
        return tvs__fail(TVS_ENOMEM, "query: out of arena");
    (*out)->num = v;
    return 0;
}

static int parse_value(parser *p, tvs_ast_node **out);
static int parse_args(parser *p, tvs_ast_node **args, tvs_ast_kwarg *kw, size_t *na,
                      size_t *nk);

static int parse_call(parser *p, tvs_ast_node *call)
{
    tvs_ast_node *args[TVS_QUERY_MAX_ARGS];
    tvs_ast_kwarg kw[TVS_QUERY_MAX_ARGS];
    size_t na = 0, nk = 0;
    if (p->depth + 1 > MAX_NEST)
        return fail_at(p, p->pos, "query nested more than 200 deep");
    p->depth++;
    int rc = parse_args(p, args, kw, &na, &nk);
    p->depth--;
    if (rc)
        return rc;
    call->args = alloc(p, (na ? na : 1) * sizeof *call->args);
    call->kwargs = alloc(p, (nk ? nk : 1) * sizeof *call->kwargs);
    if (!call->args || !call->kwargs)
        return tvs__fail(TVS_ENOMEM, "query: out of arena");
    memcpy(call->args, args, na * sizeof *args);
    memcpy(call->kwargs, kw, nk * sizeof *kw);
    call->n_args = na;
    call->n_kwargs = nk;
    return 0;
}

static int parse_args(parser *p, tvs_ast_node **args, tvs_ast_kwarg *kw, size_t *na_out,
                      size_t *nk_out)
{
    size_t na = 0, nk = 0;
    p->pos++;   /* '(' */
    if (peek(p) == ')') {
        p->pos++;
        *na_out = *nk_out = 0;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        size_t at = p->pos, nl = scan_name(p, at);
        size_t after = at + nl;
        while (after < p->len && (p->s[after] == ' ' || p->s[after] == '\t' ||
                                  p->s[after] == '\n' || p->s[after] == '\r'))
            after++;
        int rc;
        if (nl && after < p->len && p->s[after] == '=') {
            if (nk == TVS_QUERY_MAX_ARGS)
                return fail_at(p, at, "too many keyword arguments");
            kw[nk].key = dup_str(p, p->s + at, nl);
            p->pos = after + 1;
            if ((rc = parse_value(p, &kw[nk].value)))
                return rc;
            for (size_t i = 0; i < nk; i++)
                if (strcmp(kw[i].key, kw[nk].key) == 0)
                    return fail_at(p, at, "keyword argument given twice");
            nk++;
        } else {
            if (nk)
                return fail_at(p, at, "a positional argument after keyword arguments");
            if (na == TVS_QUERY_MAX_ARGS)
                return fail_at(p, at, "too many arguments");
            if ((rc = parse_expr(p, &args[na])))
                return rc;
            na++;
        }
        int c = peek(p);
        if (c == ')') {
            p->pos++;
            break;
        }
        if (c != ',' && c != ';')
            return fail_at(p, p->pos, "expected ',', ';' or ')' in the argument list");
        p->pos++;
    }
    *na_out = na;
    *nk_out = nk;
    return 0;
}

/* A REF, or a CALL when a '(' follows the name. */
static int parse_name(parser *p, tvs_ast_node **out)
{
    size_t at = p->pos, n = scan_name(p, at);
    p->pos += n;
    size_t name_end = p->pos;
    if (peek(p) == '(') {   /* a call: "name (" too, whitespace is ignored */
        if (!(*out = node(p, TVS_AST_CALL, at)))
            return tvs__fail(TVS_ENOMEM, "query: out of arena");
        (*out)->name = dup_str(p, p->s + at, n);
        return parse_call(p, *out);
    }
    p->pos = name_end;
    if (!(*out = node(p, TVS_AST_REF, at)))
        return tvs__fail(TVS_ENOMEM, "query: out of arena");
    (*out)->name = dup_str(p, p->s + at, n);
    if (p->pos < p->len && p->s[p->pos] == '@') {
        size_t h = ++p->pos;
        while (p->pos < p->len && strchr("0123456789abcdefABCDEF", p->s[p->pos]) &&
               p->s[p->pos])
            p->pos++;
        if (p->pos - h < 4 || p->pos - h > 32)
            return fail_at(p, h, "expected 4 to 32 hex digits of a model id after '@'");
        (*out)->at = dup_str(p, p->s + h, p->pos - h);
    }
    return 0;
}

/* A keyword argument's value: a number (possibly negative) or a ref. */
static int parse_value(parser *p, tvs_ast_node **out)
{
    int c = peek(p);
    if (c == '-' || is_digit(c) || c == '.') {
        int neg = c == '-';
        if (neg)
            p->pos++;
        skip_ws(p);
        int rc = parse_number(p, out);
        if (!rc && neg)
            (*out)->num = -(*out)->num;
        return rc;
    }
    if (is_alpha(c) && scan_name(p, p->pos)) {
        size_t after = p->pos + scan_name(p, p->pos);
        while (after < p->len && strchr(" \t\r\n", p->s[after]) && p->s[after])
            after++;
        if (after < p->len && p->s[after] == '(')
            return fail_at(p, p->pos, "a keyword value is a number or a ref, not a call");
        return parse_name(p, out);
    }
    return fail_at(p, p->pos, "expected a number or a ref as the value");
}

static int parse_unary(parser *p, tvs_ast_node **out)
{
    int c = peek(p), rc;
    int nests = c == '-' || c == '(';   /* calls count in parse_call */
    if (nests && ++p->depth > MAX_NEST)
        return fail_at(p, p->pos, "query nested more than 200 deep");
    size_t at = p->pos;
    if (c == '-') {
        p->pos++;
        tvs_ast_node *a;
        if ((rc = parse_unary(p, &a)))
            return rc;
        if (!(*out = node(p, TVS_AST_NEG, at)))
            return tvs__fail(TVS_ENOMEM, "query: out of arena");
        (*out)->a = a;
    } else if (c == '(') {
        p->pos++;
        if ((rc = parse_expr(p, out)))
            return rc;
        if (peek(p) != ')')
            return fail_at(p, p->pos, "expected ')'");
        p->pos++;
    } else if (is_digit(c) || c == '.') {
        rc = parse_number(p, out);
    } else if (is_alpha(c)) {
        rc = parse_name(p, out);
    } else {
        rc = fail_at(p, at, c < 0 ? "expected a ref, a number or '('"
                                  : "expected a ref, a number or '(' (ref names start "
                                    "with a letter)");
    }
    if (nests)
        p->depth--;
    return rc;
}

static int parse_product(parser *p, tvs_ast_node **out)
{
    int rc = parse_unary(p, out);
    while (!rc && peek(p) == '*') {
        size_t at = p->pos++;
        tvs_ast_node *b, *n;
        if ((rc = parse_unary(p, &b)))
            break;
        if (!(n = node(p, TVS_AST_MUL, at)))
            return tvs__fail(TVS_ENOMEM, "query: out of arena");
        n->a = *out;
        n->b = b;
        *out = n;
    }
    return rc;
}

static int parse_sum(parser *p, tvs_ast_node **out)
{
    int rc = parse_product(p, out);
    for (int c; !rc && ((c = peek(p)) == '+' || c == '-');) {
        size_t at = p->pos++;
        tvs_ast_node *b, *n;
        if ((rc = parse_product(p, &b)))
            break;
        if (!(n = node(p, c == '+' ? TVS_AST_ADD : TVS_AST_SUB, at)))
            return tvs__fail(TVS_ENOMEM, "query: out of arena");
        n->a = *out;
        n->b = b;
        *out = n;
    }
    return rc;
}

/* The keyword `on`: the letters o, n, then something that cannot continue a name. */
static int at_keyword_on(parser *p)
{
    skip_ws(p);
    size_t i = p->pos;
    if (i + 2 >= p->len || p->s[i] != 'o' || p->s[i + 1] != 'n')
        return 0;
    int c = (unsigned char)p->s[i + 2];
    return !is_name(c) && c != '-' && c != '@';
}

static int parse_expr(parser *p, tvs_ast_node **out)
{
    int rc = parse_sum(p, out);
    while (!rc && at_keyword_on(p)) {
        size_t at = p->pos;
        p->pos += 2;
        tvs_ast_node *b, *n;
        if ((rc = parse_sum(p, &b)))
            break;
        if (!(n = node(p, TVS_AST_ON, at)))
            return tvs__fail(TVS_ENOMEM, "query: out of arena");
        n->a = *out;
        n->b = b;
        *out = n;
    }
    return rc;
}

int tvs_query_parse(tvs_ast *out, const char *text, size_t len)
{
    memset(out, 0, sizeof *out);
    if (len > TVS_QUERY_MAX)
        return tvs__fail(TVS_EINVAL, "query: %zu bytes is over the %d-byte limit", len,
                         TVS_QUERY_MAX);
    const char *nul = memchr(text, 0, len);
    if (nul)
        return tvs__fail(TVS_EINVAL, "query: a NUL byte at byte %zu", (size_t)(nul - text));
    size_t per = sizeof(tvs_ast_node) + sizeof(tvs_ast_node *) + sizeof(tvs_ast_kwarg) + 64;
    out->arena_cap = (len + 4) * per + 3 * len + 256;
    if (!(out->arena = tvs_malloc(out->arena_cap)))
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    parser p = { text, len, 0, out, 0 };
    int rc = parse_expr(&p, &out->root);
    if (!rc && peek(&p) >= 0)
        rc = fail_at(&p, p.pos, p.s[p.pos] == '-'
                                    ? "unexpected '-' (a binary minus needs a space after it: "
                                      "'a - b')"
                                    : "unexpected text after the expression");
    if (rc)
        tvs_ast_dispose(out);
    return rc;
}

void tvs_ast_dispose(tvs_ast *ast)
{
    tvs_free(ast->arena);
    memset(ast, 0, sizeof *ast);
}

static int print(tvs_buf *b, const tvs_ast_node *n)
{
    char tmp[64];
    int rc = 0;
    switch (n->kind) {
    case TVS_AST_NUM:
        snprintf(tmp, sizeof tmp, "%.17g", n->num);
        return tvs_buf_append(b, tmp, strlen(tmp));
    case TVS_AST_REF:
        rc = tvs_buf_append(b, n->name, strlen(n->name));
        if (!rc && n->at) {
            rc = tvs_buf_append(b, "@", 1);
            if (!rc)
                rc = tvs_buf_append(b, n->at, strlen(n->at));
        }
        return rc;
    case TVS_AST_NEG:
        rc = tvs_buf_append(b, "(-", 2);
        if (!rc) rc = print(b, n->a);
        return rc ? rc : tvs_buf_append(b, ")", 1);
    case TVS_AST_CALL:
        rc = tvs_buf_append(b, n->name, strlen(n->name));
        if (!rc) rc = tvs_buf_append(b, "(", 1);
        for (size_t i = 0; !rc && i < n->n_args; i++) {
            if (i) rc = tvs_buf_append(b, ", ", 2);
            if (!rc) rc = print(b, n->args[i]);
        }
        for (size_t i = 0; !rc && i < n->n_kwargs; i++) {
            if (i || n->n_args)
                rc = tvs_buf_append(b, i ? ", " : "; ", 2);
            if (!rc) rc = tvs_buf_append(b, n->kwargs[i].key, strlen(n->kwargs[i].key));
            if (!rc) rc = tvs_buf_append(b, "=", 1);
            if (!rc) rc = print(b, n->kwargs[i].value);
        }
        return rc ? rc : tvs_buf_append(b, ")", 1);
    default: {
        /* a left-leaning chain prints flat: "(a + b - c)", so printing never
         * nests deeper than the query did */
        const tvs_ast_node *chain[TVS_QUERY_MAX_ARGS * 4];
        size_t k = 0;
        const tvs_ast_node *m = n;
        int additive = n->kind == TVS_AST_ADD || n->kind == TVS_AST_SUB;
        while (additive && (m->kind == TVS_AST_ADD || m->kind == TVS_AST_SUB) &&
               k < sizeof chain / sizeof *chain) {
            chain[k++] = m;
            m = m->a;
        }
        if (!additive) {
            chain[k++] = n;
            m = n->a;
        }
        rc = tvs_buf_append(b, "(", 1);
        if (!rc) rc = print(b, m);
        while (!rc && k-- > 0) {
            const tvs_ast_node *c = chain[k];
            const char *op = c->kind == TVS_AST_ADD ? " + " : c->kind == TVS_AST_SUB ? " - "
                           : c->kind == TVS_AST_MUL ? " * " : " on ";
            rc = tvs_buf_append(b, op, strlen(op));
            if (!rc) rc = print(b, c->b);
        }
        return rc ? rc : tvs_buf_append(b, ")", 1);
    }
    }
}

int tvs_ast_print(tvs_buf *out, const tvs_ast_node *n)
{
    return print(out, n);
}
