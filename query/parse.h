/**
 * @file query/parse.h
 * @brief The query language: text -> syntax tree. Grammar: SPEC.md, "Queries".
 *
 *     expr    := sum ('on' sum)*
 *     sum     := product (('+' | '-') product)*
 *     product := unary ('*' unary)*
 *     unary   := '-' unary | primary
 *     primary := NUMBER | REF | CALL | '(' expr ')'
 *     CALL    := IDENT '(' [args] ')'
 *     args    := arg ((',' | ';') arg)*        positional args come first
 *     arg     := IDENT '=' (NUMBER | REF) | expr
 *
 * A REF is a ref name (`llama-3.1/math`), optionally `@` and an id prefix.
 * Inside a name, '-' is part of the name when the next character is a name
 * character, so `base-v1 + ft-math` is two refs; a binary minus needs a
 * space (or a parenthesis, or a number) on its right: `ft - base`.
 *
 * The parser allocates the tree in one arena owned by the tvs_ast; pure
 * otherwise, safe from any thread. Bad input gets TVS_EINVAL with the byte
 * offset and what was expected (tvs_errmsg()).
 */
#ifndef TVS_QUERY_PARSE_H
#define TVS_QUERY_PARSE_H

#include "format/base.h"

#define TVS_QUERY_MAX 65536      /**< longest query text accepted */
#define TVS_QUERY_MAX_ARGS 64

typedef enum {
    TVS_AST_NUM,      /**< a scalar */
    TVS_AST_REF,      /**< a model by name (and optional @id prefix) */
    TVS_AST_ADD,      /**< a + b */
    TVS_AST_SUB,      /**< a - b */
    TVS_AST_MUL,      /**< a * b (one side must be a scalar) */
    TVS_AST_NEG,      /**< -a */
    TVS_AST_ON,       /**< a on b  ==  b + a */
    TVS_AST_CALL,     /**< name(args; kwargs) */
} tvs_ast_kind;

typedef struct tvs_ast_node tvs_ast_node;

typedef struct {
    const char *key;         /**< NUL-terminated */
    tvs_ast_node *value;     /**< a NUM or a REF */
} tvs_ast_kwarg;

struct tvs_ast_node {
    tvs_ast_kind kind;
    size_t pos;              /**< byte offset in the query, for messages */
    double num;              /**< NUM */
    const char *name;        /**< REF: the ref name; CALL: the function */
    const char *at;          /**< REF: the id prefix after '@', or NULL */
    tvs_ast_node *a, *b;     /**< operands */
    tvs_ast_node **args;     /**< CALL: positional arguments */
    size_t n_args;
    tvs_ast_kwarg *kwargs;   /**< CALL: keyword arguments, in order */
    size_t n_kwargs;
};

typedef struct {
    tvs_ast_node *root;
    char *arena;             /**< every node and string lives here */
    size_t arena_len, arena_cap;
} tvs_ast;

/**
 * Parse @p text (at most TVS_QUERY_MAX bytes).
 * @return 0, TVS_EINVAL for a syntax error, TVS_ENOMEM. On failure @p out
 *         is empty.
 */
int tvs_query_parse(tvs_ast *out, const char *text, size_t len);
void tvs_ast_dispose(tvs_ast *ast);

/** The tree back as canonical text, for EXPLAIN and tests: every operation in
 *  parentheses, except that a left-leaning chain of + and - prints as one
 *  group, "(a + b - c)", so the text re-parses to the same tree. */
int tvs_ast_print(tvs_buf *out, const tvs_ast_node *n);

#endif
