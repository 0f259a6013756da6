"""Whether a model directory ships a tokenizer, decided from file names alone (no transformers import).

Without its files, transformers may still build *some* tokenizer (from config.json alone) that turns every
text into zero tokens; the run then fails deep inside the first forward. Checking names first turns that
into one message before anything is loaded.
"""

from __future__ import annotations

from pathlib import Path

from modelslim_core.errors import ModelError

#: Files any of which carries a usable vocabulary (fast tokenizer, SentencePiece, BPE, WordPiece, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "vocab.json", "vocab.txt", "qwen.tiktoken")
TOKENIZER_SUFFIXES = (".tiktoken",)


def has_tokenizer_files(model_path: Path) -> bool:
    model_path = Path(model_path)
    if any((model_path / name).is_file() for name in TOKENIZER_FILES):
        return True
    return any(path.name.endswith(TOKENIZER_SUFFIXES) for path in model_path.iterdir() if path.is_file())


def check_tokenizer_files(model_path: Path, why: str = "calibration tokenizes text") -> None:
    """Raise ModelError naming the directory and the files looked for when none is there."""
    if not has_tokenizer_files(model_path):
        raise ModelError(
            f"model_path {str(model_path)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:4])}, ...), "
            f"but {why}.",
            "copy the tokenizer files of the original release into the model directory (they come with "
            "config.json on the model hub), or use a data-free config.",
        )
