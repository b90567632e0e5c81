/* launch/forward: `addc forward --model CONFIG --weights FILE --inputs IN --out OUT`: one
 * network's forward on named tensors, written to a safetensors file, to check an imported
 * checkpoint against diffusers / transformers. The work is in nn/forward.c; this file parses
 * arguments and prints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/parallel.h"
#include "launch/cli.h"
#include "nn/forward.h"

#define FORWARD_MAX_OVERRIDES 32
#define FORWARD_MAX_CAPTIONS 256

static void forward_usage(FILE *f) {
    fprintf(f,
            "usage: addc forward --model CONFIG.yaml [KEY=VALUE ...] --weights FILE|none [--seed S]\n"
            "                    --inputs IN.safetensors --out OUT.safetensors\n"
            "                    [--vae encode|decode] [--caption TEXT]... [--tokenizer FILE] [--clean hf|open_clip]\n"
            "                    [--train] [--allow-missing] [--allow-unexpected]\n"
            "\n"
            "Runs one network's forward (fp32, CPU, no gradients) on the named tensors of IN and writes the named\n"
            "outputs to OUT: how to check an imported checkpoint against diffusers / transformers. The network is\n"
            "the model YAML's (configs/models/); KEY=VALUE overrides a field of it.\n"
            "\n"
            "  --weights FILE   a diffusers file (unet/diffusion_pytorch_model.safetensors, vae/...), a transformers\n"
            "                   model.safetensors (DINOv2, CLIP text), Stability's single file (sd_xl_turbo_1.0_fp16\n"
            "                   .safetensors: the UNet, VAE and text encoders are found by their key prefixes), an\n"
            "                   open_clip checkpoint, or the heads' torch state dict. F32, F16 or BF16.\n"
            "  --weights none   random weights keyed by --seed S (default 0): the same on any machine.\n"
            "  --allow-missing, --allow-unexpected   accept a file that lacks some weights (they stay zero) or\n"
            "                   holds unknown ones; by default either refuses the load, naming the keys.\n"
            "\n"
            "LAYOUT: tensors in IN and OUT are in the ecosystem layout, not addc's: images are NCHW (B, C, H, W) as\n"
            "diffusers and torch keep them, the heads' features (B, C, N) as StyleGAN-T's DiscHead takes them. They\n"
            "are converted to addc's channels-last layout inside and back, so OUT compares directly with the Python\n"
            "output. Float inputs may be F32, F16, BF16 or F64; token ids I64 or I32. Outputs are F32. Names follow\n"
            "the libraries' forward arguments and output fields; tensors of IN a network does not read are listed\n"
            "and ignored (IN may hold reference outputs too).\n"
            "\n"
            "Inputs and outputs per network:\n"
            "  UNet2DConditionModel (sdxl_unet, sd21_unet, tiny_*unet)\n"
            "      in   sample (B, in_channels, H, W)   H, W multiples of 2^(levels - 1)\n"
            "           timestep () (1,) or (B,)        float or integer\n"
            "           encoder_hidden_states (B, T, cross_attention_dim)\n"
            "           text_embeds (B, 1280), time_ids (B, 6)   SDXL (addition_embed_type text_time) only:\n"
            "                                            diffusers' added_cond_kwargs\n"
            "      out  sample (B, out_channels, H, W)\n"
            "  AutoencoderKL (sdxl_vae, tiny_vae): encode, decode or both, by --vae or by the input names\n"
            "      in   sample (B, 3, H, W) in [-1, 1]   encode (H, W multiples of 2^(levels - 1))\n"
            "           z (B, latent_channels, h, w)      decode (with --vae decode it may be named sample)\n"
            "      out  latent_dist.mean, latent_dist.logvar (B, latent_channels, h, w)   encode: the posterior\n"
            "           after quant_conv (unscaled: multiply by scaling_factor for the UNet's latents)\n"
            "           sample (B, 3, H, W)                  decode: vae.decode(z).sample\n"
            "  Dinov2Model (dinov2_vits14, dinov2_vitl14, tiny_dinov2)\n"
            "      in   pixel_values (B, 3, H, W)   normalised as the image processor gives them, H, W multiples\n"
            "                                        of patch_size (position embeddings are interpolated)\n"
            "        or image (B, 3, H, W) in [-1, 1]   addc's preprocessing (area resize to input_size, ImageNet\n"
            "                                        mean/std), written out as pixel_values\n"
            "      out  hidden_states[i] (B, 1 + N, D)  the config's taps (tap_patch_embedding: i = 0; tap_blocks b:\n"
            "                                        i = b + 1), transformers' output_hidden_states indexing\n"
            "           last_hidden_state (B, 1 + N, D)  when the last block is tapped (the DINOv2 presets do)\n"
            "           pooler_output (B, D)         the final-norm CLS token\n"
            "  CLIPTextModel, CLIPTextModelWithProjection (clip_l_text, openclip_bigg_text, vitg14_text, tiny_*)\n"
            "      in   input_ids (B, T) I64 or I32, T <= max_position_embeddings (77)\n"
            "        or --caption TEXT, repeated: one row each, tokenised by the CLIP BPE in C to\n"
            "           max_position_embeddings ids, padded with the config's pad_token;\n"
            "           --tokenizer FILE: bpe_simple_vocab_16e6.txt.gz or a merges.txt (default:\n"
            "           " CLI_DEFAULT_VOCAB " under the working directory or the addc checkout);\n"
            "           --clean hf (default: transformers' CLIPTokenizer, as diffusers' SDXL pipelines run it for\n"
            "           both encoders) or open_clip (its ftfy and HTML cleaning)\n"
            "      out  last_hidden_state (B, T, D), hidden_states[-2] (B, T, D) (SDXL's context),\n"
            "           pooler_output (B, D) (last_hidden_state at the end-of-text token),\n"
            "           text_embeds (B, projection_dim) (WithProjection: SDXL's pooled vector),\n"
            "           input_ids (B, 77) I64 when captions were given\n"
            "  discriminator heads (disc_heads, tiny_disc_heads)\n"
            "      in   features.k (B, C, N) for every head k   as DiscHead takes them\n"
            "        or tokens.k (B, 1 + N, C)           DINOv2 hidden states, CLS first (StyleGAN-T's readout\n"
            "                                        adds the CLS token to every patch token)\n"
            "           c (B, c_dim), or c_text (B, Dt) and c_img (B, c_dim - Dt)   when conditioned (c_dim > 0):\n"
            "                                        concatenated text first (ViT-g-14 text, DINOv2 ViT-L CLS)\n"
            "      out  logits.k (B, N)\n"
            "           with --train: torch's train() mode, one spectral-norm power iteration first; the\n"
            "           updated heads.k.*.weight_u / weight_v are written too. Default: eval() (stored u, v).\n"
            "           B must split into groups of virtual_bs (BatchNormLocal always uses batch statistics).\n"
            "\n"
            "Example (Python side):\n"
            "  save_file({\"sample\": x, \"timestep\": t, \"encoder_hidden_states\": e, \"text_embeds\": te,\n"
            "             \"time_ids\": ids}, \"in.safetensors\")\n"
            "  addc forward --model configs/models/sdxl_unet.yaml --weights sd_xl_turbo_1.0_fp16.safetensors \\\n"
            "               --inputs in.safetensors --out out.safetensors\n"
            "  ref = unet(x, t, e, added_cond_kwargs={\"text_embeds\": te, \"time_ids\": ids}).sample\n"
            "  (load_file(\"out.safetensors\")[\"sample\"] - ref).abs().max() / ref.abs().max()\n"
            "\n"
            "ADDC_THREADS sets the CPU threads (default all). Exit code 0; 1 when the model, weights or inputs are\n"
            "refused (the message names what is missing or wrong); 2 for a usage error.\n");
}

typedef struct ForwardArgs {
    const char *model, *weights, *inputs, *out, *tokenizer;
    const char *overrides[FORWARD_MAX_OVERRIDES];
    int32_t n_overrides;
    const char *captions[FORWARD_MAX_CAPTIONS];
    int32_t n_captions;
    uint64_t seed;
    bool seeded, train, allow_missing, allow_unexpected;
    ForwardVae vae;
    TokenizerClean clean;
} ForwardArgs;

static int usage_error(const char *fmt, const char *arg) {
    fprintf(stderr, "addc forward: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see addc forward --help)\n");
    return 2;
}

static int forward_parse(int argc, char **argv, ForwardArgs *a) {
    memset(a, 0, sizeof *a);
    a->clean = TOKENIZER_CLEAN_HF;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        const char **slot = !strcmp(o, "--model")       ? &a->model
                            : !strcmp(o, "--weights")   ? &a->weights
                            : !strcmp(o, "--inputs")    ? &a->inputs
                            : !strcmp(o, "--out")       ? &a->out
                            : !strcmp(o, "--tokenizer") ? &a->tokenizer
                                                        : NULL;
        if (slot) {
            if (!v) return usage_error("%s needs a value", o);
            *slot = v;
            i++;
        } else if (!strcmp(o, "--seed")) {
            char *end;
            unsigned long long s = v ? strtoull(v, &end, 10) : 0;
            if (!v || !*v || *end || v[0] == '-') return usage_error("--seed needs a non-negative integer, not '%s'", v ? v : "");
            a->seed = s;
            a->seeded = true;
            i++;
        } else if (!strcmp(o, "--vae")) {
            if (!v || (strcmp(v, "encode") && strcmp(v, "decode"))) return usage_error("--vae takes encode or decode, not '%s'", v ? v : "");
            a->vae = !strcmp(v, "encode") ? FORWARD_VAE_ENCODE : FORWARD_VAE_DECODE;
            i++;
        } else if (!strcmp(o, "--clean")) {
            if (!v || (strcmp(v, "hf") && strcmp(v, "open_clip"))) return usage_error("--clean takes hf or open_clip, not '%s'", v ? v : "");
            a->clean = !strcmp(v, "hf") ? TOKENIZER_CLEAN_HF : TOKENIZER_CLEAN_OPEN_CLIP;
            i++;
        } else if (!strcmp(o, "--caption")) {
            if (!v) return usage_error("%s needs a value", o);
            if (a->n_captions == FORWARD_MAX_CAPTIONS) return usage_error("at most 256 captions%s", "");
            a->captions[a->n_captions++] = v;
            i++;
        } else if (!strcmp(o, "--train")) {
            a->train = true;
        } else if (!strcmp(o, "--allow-missing")) {
            a->allow_missing = true;
        } else if (!strcmp(o, "--allow-unexpected")) {
            a->allow_unexpected = true;
        } else if (o[0] != '-' && strchr(o, '=')) {
            if (a->n_overrides == FORWARD_MAX_OVERRIDES) return usage_error("at most 32 overrides%s", "");
            a->overrides[a->n_overrides++] = o;
        } else {
            return usage_error("unknown option or argument '%s'", o);
        }
    }
    if (!a->model) return usage_error("give the network's model YAML with --model%s", "");
    if (!a->weights) return usage_error("give --weights FILE, or --weights none for random weights%s", "");
    if (!a->out) return usage_error("give the output file with --out%s", "");
    if (!a->inputs && a->n_captions == 0) return usage_error("give the inputs with --inputs IN.safetensors%s", "");
    if (a->seeded && strcmp(a->weights, "none")) return usage_error("--seed is for --weights none (got a weights file '%s')", a->weights);
    return 0;
}

int cmd_forward(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            forward_usage(stdout);
            return 0;
        }
    ForwardArgs a;
    int rc = forward_parse(argc, argv, &a);
    if (rc) return rc;

    Model m;
    SafeTensors in;
    bool have_in = false, have_tok = false;
    ClipTokenizer tok;
    ForwardResult r;
    memset(&r, 0, sizeof r);
    WeightsReport rep;
    memset(&rep, 0, sizeof rep);
    const char *failed = "--model";
    Status st = model_build(&m, a.model, a.overrides, a.n_overrides, DEVICE_CPU, false);
    if (st == ADDC_OK && (a.vae || a.n_captions || a.train)) {
        bool fits = a.vae ? m.kind == MODEL_VAE : a.n_captions ? m.kind == MODEL_CLIP_TEXT : m.kind == MODEL_DISC_HEADS;
        if (!fits)
            st = addc_error_set(ADDC_ERR_INVALID, "%s is a %s: %s is for %s", a.model, m.class_name,
                                a.vae ? "--vae" : a.n_captions ? "--caption" : "--train",
                                a.vae ? "an AutoencoderKL" : a.n_captions ? "a CLIP text encoder" : "the discriminator heads");
    }
    if (st == ADDC_OK) {
        failed = "--weights";
        WeightsLoadOptions opt = {a.allow_missing, a.allow_unexpected};
        st = strcmp(a.weights, "none") ? forward_weights_load(&m, a.weights, &opt, &rep)
                                       : forward_weights_random(&m, a.seed);
    }
    if (st == ADDC_OK && a.inputs) {
        failed = "--inputs";
        st = safetensors_open(&in, a.inputs);
        have_in = st == ADDC_OK;
    }
    if (st == ADDC_OK && a.n_captions) {
        failed = "--tokenizer";
        st = cli_tokenizer_open(a.tokenizer, &tok);
        have_tok = st == ADDC_OK;
    }
    double t0 = cli_now_s(), t1 = t0;
    if (st == ADDC_OK) {
        failed = "forward";
        ForwardOptions fo = {a.vae, a.train, have_tok ? &tok : NULL, a.captions, a.n_captions, a.clean};
        st = forward_run(&m, have_in ? &in : NULL, &fo, &r);
        t1 = cli_now_s();
    }
    if (st == ADDC_OK) {
        failed = "--out";
        st = safetensors_write(a.out, r.t, r.n, "{\"format\": \"pt\", \"producer\": \"addc forward\"}");
    }
    if (st != ADDC_OK) {
        rc = cli_fail(failed);
    } else {
        char b[96];
        printf("%s: %s, %lld parameters\n", a.model, m.class_name, (long long)m.params.numel);
        if (strcmp(a.weights, "none"))
            printf("weights     %s: %d tensors loaded%s\n", a.weights, m.kind == MODEL_DISC_HEADS ? m.params.n + m.state.n : rep.n_loaded,
                   rep.n_ignored ? " (other networks' tensors ignored)" : "");
        else
            printf("weights     random, seed %llu\n", (unsigned long long)a.seed);
        printf("inputs      %s\n", r.inputs[0] ? r.inputs : "(captions)");
        if (r.unused[0]) printf("not read    %s\n", r.unused);
        printf("outputs     %s:", a.out);
        for (int32_t i = 0; i < r.n; i++) {
            int o = snprintf(b, sizeof b, "(");
            for (int32_t d = 0; d < r.t[i].ndim; d++)
                o += snprintf(b + o, sizeof b - (size_t)o, "%s%lld", d ? ", " : "", (long long)r.t[i].shape[d]);
            snprintf(b + o, sizeof b - (size_t)o, ")");
            printf("%s %s %s", i ? "," : "", r.t[i].name, b);
        }
        printf("\nforward     %.1f ms on %d threads\n", 1e3 * (t1 - t0), parallel_threads());
    }
    weights_report_free(&rep);
    forward_result_free(&r);
    if (have_tok) clip_tokenizer_free(&tok);
    if (have_in) safetensors_close(&in);
    model_free(&m);
    return rc;
}
