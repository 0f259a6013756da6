"""Write the text calibration sets ModelSlim ships besides mix_calib.jsonl (see calib/README.md).

    python tools/make_text_calib.py [target_dir]     # default: calib/

- `cot_calib.jsonl`: chain-of-thought reasoning, written step by step by templates over seeded random
  numbers (arithmetic, rates, percentages, time, ordering puzzles; English and Chinese). Ours.
- `long_context_calib.jsonl`: long inputs (about 4-6k tokens each): record logs with a retrieval question at
  the end (ours), and the plain-text documentation of Python standard-library modules (PSF License).
- `code_calib.jsonl`: Python functions and classes from the standard library (PSF License), each with a
  one-line task statement, as a code model sees them.

The standard-library parts come from the interpreter that runs the script, so they can differ slightly between
Python versions; the generated parts are identical on every run (fixed seeds).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import pydoc
import random
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = REPO / "calib"

# --- chain of thought -----------------------------------------------------------------------------------


def _shopping(rng: random.Random) -> str:
    items = rng.sample(["notebooks", "pens", "folders", "rulers", "erasers", "markers"], 3)
    counts = [rng.randint(2, 9) for _ in items]
    prices = [rng.randint(3, 25) / 2 for _ in items]
    budget = int(sum(c * p for c, p in zip(counts, prices)) + rng.randint(5, 40))
    steps = [f"Step {i + 1}: {c} {item} at {p:.2f} each cost {c} x {p:.2f} = {c * p:.2f}."
             for i, (item, c, p) in enumerate(zip(items, counts, prices))]
    total = sum(c * p for c, p in zip(counts, prices))
    terms = " + ".join(f"{c * p:.2f}" for c, p in zip(counts, prices))
    return (f"Question: A teacher buys {counts[0]} {items[0]} at {prices[0]:.2f} dollars each, {counts[1]} {items[1]} "
            f"at {prices[1]:.2f} dollars each and {counts[2]} {items[2]} at {prices[2]:.2f} dollars each. She pays with "
            f"{budget} dollars. How much change does she get?\nLet's think step by step.\n" + "\n".join(steps)
            + f"\nStep 4: The total is {terms} = {total:.2f} dollars.\nStep 5: The change is {budget} - {total:.2f} = "
            f"{budget - total:.2f} dollars.\nCheck: {total:.2f} + {budget - total:.2f} = {budget}, so the subtraction "
            f"is right.\nAnswer: {budget - total:.2f} dollars.")


def _rates(rng: random.Random) -> str:
    a, b = rng.randint(3, 12), rng.randint(4, 15)
    work = a * b * rng.randint(1, 3)
    together = work / a + work / b
    hours = work / together
    return (f"Question: Pipe A fills a tank of {work} litres in {a} hours and pipe B fills it in {b} hours. How long do "
            f"both pipes together take?\nLet's reason carefully.\nFirst, pipe A delivers {work} / {a} = {work / a:.3f} "
            f"litres per hour.\nSecond, pipe B delivers {work} / {b} = {work / b:.3f} litres per hour.\nTogether they "
            f"deliver {work / a:.3f} + {work / b:.3f} = {together:.3f} litres per hour.\nSo the time is {work} / "
            f"{together:.3f} = {hours:.3f} hours, which is {int(hours)} hours and {round((hours % 1) * 60)} minutes.\n"
            f"Sanity check: the answer must be shorter than the faster pipe alone ({min(a, b)} hours), and "
            f"{hours:.3f} < {min(a, b)}.\nAnswer: about {hours:.2f} hours.")


def _percent(rng: random.Random) -> str:
    price = rng.randint(40, 400)
    up, down = rng.choice([10, 15, 20, 25, 30]), rng.choice([10, 20, 25, 40])
    after_up = price * (1 + up / 100)
    final = after_up * (1 - down / 100)
    change = (final - price) / price * 100
    return (f"Question: A jacket costs {price} yuan. The shop raises the price by {up}% and later offers {down}% off the "
            f"new price. Is the final price higher or lower than the original, and by what percentage?\nThink it "
            f"through.\n1. After the increase the price is {price} x {1 + up / 100:.2f} = {after_up:.2f} yuan.\n2. The "
            f"discount leaves {after_up:.2f} x {1 - down / 100:.2f} = {final:.2f} yuan.\n3. The difference from the "
            f"original is {final:.2f} - {price} = {final - price:.2f} yuan.\n4. Relative to {price}, that is "
            f"{change:.2f}%.\nA common mistake is to add the percentages ({up} - {down} = {up - down}%), which ignores "
            f"that the discount applies to the raised price.\nAnswer: the final price is "
            f"{'higher' if final > price else 'lower'} by {abs(change):.2f}%.")


def _time(rng: random.Random) -> str:
    start_h, start_m = rng.randint(6, 20), rng.choice([0, 5, 10, 15, 20, 30, 35, 40, 45, 50])
    legs = [rng.randint(25, 190) for _ in range(3)]
    lines, minutes = [], start_h * 60 + start_m
    for index, leg in enumerate(legs):
        minutes += leg
        lines.append(f"Leg {index + 1} takes {leg} minutes, so the clock reads {minutes // 60 % 24:02d}:{minutes % 60:02d}.")
    return (f"Question: A train leaves at {start_h:02d}:{start_m:02d}. The journey has three legs of {legs[0]}, {legs[1]} "
            f"and {legs[2]} minutes. When does it arrive, and how long is the whole trip?\nLet's work it out leg by leg."
            "\n" + "\n".join(lines) + f"\nThe whole trip is {sum(legs)} minutes = {sum(legs) // 60} h {sum(legs) % 60} min."
            f"\nAnswer: it arrives at {minutes // 60 % 24:02d}:{minutes % 60:02d} after {sum(legs)} minutes.")


def _ordering(rng: random.Random) -> str:
    people = rng.sample(["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gita"], 4)
    heights = sorted(rng.sample(range(150, 195), 4), reverse=True)
    order = dict(zip(people, heights))
    ranked = sorted(people, key=order.get, reverse=True)
    clues = [f"{ranked[0]} is taller than {ranked[1]}.", f"{ranked[2]} is shorter than {ranked[1]} but taller than "
             f"{ranked[3]}.", f"{ranked[1]} is taller than {ranked[3]}."]
    rng.shuffle(clues)
    return ("Question: " + " ".join(clues) + f" Who is the second tallest?\nLet's reason about the order.\nFrom the clue "
            f"about {ranked[2]}, we know {ranked[1]} > {ranked[2]} > {ranked[3]}.\nThe first clue places {ranked[0]} "
            f"above {ranked[1]}.\nSo the full order from tallest is {', '.join(ranked)}.\nEvery clue is consistent with "
            f"this order, and no other order satisfies all three.\nAnswer: {ranked[1]}.")


def _chinese_apples(rng: random.Random) -> str:
    boxes, per_box, eaten, friends = rng.randint(3, 9), rng.randint(6, 24), rng.randint(2, 11), rng.randint(2, 6)
    total = boxes * per_box
    left = total - eaten
    share, rest = divmod(left, friends)
    return (f"问题：小明买了{boxes}箱苹果，每箱{per_box}个。他吃了{eaten}个，剩下的平均分给{friends}位朋友。每位朋友分到几个？"
            f"还剩几个？\n让我们一步一步地思考。\n第一步：苹果总数是 {boxes} × {per_box} = {total} 个。\n第二步：吃掉{eaten}个后剩下 "
            f"{total} - {eaten} = {left} 个。\n第三步：{left} ÷ {friends} = {share} 余 {rest}。\n验算：{share} × {friends} + {rest} "
            f"= {share * friends + rest}，与{left}相等。\n答案：每位朋友分到{share}个，还剩{rest}个。")


def _chinese_speed(rng: random.Random) -> str:
    v1, v2, gap = rng.randint(40, 90), rng.randint(30, 80), rng.randint(120, 600)
    hours = gap / (v1 + v2)
    return (f"问题：甲、乙两车从相距{gap}千米的两地同时相向而行，甲车每小时行{v1}千米，乙车每小时行{v2}千米。几小时后两车相遇？"
            f"\n思路：相向而行时，两车每小时共同缩短的距离是速度之和。\n第一步：速度和为 {v1} + {v2} = {v1 + v2} 千米/小时。\n第二步："
            f"相遇时间为 {gap} ÷ {v1 + v2} ≈ {hours:.2f} 小时。\n第三步：此时甲车行了约 {v1 * hours:.1f} 千米，乙车行了约 "
            f"{v2 * hours:.1f} 千米，两者之和为 {gap} 千米，结果正确。\n答案：约{hours:.2f}小时后相遇。")


COT_TEMPLATES: tuple[Callable[[random.Random], str], ...] = (
    _shopping, _rates, _percent, _time, _ordering, _chinese_apples, _chinese_speed)


def cot_samples(count: int = 24, seed: int = 20260701) -> list[str]:
    """Each sample chains three to five worked problems, as long reasoning traces do."""
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        problems = [rng.choice(COT_TEMPLATES)(rng) for _ in range(rng.randint(3, 5))]
        samples.append("\n\n".join(problems))
    return samples


# --- long context ---------------------------------------------------------------------------------------

LONG_MODULES = ("textwrap", "shlex", "fractions", "statistics", "heapq", "difflib", "ipaddress", "calendar")


def module_documentation(name: str, limit: int = 24000) -> str:
    """The plain-text documentation pydoc renders for a standard-library module, without file paths."""
    text = pydoc.plaintext.document(importlib.import_module(name))
    text = re.sub(r"\x08.", "", text)  # pydoc's overstrike bold
    kept = [line for line in text.splitlines() if not re.search(r"(/usr/|\.py\b|https?://docs)", line)]
    return "\n".join(kept)[:limit]


def retrieval_document(rng: random.Random, records: int = 260) -> str:
    """A long warehouse log with one question at the end whose answer sits in a single early record."""
    goods = ["copper wire", "steel bolts", "glass panels", "cotton rolls", "oak planks", "ceramic tiles", "rubber seals",
             "paper reams", "solar cells", "brass hinges"]
    sites = ["North depot", "River yard", "East hall", "Harbour shed", "Hill store", "Old mill"]
    lines, target = [], rng.randint(10, records // 3)
    asked = None
    for index in range(records):
        day, item, site = 1 + index // 9, rng.choice(goods), rng.choice(sites)
        qty, crew = rng.randint(3, 480), rng.choice(["team A", "team B", "team C", "night shift", "contractors"])
        line = f"Day {day}, entry {index + 1}: {crew} moved {qty} units of {item} to {site}."
        if rng.random() < 0.3:
            line += f" Inspection noted {rng.choice(['no damage', 'two damaged units', 'late delivery', 'label errors'])}."
        if index == target:
            asked = (item, site, qty, day)
        lines.append(line)
    item, site, qty, day = asked
    return ("Warehouse movement log. Read the whole log, then answer the question after it.\n\n" + "\n".join(lines)
            + f"\n\nQuestion: on day {day}, how many units of {item} were moved to {site}, according to the entry that "
            f"mentions both?\nAnswer: {qty} units.")


def long_context_samples(seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    documents = [f"Documentation of the Python module `{name}`.\n\n{module_documentation(name)}" for name in LONG_MODULES]
    documents += [retrieval_document(rng) for _ in range(8)]
    return documents


# --- code -----------------------------------------------------------------------------------------------

CODE_MODULES = ("textwrap", "shlex", "fractions", "statistics", "heapq", "difflib", "bisect", "json.decoder",
                "csv", "string", "colorsys", "ipaddress", "calendar", "graphlib")


def code_excerpts(per_module: int = 4, min_lines: int = 12, max_lines: int = 90) -> list[str]:
    """Top-level functions and classes of standard-library modules, each with a task line naming it."""
    samples = []
    for name in CODE_MODULES:
        source = inspect.getsource(importlib.import_module(name))
        picked = 0
        for node in ast.parse(source).body:
            if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) or node.name.startswith("_"):
                continue
            segment = ast.get_source_segment(source, node)
            if segment is None or not min_lines <= segment.count("\n") + 1 <= max_lines:
                continue
            kind = "class" if isinstance(node, ast.ClassDef) else "function"
            samples.append(f"# Task: implement the {kind} `{node.name}` of Python's `{name}` module.\n{segment}")
            picked += 1
            if picked == per_module:
                break
    return samples


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "inputs_pretokenized": t}, ensure_ascii=False) + "\n"
                            for i, t in enumerate(texts)), encoding="utf-8")
    return path


def write_text_sets(target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    return [write_jsonl(target / "cot_calib.jsonl", cot_samples()),
            write_jsonl(target / "long_context_calib.jsonl", long_context_samples()),
            write_jsonl(target / "code_calib.jsonl", code_excerpts())]


if __name__ == "__main__":
    for written in write_text_sets(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET):
        print(written, written.stat().st_size)
