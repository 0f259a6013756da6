"""The converted checkpoint on disk: built in a hidden staging directory, moved into save_path at the end.

Nothing under save_path looks like a checkpoint until the conversion has finished: tensors stream into
`.modelslim-convert.partial/` (shards assembled there), side files and config.json are copied next to them,
and only then is every file moved into save_path, the file that marks a complete checkpoint last
(`quant_model_description.json` for ascendv1, `config.json` for Hugging Face output). A failure removes
the staging directory; a stale earlier output is removed before the new one starts.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from modelslim_core.io.permissions import make_dir, secure
from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter

from modelslim_save_ascend.ascendv1 import DESCRIPTION_NAME, WEIGHTS_PREFIX
from modelslim_save_ascend.convert.spec import ASCENDV1
from modelslim_save_ascend.description import Description
from modelslim_save_ascend.output_dir import (clear_previous_output, copy_side_files, strip_quantization_config,
                                              write_json_atomic)

STAGING_NAME = ".modelslim-convert.partial"
HF_PREFIX = "model"
HF_MARKER = "config.json"


class ConvertOutput:
    """Streams tensors of one layout (ascendv1 or hf) and commits them atomically into `save_path`."""

    def __init__(self, save_path: Path, model_path: Path, layout: str, part_file_size: float):
        self.save_path = Path(save_path)
        self.model_path = Path(model_path)
        self.layout = layout
        self.prefix = WEIGHTS_PREFIX if layout == ASCENDV1 else HF_PREFIX
        self.marker = DESCRIPTION_NAME if layout == ASCENDV1 else HF_MARKER
        self.limit_bytes = max(1, int(part_file_size * 2**30)) if part_file_size > 0 else None
        self.staging = self.save_path / STAGING_NAME
        self.description = Description()
        self.writer: ShardedSafetensorsWriter | None = None

    def __enter__(self) -> "ConvertOutput":
        make_dir(self.save_path)
        clear_previous_output(self.save_path, self.prefix, self.marker)
        shutil.rmtree(self.staging, ignore_errors=True)  # left by a killed run
        make_dir(self.staging)
        self.writer = ShardedSafetensorsWriter(self.staging, self.prefix, 0, limit_bytes=self.limit_bytes)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            if self.writer is not None:
                self.writer.abort()
            shutil.rmtree(self.staging, ignore_errors=True)

    def write(self, name: str, tensor: torch.Tensor, tag: str) -> None:
        self.writer.write(name, tensor)
        self.description.tag(name, tag)

    def write_blocks(self, name: str, dtype: torch.dtype, shape: list[int], blocks: Iterable[torch.Tensor],
                     tag: str) -> None:
        """A tensor arriving as consecutive row blocks (never whole in memory)."""
        self.writer.write_blocks(name, dtype, shape, blocks)
        self.description.tag(name, tag)

    def commit(self, serving_dtype: str) -> list[str]:
        """Finish the weights, add config.json and the side files, then move everything into save_path."""
        self.writer.close()
        copy_side_files(self.model_path, self.staging, skip={DESCRIPTION_NAME})
        strip_quantization_config(self.staging / "config.json")
        if self.layout == ASCENDV1:
            if self.description.model_quant_type == "Unknown":
                self.description.propose("FLOAT")
            self.description.metadata["serving_dtype"] = serving_dtype
            write_json_atomic(self.staging / DESCRIPTION_NAME, self.description.to_json(), indent=4)
        files = sorted(p.name for p in self.staging.iterdir() if p.name != self.marker)
        if (self.staging / self.marker).is_file():
            files.append(self.marker)  # last: its presence says the checkpoint is complete
        for name in files:
            secure(self.staging / name)
            os.replace(self.staging / name, self.save_path / name)
        self.staging.rmdir()
        return files
