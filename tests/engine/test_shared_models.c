/*
 * Integration on the real model family in TVS_SHARED_MODELS (../shared/models):
 * every .safetensors file found under it, and the folder lora-code/ as one
 * model, is imported, exported and compared byte for byte; identical
 * checkpoints share all their tensors; then a stored value is damaged and
 * `tvs fsck` must fail. Skipped, with the reason, if the folder is absent.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "engine/maint.h"
#include "engine/model.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

static void setup(void)
{
    struct stat st;
    if (stat(TVS_SHARED_MODELS, &st) || !S_ISDIR(st.st_mode))
        return;   /* the test skips itself */
    tt_ok(tt_store_new(&dir, &s));
}

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(shared_models, .init = setup, .fini = teardown, .timeout = 280);

static void skip_without_models(void)
{
    struct stat st;
    if (stat(TVS_SHARED_MODELS, &st) || !S_ISDIR(st.st_mode))
        cr_skip_test("no shared models: %s is not a folder", TVS_SHARED_MODELS);
}

/* A ref name for a relative path: "ckpt/ckpt-000.safetensors" -> "m/ckpt/ckpt-000". */
static char *ref_for(const char *rel)
{
    char *r = tt_fmt("m/%s", rel);
    size_t n = strlen(r);
    if (n > 12 && strcmp(r + n - 12, ".safetensors") == 0)
        r[n - 12] = 0;
    for (char *p = r; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == '/'))
            *p = '_';
    return r;
}

static int is_st(const char *name)
{
    size_t n = strlen(name);
    return n > 12 && strcmp(name + n - 12, ".safetensors") == 0;
}

static void import_export(const char *src, const char *ref, int folder)
{
    char *out = tt_fmt("%s/out/%s", dir, ref), why[1024];
    char *parent = strdup(out);
    *strrchr(parent, '/') = 0;
    cr_assert_eq(tt_mkdirs(parent), 0);
    tt_ok(tt_import(NULL, s, src, ref));
    tt_ok(tt_export(s, ref, out));
    if (folder)
        cr_assert(tt_trees_equal(src, out, why, sizeof why), "%s: %s", ref, why);
    else
        cr_assert_eq(tt_files_equal(src, out, why, sizeof why), 1, "%s: %s", ref, why);
    tt_rmtree(out);
    free(out);
    free(parent);
}

Test(shared_models, every_model_file_and_the_lora_folder_export_byte_identical)
{
    skip_without_models();
    char **names;
    size_t n;
    cr_assert_eq(tt_list_files(&names, &n, TVS_SHARED_MODELS), 0);
    size_t imported = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_st(names[i]))
            continue;
        char *src = tt_join(TVS_SHARED_MODELS, names[i]), *ref = ref_for(names[i]);
        cr_log_info("%s as %s", names[i], ref);
        import_export(src, ref, 0);
        imported++;
        free(src);
        free(ref);
    }
    tt_free_list(names, n);
    cr_assert_gt(imported, 0, "no .safetensors files under %s", TVS_SHARED_MODELS);

    char *lora = tt_join(TVS_SHARED_MODELS, "lora-code");
    struct stat st;
    if (stat(lora, &st) == 0 && S_ISDIR(st.st_mode))
        import_export(lora, "lora-code", 1);
    else
        cr_log_info("no lora-code folder in %s", TVS_SHARED_MODELS);
    free(lora);

    tvs_fsck_result f;
    tt_ok(tvs_fsck(&f, s, NULL, NULL));
    cr_assert_eq(f.problems, 0);
    cr_assert_eq(f.unreachable, 0);
    cr_log_info("%zu files: %llu objects, %llu bytes stored", imported,
                (unsigned long long)f.objects, (unsigned long long)f.bytes);
}

Test(shared_models, a_checkpoint_identical_to_a_model_adds_only_a_model_object)
{
    skip_without_models();
    char *a = tt_join(TVS_SHARED_MODELS, "ft-math.safetensors");
    char *b = tt_join(TVS_SHARED_MODELS, "ckpt/ckpt-007.safetensors");
    if (!tt_exists(a) || !tt_exists(b))
        cr_skip_test("ft-math.safetensors or ckpt/ckpt-007.safetensors is missing");
    char why[256];
    if (tt_files_equal(a, b, why, sizeof why) != 1)
        cr_skip_test("ckpt-007 is not byte-identical to ft-math here: %s", why);
    tt_snapshot s0, s1;
    tt_ok(tt_import(NULL, s, a, "ft-math"));
    tt_ok(tt_snapshot_take(&s0, s));
    tt_ok(tt_import(NULL, s, b, "ckpt-007"));
    tt_ok(tt_snapshot_take(&s1, s));
    cr_assert_eq(s1.chunks, s0.chunks);
    cr_assert_eq(s1.tensors, s0.tensors);
    cr_assert_eq(s1.models, s0.models + 1);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    free(a);
    free(b);
}

Test(shared_models, tvs_fsck_fails_after_a_stored_value_is_damaged)
{
    skip_without_models();
    char *src = tt_join(TVS_SHARED_MODELS, "base-v1.safetensors");
    if (!tt_exists(src))
        cr_skip_test("%s is missing", src);
    tt_ok(tt_import(NULL, s, src, "base-v1"));
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "base-v1", "model.layers.0.mlp.up_proj.weight", 0));
    tvs_store_close(s);
    s = NULL;
    tt_run r;
    cr_assert_eq(tt_tvsl(&r, NULL, NULL, "--store", dir, "fsck", NULL), 0);
    cr_assert_eq(r.code, 0, "before: %s", r.err);
    tt_run_dispose(&r);
    tt_ok(tt_corrupt_object(dir, &chunk, -100, 0x04));
    cr_assert_eq(tt_tvsl(&r, NULL, NULL, "--store", dir, "fsck", NULL), 0);
    cr_assert_eq(r.code, 4, "fsck after damage: exit %d\n%s%s", r.code, r.out, r.err);
    cr_assert(strstr(r.err, "problem"), "stderr: %s", r.err);
    tt_run_dispose(&r);
    char *out = tt_join(dir, "base.out");
    cr_assert_eq(tt_tvsl(&r, NULL, NULL, "--store", dir, "export", "base-v1", "-o", out, NULL), 0);
    cr_assert_eq(r.code, 4, "export of a damaged model: exit %d: %s", r.code, r.err);
    cr_assert_not(tt_exists(out));
    tt_run_dispose(&r);
    free(out);
    free(src);
}
