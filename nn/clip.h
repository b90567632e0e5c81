/* nn/clip: CLIP text transformers (transformers CLIPTextModel / CLIPTextModelWithProjection):
 * CLIP-L (SDXL's first text encoder), OpenCLIP bigG (SDXL's second, with the text projection),
 * the ViT-g-14 text tower (ADD's discriminator text conditioning) and tiny test presets.
 *
 * The configuration is transformers' CLIPTextConfig config.json as YAML
 * (configs/models/clip_l_text.yaml, openclip_bigg_text.yaml, vitg14_text.yaml, tiny_clip_*.yaml);
 * `architectures` names the class (CLIPTextModelWithProjection adds text_projection). addc adds
 * `pad_token`, the tokenizer's padding token for this encoder (tokenizer_config.json's
 * "pad_token": "<|endoftext|>" for CLIP-L, "!" for bigG and open_clip models).
 *
 * Parameter names are those of transformers' files ("text_model.encoder.layers.3.self_attn.q_proj.weight",
 * "text_model.final_layer_norm.weight", "text_projection.weight"), in their state-dict order.
 *
 * Forward (modeling_clip.py): token + position embeddings, pre-norm layers (causal multi-head
 * attention with biased projections; MLP with quick_gelu x sigmoid(1.702 x) or erf GELU), final
 * LayerNorm. Outputs, as SDXL's conditioning takes them (ADD.md "SDXL conditioning"):
 *   penultimate  hidden_states[-2]: the last layer's input, before the final norm (SDXL's context)
 *   last         the final-norm output of the last layer
 *   pooled       `last` at the end-of-text token: the first position of the largest id when
 *                eos_token_id is 2 (the legacy configs every released CLIP has), else the first
 *                position of eos_token_id
 *   text_embeds  pooled @ text_projection^T (WithProjection only): SDXL's pooled 1280-vector
 * Every layer is a ParamStore unit and, with gradient_checkpointing, a checkpointed region.
 *
 * Weights load from (clip_text_load detects which, by the token embedding's key and shape):
 *   transformers files (with or without the "text_model." prefix transformers 5 drops for
 *   CLIPTextModel; diffusers text_encoder/ and text_encoder_2/ folders; whole CLIPModel files,
 *   whose vision tower is skipped), Stability's single file ("conditioner.embedders.0.transformer."
 *   for CLIP-L), and open_clip's layout ("conditioner.embedders.1.model." in SDXL's single file,
 *   "cond_stage_model.model." in SD 2.x's, or an open_clip checkpoint's own names): fused
 *   in_proj_weight rows feed q/k/v, and text_projection is stored transposed there. */
#ifndef ADDC_NN_CLIP_H
#define ADDC_NN_CLIP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "nn/layers.h"
#include "nn/weights.h"

#define CLIP_NAME_LEN 48

typedef struct ClipTextConfig {
    char architectures[1][CLIP_NAME_LEN];
    int32_t n_architectures;
    char model_type[CLIP_NAME_LEN];
    int64_t vocab_size, hidden_size, intermediate_size, projection_dim;
    int64_t num_hidden_layers, num_attention_heads, max_position_embeddings;
    char hidden_act[CLIP_NAME_LEN];
    double layer_norm_eps, attention_dropout, dropout, initializer_range, initializer_factor;
    int64_t pad_token_id, bos_token_id, eos_token_id;
    /* addc */
    char pad_token[CLIP_NAME_LEN];
} ClipTextConfig;

extern const ConfigSchema clip_text_config_schema;

Status clip_text_config_load(ClipTextConfig *cfg, const char *path, const char *const *overrides, int32_t n_overrides);
Status clip_text_config_check(const ClipTextConfig *cfg);

typedef struct ClipLayer {
    Norm layer_norm1, layer_norm2;       /* LayerNorm(D, layer_norm_eps) */
    Linear q_proj, k_proj, v_proj, out_proj; /* (D, D) with biases */
    Linear fc1, fc2;                     /* (Dff, D), (D, Dff) */
    int heads;
    bool quick_gelu;
} ClipLayer;

typedef struct ClipText {
    ClipTextConfig cfg;
    Var *token_embedding;    /* (V, D) */
    Var *position_embedding; /* (max_position_embeddings, D) */
    ClipLayer *layers;       /* num_hidden_layers, malloc'd */
    Norm final_layer_norm;
    Linear text_projection;  /* (projection_dim, D), no bias; weight NULL for CLIPTextModel */
    bool gradient_checkpointing;
} ClipText;

/* Declares every parameter in s (not yet allocated); s may be on the meta device. Units:
 * "text_model.embeddings", each "text_model.encoder.layers.<i>", "text_model.final_layer_norm",
 * "text_projection". */
Status clip_text_init(ClipText *m, const ClipTextConfig *cfg, ParamStore *s);
void clip_text_free(ClipText *m);

typedef struct ClipTextOutput {
    Var *penultimate; /* (B, T, D) hidden_states[-2] */
    Var *last;        /* (B, T, D) final-norm output */
    Var *pooled;      /* (B, D) `last` at the end-of-text token */
    Var *text_embeds; /* (B, projection_dim), or NULL without text_projection */
} ClipTextOutput;

/* ids (B, T) i32 or i64 token ids, T <= max_position_embeddings. */
Status clip_text_forward(Ctx *c, const ClipText *m, Var *ids, ClipTextOutput *out);

/* The layouts clip_text_load reads. */
typedef enum ClipLayout { CLIP_LAYOUT_TRANSFORMERS = 0, CLIP_LAYOUT_OPEN_CLIP = 1 } ClipLayout;

/* Where this model's tensors lie in an open file: the layout and the prefix of its keys (e.g.
 * "conditioner.embedders.1.model."), from the first key ending in "token_embedding.weight" whose
 * shape is (vocab_size, hidden_size): in SDXL's single file the width tells CLIP-L from bigG. */
Status clip_text_detect(const ClipText *m, const SafeTensors *st, ClipLayout *layout, char *prefix, int32_t cap);
/* Where a parameter lies in a file of a layout under a prefix, as text: "key", "key[a:b]" for rows
 * a..b of a fused tensor, "key.T" for a transposed one (open_clip's text_projection). */
bool clip_text_file_key(const ClipText *m, ClipLayout layout, const char *prefix, const char *module_key, char *out,
                        int32_t cap);
/* Loads the model's tensors from a file of either layout (see the top of this file). File keys
 * that are not text-encoder weights (position_ids buffers, logit_scale, a vision tower) are
 * skipped; everything else follows weights_load's rules (refused loads leave the store as it
 * was). prefix NULL: detect. opt and rep may be NULL. */
Status clip_text_load(const ClipText *m, ParamStore *s, const char *path, const char *prefix,
                      const WeightsLoadOptions *opt, WeightsReport *rep);

#endif
