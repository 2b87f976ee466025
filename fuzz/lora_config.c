/*
 * Fuzz target: a PEFT adapter_config.json as untrusted bytes, the way
 * `tvs import DIR --lora` reads it (tvs__lora_config_parse).
 *
 * Accepted configs give a rank in 1..TVS_LOSSY_MAX_RANK, a finite positive
 * scale and, if target_modules was a list, a list of strings; refused ones
 * say why with TVS_ECORRUPT or TVS_EINVAL and hand nothing back.
 */
#include "fuzz/fuzz.h"

#include <jansson.h>
#include <math.h>

#include "engine/model.h"
#include "format/lossy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint32_t r = 0;
    double scale = 0;
    json_t *targets = (json_t *)1;
    int rc = tvs__lora_config_parse(&r, &scale, &targets, (const char *)data, size,
                                    "adapter_config.json");
    FUZZ_CHECK(rc == 0 || rc == TVS_ECORRUPT || rc == TVS_EINVAL || rc == TVS_ENOMEM);
    if (rc != 0) {
        FUZZ_CHECK(targets == NULL);
        FUZZ_CHECK(tvs_errmsg()[0] != 0);
        return 0;
    }
    FUZZ_CHECK(r >= 1 && r <= TVS_LOSSY_MAX_RANK);
    FUZZ_CHECK(isfinite(scale) && scale > 0);
    if (targets) {
        FUZZ_CHECK(json_is_array(targets));
        for (size_t i = 0; i < json_array_size(targets); i++)
            FUZZ_CHECK(json_is_string(json_array_get(targets, i)));
        json_decref(targets);
    }
    return 0;
}
