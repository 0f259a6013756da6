"""Calibration sets the reference tool ships and ModelSlim does not, and what to use instead.

Configs brought from the reference name its sets by short name (`dataset: boolq.jsonl`). We cannot ship
them (some carry non-commercial licences, and they are not ours), so when such a name resolves to nothing
the error says what kind of data the set held and how to go on: point `spec.dataset` at the user's own copy,
or at the set ModelSlim ships for the same kind of data (calib/README.md describes each).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from modelslim_core.errors import DatasetError


@dataclass(frozen=True)
class ReferenceSet:
    kind: str
    #: The shipped set of the same kind (a short name under calib/), and what it holds.
    ours: str
    ours_kind: str


_MIX = ("mix_calib.jsonl", "general questions, instructions, dialogue, code and math in English and Chinese")
_COT = ("cot_calib.jsonl", "step-by-step reasoning traces in English and Chinese")
_LONG = ("long_context_calib.jsonl", "documents of 4-6k tokens: record logs with a retrieval question, module "
                                     "documentation")
_CODE = ("code_calib.jsonl", "Python functions and classes with a task line")
_IMAGES = ("vlm_calib", "an index.jsonl of synthetic images, audio and video with prompts")
_VIDEOS = ("video_calib", "an index.jsonl of short synthetic mp4 clips with prompts")
_PROMPTS = ("", "it is a prompt set for generation models, which ModelSlim ships under the same name for "
                "multimodal_sd_modelslim_v1 configs (calib/sd_prompts/), not a text calibration set")

#: Short name -> what the reference's set holds and our set of the same kind.
REFERENCE_SETS: dict[str, ReferenceSet] = {
    "boolq.jsonl": ReferenceSet("BoolQ question/passage pairs (yes/no reading comprehension, text)", *_MIX),
    "qwen3_cot.json": ReferenceSet("long chain-of-thought samples (text)", *_COT),
    "qwen3_cot_w4a4.json": ReferenceSet("long chain-of-thought samples for W4A4 recipes (text)", *_COT),
    "laos_calib.jsonl": ReferenceSet("the calibration texts of the LAOS W4A4 recipe (reasoning-heavy text)", *_COT),
    "long_calib.jsonl": ReferenceSet("long-context texts (several thousand tokens each)", *_LONG),
    "autocodebench.jsonl": ReferenceSet("programming problems with solutions (code)", *_CODE),
    "humaneval_x.jsonl": ReferenceSet("HumanEval-X programming tasks (code)", *_CODE),
    "data_list_1.jsonl": ReferenceSet("the Step-3.5 practice's chat prompts (text)", *_MIX),
    "data_list_2.jsonl": ReferenceSet("chat prompts (text)", *_MIX),
    "cn_en.jsonl": ReferenceSet("mixed Chinese and English texts", *_MIX),
    "teacher_qualification.jsonl": ReferenceSet("exam-style questions (the reference's v0 default, text)", *_MIX),
    "calib_prompt.jsonl": ReferenceSet("chat prompts (text)", *_MIX),
    "qwen2.5_w8a8_pdmix_calib_prompt.jsonl": ReferenceSet("chat prompts of the pdmix practice (text)", *_MIX),
    "qwen2.5_w8a8_pdmix_anti_prompt.jsonl": ReferenceSet("anti-outlier prompts of the pdmix practice (text)", *_MIX),
    "anti_prompt.json": ReferenceSet("anti-outlier prompts (text)", *_MIX),
    "calibImages": ReferenceSet("images for VLM calibration (a folder of photos, each paired with default_text)",
                                *_IMAGES),
    "calibVideos": ReferenceSet("image + audio + video + text samples for Omni and video-capable VLM calibration",
                                *_VIDEOS),
    "hunyuanvideo": ReferenceSet("text prompts for HunyuanVideo generation", *_PROMPTS),
}
#: Families of sets named by prefix (wan2_2_t2v, wan2_2_i2v, wan2_2_ti2v).
REFERENCE_PREFIXES: dict[str, ReferenceSet] = {
    "wan2_2_": ReferenceSet("text prompts (with images for image-to-video) for Wan2.2 video generation", *_PROMPTS),
}


def reference_set(name: str) -> tuple[str, ReferenceSet] | None:
    """(set name, description) when `name` refers to one of the reference tool's sets."""
    base = PurePath(name.rstrip("/\\")).name
    if base in REFERENCE_SETS:
        return base, REFERENCE_SETS[base]
    for prefix, described in REFERENCE_PREFIXES.items():
        if base.startswith(prefix):
            return base, described
    return None


def reference_set_error(name: str) -> DatasetError | None:
    """The error for a `spec.dataset` naming a reference set that is not on this machine; None otherwise."""
    found = reference_set(name)
    if found is None:
        return None
    base, described = found
    instead = (f"or use the set ModelSlim ships for this kind of data: `dataset: {described.ours}` "
               f"({described.ours_kind})" if described.ours else f"or leave spec.dataset out: {described.ours_kind}")
    return DatasetError(
        f"spec.dataset {name!r} is a calibration set of the reference tool ({described.kind}); it does not ship "
        "with ModelSlim.",
        f"point spec.dataset at your copy of it (an absolute path, e.g. `dataset: /data/calib/{base}`, or a path "
        f"relative to the working directory), {instead}.",
    )
