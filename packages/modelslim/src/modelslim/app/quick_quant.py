"""`msmodelslim quant`: validate the request, choose the config, hand it to the service.

Order matters for users: everything that can be checked cheaply (paths, device, config, practice) is
checked before the model is loaded, and nothing is written until the config is known to be valid.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelslim_core.devices import resolve_device
from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import check_target_engines
from modelslim_core.formats.fused_release import check_fused_release_linears
from modelslim_core.io.permissions import secure_tree
from modelslim_core.io.dir_lock import exclusive_directory
from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.tokenizer_files import check_tokenizer_files
from modelslim_core.practice import PracticeLibrary, select_practice
from modelslim_core.protocol.config import CONVERT, QuantConfig, parse_quant_config
from modelslim_core.protocol.spec import processor_class
from modelslim_core.protocol.v0_translate import V0, translate_v0
from modelslim_core.protocol.yaml_io import load_yaml_file
from modelslim_core.service.base import QuantRequest
from modelslim_runners.resume import STATE_DIR as RESUME_DIR

from modelslim.app.confirm import Confirmer
from modelslim.app.convert_run import adapter_for_run, run_model_type
from modelslim.app.export import export_config
from modelslim.app.paths import check_config_path, check_model_path, check_save_path, create_save_path

logger = logging.getLogger("modelslim")


@dataclass
class QuantArgs:
    model_path: str
    save_path: str
    model_type: str | None
    config_path: str | None = None
    quant_type: str | None = None
    device: str | None = None
    tags: list[str] | None = None
    trust_remote_code: bool = False
    debug: bool = False
    yes: bool = False
    dry_run: bool = False
    #: --max_memory in bytes (None: no explicit budget).
    max_memory: int | None = None

    @classmethod
    def from_namespace(cls, ns: argparse.Namespace) -> "QuantArgs":
        return cls(
            model_path=ns.model_path,
            save_path=ns.save_path,
            model_type=ns.model_type,
            config_path=ns.config_path,
            quant_type=ns.quant_type,
            device=ns.device,
            tags=ns.tag or None,
            trust_remote_code=ns.trust_remote_code,
            debug=ns.debug,
            yes=ns.yes,
            dry_run=getattr(ns, "dry_run", False),
            max_memory=getattr(ns, "max_memory", None),
        )


def choose_config(
    args: QuantArgs, pedigree: str, confirm: Confirmer, apiversions: tuple[str, ...] | None = None
) -> tuple[dict[str, Any], str]:
    """The raw config mapping and where it came from: --config_path, or the practice library."""
    if args.config_path:
        if args.tags:
            logger.warning("--tag selects no practice with --config_path; it still names the serving engine checked.")
        return translated_if_v0(load_yaml_file(args.config_path), args.config_path, confirm), args.config_path
    selection = select_practice(PracticeLibrary.discover(), pedigree, args.model_type, args.quant_type, args.tags,
                                apiversions)
    if selection.tip:
        confirm(selection.tip)
    logger.info("Practice: %s (%s), quant type %s.", selection.practice.metadata.config_id,
                selection.practice.path, selection.used_quant_type)
    return translated_if_v0(selection.practice.data, str(selection.practice.path), confirm), str(selection.practice.path)


def translated_if_v0(raw: Any, source: str, confirm: Confirmer) -> Any:
    """A modelslim_v0 document becomes its modelslim_v1 translation, printed to stdout and confirmed first."""
    if not (isinstance(raw, dict) and raw.get("apiversion") == V0):
        return raw
    translation = translate_v0(raw, source)
    print(translation.to_yaml(source), flush=True)
    confirm(f"{source} is a deprecated modelslim_v0 config; its modelslim_v1 translation (printed above) will be used.")
    return translation.config


def read_model_config(model_path: Path) -> dict[str, Any]:
    """config.json of the model (empty for pipelines without one): what the engine check needs to know."""
    file = model_path / "config.json"
    try:
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else {}
    except ValueError:
        return {}


def check_config_for_model(config: QuantConfig, adapter: ModelAdapter, model_path: Path, tags: list[str] | None,
                           source: str) -> None:
    """The YAML-load refusals of a config for this model: a checkpoint the target engines cannot load, or a quantized
    linear the release stores fused. `tune` runs them on its template before any round, as `quant` does."""
    check_target_engines(config.spec, tags, read_model_config(model_path), source)
    check_fused_release_linears(config.spec, adapter, source)


def run_quant(args: QuantArgs, confirm: Confirmer | None = None) -> Path:
    started = time.perf_counter()
    model_path = check_model_path(args.model_path)
    save_path = check_save_path(args.save_path, model_path)
    if args.config_path:
        check_config_path(args.config_path)
    device = resolve_device(args.device)
    args.model_type = run_model_type(args.model_type, args.config_path)
    adapter = adapter_for_run(args.model_type, model_path, args.config_path, args.trust_remote_code)
    raw, source = choose_config(args, adapter.pedigree, confirm or Confirmer(args.yes), adapter.apiversions)
    config: QuantConfig = parse_quant_config(raw, source)
    check_config_for_model(config, adapter, model_path, args.tags, source)
    request = QuantRequest(adapter=adapter, model_path=model_path, save_path=save_path, device=device, debug=args.debug,
                           max_memory=args.max_memory)
    try:
        config.service.check_request(config.spec, request)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", exc.hint) from None
    check_calibration_inputs(config, adapter, source)
    if args.dry_run and config.apiversion == CONVERT:
        from modelslim_save_ascend.convert.summary import dry_run_text  # noqa: PLC0415

        print(dry_run_text(config.spec, request), flush=True)
        return save_path
    if args.dry_run:
        from modelslim.app.dry_run import build_plan, format_plan  # noqa: PLC0415

        print(format_plan(build_plan(config, source, request)), flush=True)
        return save_path
    created = create_save_path(save_path)
    with exclusive_directory(save_path), removed_on_failure(save_path, created):
        exported = export_config(raw, save_path, args.model_type)
        logger.info("Config written to %s.", exported)
        request.config_digest = hashlib.sha256(exported.read_bytes()).hexdigest()
        try:
            config.service().run(config.spec, request)
        finally:
            secure_tree(save_path)  # whatever the umask: files 0o640, directories 0o750 (debug_info, optional/ too)
    logger.info("Done in %.1f s: %s", time.perf_counter() - started, save_path)
    return save_path


def check_calibration_inputs(config: QuantConfig, adapter: Any, source: str) -> None:
    """A config that calibrates needs the model's tokenizer: say so now, not after the model has loaded."""
    stages = getattr(config.service, "stages", None)
    if stages is None or not isinstance(adapter, ModelAdapter) or type(adapter).load_tokenizer is not ModelAdapter.load_tokenizer:
        return  # services and adapters with their own inputs (images, pipelines) check them themselves
    if any(processor_class(p).needs_data(p) for stage in stages(config.spec) for p in stage.processors):
        check_tokenizer_files(adapter.model_path, f"{source} calibrates on text")


@contextmanager
def removed_on_failure(save_path: Path, created: bool) -> Iterator[None]:
    """A save_path this run created is removed again when the run fails before it can resume.

    Otherwise a failed first run leaves a directory holding only the exported YAML, which looks like a
    checkpoint folder to the next person. A directory that existed before is left to the savers' own cleanup,
    and a run that left resume state keeps it (the same command continues from there)."""
    try:
        yield
    except BaseException:
        if created and not (save_path / RESUME_DIR).exists():
            shutil.rmtree(save_path, ignore_errors=True)
        raise
