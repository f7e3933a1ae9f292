"""Run directories for the export/push tests, built like `fnsft train` leaves them (real PEFT adapters, real files).

``make_run_dir(root, base_dir, method=...)`` is reusable: an end-to-end test can point the exporters at a real
`fnsft train` run instead. Fixtures using it live in conftest.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from fnsft.atomic import atomic_write_json, atomic_write_text
from fnsft.recipe.load import dump_recipe
from fnsft.recipe.schema import Recipe
from fnsft.rundir import RunDir

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, 12345 tokens"]


def write_manifest(run: RunDir, recipe: Recipe, base_name: str, extra: dict | None = None) -> None:
    manifest = {
        "schema_version": 1,
        "method": recipe.method.name,
        "recipe_sha256": "0" * 64,
        "base_model": {"name_or_path": base_name, "identity": {"source": "dir", "path": base_name}},
        "dataset": {"path": recipe.data.path, "fingerprint": "abc123"},
        "packages": {"transformers": "5.24.0", "peft": "0.21.2", "trl": "1.16.0", "torch": "2.13.0"},
        "metrics": {"train_loss": 1.23, "eval_loss": 1.5},
        "memory": {"predicted_peak_gib": 2.0, "measured_peak_gib": 1.8},
        "mask": None,
        "seed": recipe.training.seed,
        "some_future_key": {"ignored": True},
    }
    manifest.update(extra or {})
    atomic_write_json(run.manifest, manifest)


def make_run_dir(
    root: Path,
    base_dir: Path,
    *,
    method: str = "lora",
    base_name: str | None = None,
    target_modules: list[str] | None = None,
    seed: int = 0,
    manifest_extra: dict | None = None,
    fit_steps: int = 60,
    lora_b_std: float = 0.05,
) -> RunDir:
    """A finished run: recipe.yaml, manifest.json and adapter/ (LoRA with non-zero B) or model/ (perturbed full)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = RunDir.at(root)
    root.mkdir(parents=True, exist_ok=True)
    name = base_name or str(base_dir)
    recipe = Recipe.model_validate(
        {"model": {"name_or_path": name}, "data": {"path": "data/chat.jsonl"}, "method": {"name": method},
         "output": {"dir": str(root)}}
    ).resolved()
    atomic_write_text(run.recipe, dump_recipe(recipe))
    write_manifest(run, recipe, name, manifest_extra)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    if method == "full":
        fit_to_prompts(model, tokenizer, [p for p in model.parameters()], lr=3e-3, steps=fit_steps)
        model.save_pretrained(run.model, safe_serialization=True)
        tokenizer.save_pretrained(run.model)
        return run
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=target_modules or ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"],
        lora_dropout=0.0, task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # PEFT initialises B to zero; a trained adapter is not a no-op
        for param_name, param in peft_model.named_parameters():
            if "lora_B" in param_name:
                param.copy_(torch.randn(param.shape, generator=generator) * lora_b_std)
    if fit_steps:
        fit_to_prompts(peft_model, tokenizer, [p for p in peft_model.parameters() if p.requires_grad], lr=1e-2,
                       steps=fit_steps)
    peft_model.save_pretrained(run.adapter)
    tokenizer.save_pretrained(run.adapter)
    return run


