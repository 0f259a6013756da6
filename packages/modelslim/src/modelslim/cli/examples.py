"""The examples shown under `-h`, one block per subcommand; each runs as written from a repository checkout."""

from __future__ import annotations

_QUANT = """\
  # quantize the demo model that ships with the repository with the w8a8 best practice
  msmodelslim quant --model_path examples/qwen2-demo --save_path out/w8a8 --model_type Qwen2-demo \\
      --quant_type w8a8 --device cpu --yes
  # your own YAML config instead of a best practice; print the plan only
  msmodelslim quant --model_path /models/Qwen2.5-7B-Instruct --save_path out/q7 \\
      --model_type Qwen2.5-7B-Instruct --config_path my_w8a8.yaml --dry-run
  # a best practice for a serving scenario, on two NPUs, keeping a log file
  msmodelslim quant --model_path /models/Qwen3-8B --save_path out/q3 --model_type Qwen3-8B \\
      --quant_type w4a8 --tag vLLM-Ascend --device npu:0,1 --log_file q3.log
"""

_EVAL = """\
  # check the quick-start output against its float model (the demo's own held-out text is the default)
  msmodelslim eval --model_path examples/qwen2-demo --quant_path out/w8a8
  # other text, fewer samples
  msmodelslim eval --model_path examples/qwen2-demo --quant_path out/w8a8 --dataset heldout_eval.jsonl \\
      --max_samples 8
"""

_CONVERT = """\
  msmodelslim convert-config old_v0_config.yaml > new_v1_config.yaml
"""

_LIST = """\
  msmodelslim list                 # everything
  msmodelslim list quant-types     # w8a8, w4a8, ... with what each does
  msmodelslim list practices       # the best practices quant --quant_type picks from
  msmodelslim list model-types     # names with a dedicated model adapter
"""

_ANALYZE = """\
  # rank the demo model's decoder layers by what the w8a8 practice costs them
  msmodelslim analyze --model_path examples/qwen2-demo --model_type Qwen2-demo --quant_type w8a8
  # rank single linears under your own config, keep the 5 worst as an exclude list
  msmodelslim analyze linear --model_path examples/qwen2-demo --model_type Qwen2-demo \\
      --config_path my_w8a8.yaml --topk 5
"""

_TUNE = """\
  # roll layers back to float until the perplexity target in tune.yaml is met, within two hours
  msmodelslim tune --model_path examples/qwen2-demo --save_path out/tuned --config tune.yaml \\
      --model_type Qwen2-demo --timeout 2H
"""

_CHECK = """\
  # would vLLM-Ascend (the engine installed here) load the quick-start output?
  msmodelslim check out/w8a8
  # the same for a MindIE-SD checkpoint
  msmodelslim check out/wan --engine mindie-sd
"""

EXAMPLES: dict[str, str] = {"quant": _QUANT, "eval": _EVAL, "check": _CHECK, "convert-config": _CONVERT, "list": _LIST,
                            "analyze": _ANALYZE, "tune": _TUNE}

TOP_EXAMPLES = """\
  msmodelslim quant --model_path examples/qwen2-demo --save_path out/w8a8 --model_type Qwen2-demo \\
      --quant_type w8a8 --device cpu --yes
  msmodelslim eval --model_path examples/qwen2-demo --quant_path out/w8a8
  msmodelslim list quant-types
  msmodelslim quant -h             # every option of a command, with examples
"""
