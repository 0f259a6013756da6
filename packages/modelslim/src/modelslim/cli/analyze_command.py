"""`msmodelslim analyze [layer|linear|attn]`: its arguments and how it runs (registered in cli/parser.py)."""

from __future__ import annotations

import argparse

from modelslim.cli.parser import parse_bool, parse_model_type, parse_quant_type, positive_int


def add_analyze(subparsers: argparse._SubParsersAction) -> None:
    from modelslim.app.analysis_choices import METRICS, SCOPES

    analyze = subparsers.add_parser(
        "analyze",
        help="rank layers by how much quantizing them costs and suggest an exclude list",
        description="Quantize once with a scheme, then measure each layer's (or linear's, or attention's) own "
        "output error and the end-to-end effect of quantizing it alone or leaving it alone float. Writes "
        "analysis.json and analysis.png into --output_dir and prints the top-k as a YAML exclude list.",
    )
    analyze.add_argument("scope", nargs="?", default="layer", choices=SCOPES,
                         help="unit of the ranking: decoder layer (default), linear (MoE experts grouped), attention")
    analyze.add_argument("--model_path", required=True, help="local float model directory")
    analyze.add_argument("--model_type", required=True, type=parse_model_type, help="model name, e.g. Qwen2.5-7B-Instruct")
    analyze.add_argument("--output_dir", default="analysis", help="where analysis.json and analysis.png go (default ./analysis)")
    source = analyze.add_mutually_exclusive_group()
    source.add_argument("--config_path", help="YAML quantization config to analyse")
    source.add_argument("--quant_type", type=parse_quant_type, help="analyse this best practice (default: w8a8)")
    analyze.add_argument("--calib_dataset", help="samples to measure on (default: the config's dataset)")
    analyze.add_argument("--topk", type=positive_int, default=15, help="size of the suggested exclude list (default 15)")
    analyze.add_argument("--metric", default="mse_model_wise", choices=METRICS,
                         help="ranking metric (default mse_model_wise: end-to-end divergence with the unit alone quantized)")
    analyze.add_argument("--max_samples", type=positive_int, default=4, help="samples measured (default 4, 256 tokens each)")
    analyze.add_argument("--device", help="cpu or cuda[:i] (default: as for quant)")
    analyze.add_argument("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False,
                         help="allow the model's own Python code to run (true/false; default false)")


def run(args: argparse.Namespace) -> None:
    from modelslim.app.analyze import AnalyzeArgs, format_table, run_analyze

    quant_type = args.quant_type or (None if args.config_path else "w8a8")
    report = run_analyze(AnalyzeArgs(args.scope, args.model_path, args.model_type, args.output_dir, args.config_path,
                                     quant_type, args.calib_dataset, args.topk, args.metric, args.device,
                                     args.max_samples, args.trust_remote_code))
    print(format_table(report))