def fit_to_prompts(model, tokenizer, params, *, lr: float, steps: int = 60) -> None:
    """A short real training run on the fixed prompts, so the model's predictions there are confident.

    A random model's logits are nearly tied over 49k tokens, which makes argmax agreement a coin flip for any
    quantization; a trained model (like a real fine-tune) has decided predictions, as the GGUF checks assume.
    """
    import torch

    batch = tokenizer(PROMPTS, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
    model.eval()


def reference_merged_model(run: RunDir, base_dir: Path):
    """PEFT's own in-memory merge of the run's adapter: the reference the shard-wise merge must match."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    return PeftModel.from_pretrained(base, run.adapter).merge_and_unload().eval()


def prompt_logits(model, tokenizer_dir: Path, prompts: list[str] = PROMPTS):
    """Logits at every position of each prompt, one tensor per prompt."""
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with torch.no_grad():
        return [model(**tokenizer(prompt, return_tensors="pt")).logits[0].float() for prompt in prompts]


def compare_logits(expected: list, actual: list) -> dict[str, float]:
    """Max absolute error, argmax agreement (fraction of positions) over all prompts, and the reference's largest
    top-2 margin at a position whose argmax flipped (a flip at a decisive position is a conversion bug, one at a
    near-tie is rounding noise)."""
    import torch

    expected_all, actual_all = torch.cat(expected), torch.cat(actual)
    top2 = expected_all.topk(2, dim=-1).values
    flipped = expected_all.argmax(-1) != actual_all.argmax(-1)
    return {"max_abs_error": float((actual_all - expected_all).abs().max()),
            "argmax_agreement": 1.0 - float(flipped.float().mean()),
            "largest_flip_margin": float((top2[:, 0] - top2[:, 1])[flipped].max()) if flipped.any() else 0.0,
            "logit_scale": float(expected_all.abs().max())}


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


#: Shapes of the small-vocabulary models used by the fast GGUF tests. Their own 320-token byte-level BPE keeps
#: GGUF metadata tiny: transformers' GGUF loader parses a 49k-token vocabulary for ~10 s per load, too slow to
#: repeat for every architecture and type in the default suite (the slow suite does it with the real tokenizer).
SMALL_VOCAB_SHAPES = {
    "llama": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mistral": dict(num_key_value_heads=2, tie_word_embeddings=False),
    "qwen2": dict(num_key_value_heads=2, tie_word_embeddings=False),
    "gemma": dict(num_key_value_heads=1, head_dim=16),
    "gemma2": dict(num_key_value_heads=2, head_dim=16, sliding_window=256),
}
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


#: Sizes of the K-quant test models: rows of 256 and 512 values, so the 256-value super-blocks are really used.
KQUANT_SIZES = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4)


def build_small_vocab_model(arch: str, target: Path, **sizes) -> Path:
    """A random tiny model of ``arch`` with a 320-token byte-level BPE tokenizer trained on the fixed prompts
    (``sizes`` override hidden_size, intermediate_size, num_hidden_layers)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if (target / "config.json").is_file():
        return target
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    core.train_from_iterator(PROMPTS * 4 + ["Hello world, this is a tiny corpus for a tiny tokenizer."], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return save_small_model(arch, tokenizer, target, vocab_size=320, **sizes)


def save_small_model(arch: str, tokenizer, target: Path, vocab_size: int, **sizes) -> Path:
    """A random ``arch`` model of the small shapes above, saved with ``tokenizer``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2) | sizes
    config = AutoConfig.for_model(
        arch, vocab_size=vocab_size, num_attention_heads=4, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        **shape, **SMALL_VOCAB_SHAPES[arch],
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


#: Text for the sentencepiece fixtures: prose, code, digits and repeated spaces, written here so the trained
#: vocabulary never changes with files elsewhere in the repository.
SENTENCEPIECE_CORPUS = [
    *PROMPTS,
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
    "Readability counts, and special cases are not special enough to break the rules.",
    "def add(a, b):\n    return a + b\n\nfor value in range(10):\n    print(add(value, 2))\n",
    *(f"Question {i}: what is {i} plus {i * 7}?  Answer: {i * 8}." for i in range(60)),
]
#: Strings the fixtures' tokenizers were not trained on: unseen characters (byte fallback), space runs, tabs,
#: newlines, digits, a special token written inline.
SENTENCEPIECE_PROBES = [
    "Hello  world\n\n  12345 tokens",
    " leading space, trailing space ",
    "Ünïcödé → 日本語 and an emoji 🤗\ttab",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Question 61: what is 61 plus 427?  Answer: 488.",
]


def train_sentencepiece(target: Path, *, gemma: bool) -> Path:
    """A real sentencepiece BPE model with byte fallback, trained like Llama 2's (or, ``gemma``, like Gemma's: no
    dummy prefix, <pad>/<eos>/<bos> ids). Deterministic: one thread, fixed corpus."""
    import sentencepiece

    target.mkdir(parents=True, exist_ok=True)
    specials = (dict(pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>")
                if gemma else dict(unk_id=0, bos_id=1, eos_id=2, pad_id=-1))
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(SENTENCEPIECE_CORPUS), model_prefix=str(target / "tokenizer"), model_type="bpe",
        vocab_size=512, byte_fallback=True, split_digits=True, add_dummy_prefix=not gemma,
        normalization_rule_name="identity", remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=1.0, num_threads=1, minloglevel=2, **specials,
    )
    return target / "tokenizer.model"


def build_sentencepiece_model(arch: str, target: Path) -> Path:
    """A random tiny ``arch`` model whose tokenizer is a real sentencepiece model converted by transformers, laid
    out like a Llama 2 / Mistral / Gemma repository (tokenizer.model beside tokenizer.json)."""
    import shutil

    from transformers import GemmaTokenizer, LlamaTokenizer

    if (target / "config.json").is_file():
        return target
    gemma = arch.startswith("gemma")
    model_file = train_sentencepiece(target.parent / f"{target.name}-spm", gemma=gemma)
    tokenizer = (GemmaTokenizer if gemma else LlamaTokenizer).from_pretrained(model_file.parent, add_bos_token=True)
    if not gemma:
        tokenizer.pad_token = tokenizer.unk_token
    save_small_model(arch, tokenizer, target, vocab_size=576)  # 512 pieces (+ Gemma's <mask>), padded rows
    shutil.copy(model_file, target / "tokenizer.model")
    return target
