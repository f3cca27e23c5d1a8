"""Checks the rewritten real model files that realCode.ts wrote (argv[1]: its manifest).

Every output must compile. Where the original file imports with CPU torch (nanoGPT's
standalone model, and HF transformers' modeling files, loaded as modules of their own
package so their relative imports resolve), the original and the rewritten model are
built from one small config with the same weights, and a forward and a backward pass must
agree: in eval mode exactly for dropout conversions, within float rounding for SDPA; in
training mode (dropout on, one seed) exactly for checkpointing. 2:4 FFNs prune weights by design: they must run and give finite
gradients. Prints one line per check; exits 1 on any failure.
"""

import importlib.util
import inspect
import json
import math
import sys
import traceback

import torch

torch.set_num_threads(2)

_count = 0


def load(path, package=None):
    """Imports a file as a fresh module; inside `package` when it uses relative imports."""
    global _count
    _count += 1
    stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0].replace("-", "_")
    name = (
        f"{package}.realcode_{stem}_{_count}"
        if package
        else f"realcode_{stem}_{_count}"
    )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if package:
        module.__package__ = package
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SMALL = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "intermediate_size": 64,
    "vocab_size": 99,
    "max_position_embeddings": 64,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "dim": 32,
    "hidden_dim": 64,
    "n_layers": 2,
    "n_heads": 4,
    "ffn_dim": 64,
    "word_embed_proj_dim": 32,
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
    "embed_dim": 16,
    "depths": [1, 1],
    "window_size": 2,
    "ffn_hidden_size": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "decoder_start_token_id": 0,
}

# file stem -> (config class, model class, input kind)
HF = {
    "bert": ("BertConfig", "BertModel", "ids"),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", "ids"),
    "llama": ("LlamaConfig", "LlamaForCausalLM", "ids"),
    "mistral": ("MistralConfig", "MistralForCausalLM", "ids"),
    "distilbert": ("DistilBertConfig", "DistilBertModel", "ids"),
    "t5": ("T5Config", "T5EncoderModel", "ids"),
    "bart": ("BartConfig", "BartModel", "ids"),
    "clip": ("CLIPTextConfig", "CLIPTextModel", "ids"),
    "vit": ("ViTConfig", "ViTModel", "pixels"),
    "gpt_neox": ("GPTNeoXConfig", "GPTNeoXForCausalLM", "ids"),
    "opt": ("OPTConfig", "OPTForCausalLM", "ids"),
    "swin": ("SwinConfig", "SwinModel", "pixels"),
    "falcon": ("FalconConfig", "FalconForCausalLM", "ids"),
}


def small_config(cls):
    accepted = set(inspect.signature(cls.__init__).parameters)
    kwargs = {k: v for k, v in SMALL.items() if k in accepted}
    if cls.__name__ == "SwinConfig":
        kwargs.update(
            num_heads=[2, 2], embed_dim=16, image_size=32, patch_size=4, window_size=2
        )
    return cls(**kwargs)


def first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return first_tensor(out[0])
    for key in ("logits", "last_hidden_state"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    return first_tensor(out.to_tuple())


def run(model, inputs, train=False):
    """Forward and backward (eval mode, or training mode from one seed): output and every parameter's gradient."""
    model.train(train)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1234)
    y = first_tensor(model(**inputs))
    (y.float() * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    return y.detach(), {
        n: p.grad.detach().clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }


def build_pair(item):
    """The original and rewritten model (same weights) and their inputs, or None where the file does not import."""
    name = item["file"]
    if name == "nanoGPT__model.py":
        mods = [load(item["orig"]), load(item["out"])]
        cfg = {
            "block_size": 32,
            "vocab_size": 128,
            "n_layer": 2,
            "n_head": 4,
            "n_embd": 64,
            "dropout": 0.1,
            "bias": True,
        }
        torch.manual_seed(0)
        models = [m.GPT(m.GPTConfig(**cfg)) for m in mods]
        ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(1))
        return models, {"idx": ids}
    if name.startswith("hf__modeling_"):
        stem = name[len("hf__modeling_") : -3]
        if stem not in HF:
            return None
        config_name, model_name, kind = HF[stem]
        package = f"transformers.models.{stem}"
        importlib.import_module(package)
        mods = [load(item["orig"], package), load(item["out"], package)]
        config_cls = getattr(
            importlib.import_module(f"{package}.configuration_{stem}"), config_name
        )
        config = small_config(config_cls)
        config._attn_implementation = "eager"
        torch.manual_seed(0)
        models = [getattr(m, model_name)(config) for m in mods]
        if kind == "ids":
            ids = torch.randint(
                3, 99, (2, 12), generator=torch.Generator().manual_seed(1)
            )
            return models, {"input_ids": ids}
        pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        return models, {"pixel_values": pixels}
    return None


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        items = json.load(f)
    failures = []
    for item in items:
        with open(item["out"], encoding="utf-8") as f:
            try:
                compile(f.read(), item["file"], "exec")
            except SyntaxError as e:
                failures.append(
                    f"{item['rewrite']} {item['file']}: does not compile: {e}"
                )
    print(
        f"compiled {len(items)} rewritten files, {len(items) - len(failures)} compile"
    )
    checked = 0
    for item in items:
        what = f"{item['rewrite']} {item['file']}"
        try:
            pair = build_pair(item)
        except Exception as e:  # noqa: BLE001 - a file that needs what CPU torch or this environment lacks is reported, not fatal
            print(f"  {what}: not imported here ({type(e).__name__}: {str(e)[:120]})")
            continue
        if pair is None:
            continue
        (a, b), inputs = pair
        try:
            b.load_state_dict(a.state_dict(), strict=True)
            # Checkpointing acts only while training; non-reentrant checkpoints replay the RNG, so dropout matches too.
            train = item["rewrite"] == "lever checkpoint"
            ya, ga = run(a, inputs, train)
            yb, gb = run(b, inputs, train)
        except Exception:  # noqa: BLE001 - any error of the rewritten model is a failure, with its traceback
            failures.append(
                f"{what}: the rewritten model failed to run:\n{traceback.format_exc()[-1500:]}"
            )
            continue
        checked += 1
        if item["rewrite"] == "ffn 2:4":
            ok = (
                bool(torch.isfinite(yb).all())
                and all(bool(torch.isfinite(g).all()) for g in gb.values())
                and ga.keys() == gb.keys()
            )
            print(
                f"  {what}: runs, finite output and gradients: {'ok' if ok else 'FAILED'}"
            )
        elif item["rewrite"] == "lever sdpa":
            err = max(
                [(yb - ya).abs().max().item()]
                + [
                    (gb[n] - ga[n]).abs().max().item()
                    / max(ga[n].abs().max().item(), 1e-12)
                    for n in ga
                ]
            )
            ok = ga.keys() == gb.keys() and math.isfinite(err) and err <= 1e-4
            print(
                f"  {what}: eval forward/backward within float rounding (max rel err {err:.2g}): {'ok' if ok else 'FAILED'}"
            )
        else:
            ok = (
                torch.equal(ya, yb)
                and ga.keys() == gb.keys()
                and all(torch.equal(ga[n], gb[n]) for n in ga)
            )
            print(
                f"  {what}: {'training' if train else 'eval'} forward/backward exactly equal: {'ok' if ok else 'FAILED'}"
            )
        if not ok:
            failures.append(f"{what}: outputs or gradients differ")
    print(f"forward/backward compared for {checked} rewritten files")
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
