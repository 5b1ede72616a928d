"""Print the mutation score of each module `make mutation` mutates, from mutmut's results.

mutmut (3.8, configured in pyproject.toml ``[tool.mutmut]``) leaves one ``.meta`` file per
mutated module under ``mutants/``, with an exit code per mutant: killed (the tests failed),
survived (they passed), timed out, or never tested (no selected test runs the function).
This script turns them into one row per module:

    module                        mutants  killed  timeout  survived  message  no tests  score  score*

``message`` counts the survivors whose only change is inside the message of an error
being raised (``raise QueryError(f"...")``, ``_bad(clause, "...")``): the wording a user
reads, which tests assert by its key words, not letter for letter. ``score`` is
(killed + timeout) / mutants; ``score*`` leaves the message-only survivors out of the
count. Modules without results (not run yet) are left out.

    python scripts/mutation_score.py              # the table
    python scripts/mutation_score.py --survivors  # and the survivors that change behaviour
    python scripts/mutation_score.py --min 90     # exit 1 if a module's score* is below 90 %

Show one survivor's change with ``mutmut show NAME``.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# mutmut's exit codes (mutmut/stats.py), by what they mean for the score.
KILLED = {1, 3}
TIMEOUT = {36, 24, -24, 152, 255, -9, -11}  # CPU limit, or the mutant crashed the worker
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_RUN = {None, 2, 34}  # not checked, interrupted, skipped


@dataclass
class ModuleScore:
    module: str
    counts: Counter = field(default_factory=Counter)
    survivors: list[str] = field(default_factory=list)  # behaviour-changing survivors
    untested: list[str] = field(default_factory=list)

    @property
    def mutants(self) -> int:
        return sum(self.counts[k] for k in ("killed", "timeout", "survived", "no tests", "other"))

    @property
    def caught(self) -> int:
        return self.counts["killed"] + self.counts["timeout"]

    def score(self, *, without_messages: bool = False) -> float:
        total = self.mutants - (self.counts["message"] if without_messages else 0)
        return 100.0 * self.caught / total if total else float("nan")


def mutated_modules(root: Path = ROOT) -> list[str]:
    """The source files ``[tool.mutmut] only_mutate`` names, in its order."""
    config = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["mutmut"]
    return list(config["only_mutate"])


def _is_error_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    f = node.func
    name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
    return name.endswith(("Error", "Exception")) or name == "_bad"


class _MaskMessages(ast.NodeTransformer):
    """Replace the arguments of every error constructor call (and of ``_bad``) by a
    placeholder, so two functions that differ only in error wording dump equal."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        if _is_error_call(node):
            node.args = [ast.Constant("<message>")] * min(len(node.args), 1)
            node.keywords = []
        return node


def _function_defs(tree: ast.Module) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    defs = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defs[node.name] = node
    return defs


def _dump(fn: ast.AST, *, mask: bool) -> str:
    body = ast.Module(body=list(fn.body), type_ignores=[])  # the name differs by design
    tree = ast.parse(ast.unparse(body))
    if mask:
        tree = _MaskMessages().visit(tree)
    return ast.dump(tree, annotate_fields=False)


def message_only(mutant: str, defs: dict[str, ast.AST]) -> bool:
    """True when the mutant changes nothing but the message of an error it raises."""
    name = mutant.rsplit(".", 1)[-1]
    orig = defs.get(name.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
    mutated = defs.get(name)
    if orig is None or mutated is None:
        return False
    return _dump(orig, mask=True) == _dump(mutated, mask=True)


def module_score(path: str, mutants_dir: Path) -> ModuleScore | None:
    meta_path = mutants_dir / f"{path}.meta"
    if not meta_path.exists():
        return None
    exit_codes: dict[str, int | None] = json.loads(meta_path.read_text("utf-8"))["exit_code_by_key"]
    defs = _function_defs(ast.parse((mutants_dir / path).read_text("utf-8")))
    score = ModuleScore(path.removesuffix(".py").replace("/", "."))
    for mutant, code in sorted(exit_codes.items()):
        if code in NOT_RUN:
            continue
        if code in KILLED:
            score.counts["killed"] += 1
        elif code in TIMEOUT:
            score.counts["timeout"] += 1
        elif code in SURVIVED:
            score.counts["survived"] += 1
            if message_only(mutant, defs):
                score.counts["message"] += 1
            else:
                score.survivors.append(mutant)
        elif code in NO_TESTS:
            score.counts["no tests"] += 1
            score.untested.append(mutant)
        else:  # suspicious, type-checker verdicts: not a kill
            score.counts["other"] += 1
            score.survivors.append(mutant)
    return score if score.mutants else None


def render(scores: list[ModuleScore]) -> str:
    head = ("module", "mutants", "killed", "timeout", "survived", "message", "no tests")
    lines = [f"{head[0]:<30}" + "".join(f"{h:>10}" for h in head[1:]) + "     score    score*"]
    total = ModuleScore("total")
    for s in scores:
        total.counts.update(s.counts)
        lines.append(_row(s))
    if len(scores) > 1:
        lines.append(_row(total))
    lines.append("score = (killed + timeout) / mutants; score* leaves message-only survivors out")
    return "\n".join(lines)


def _row(s: ModuleScore) -> str:
    c = s.counts
    cells = (s.mutants, c["killed"], c["timeout"], c["survived"], c["message"], c["no tests"])
    return (
        f"{s.module:<30}"
        + "".join(f"{v:>10}" for v in cells)
        + f"{s.score():>9.1f}%{s.score(without_messages=True):>9.1f}%"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mutants", type=Path, default=ROOT / "mutants", help="mutmut's folder")
    parser.add_argument("--survivors", action="store_true", help="list survivors and untested")
    parser.add_argument("--min", type=float, default=None, help="fail below this score* (%%)")
    args = parser.parse_args(argv)
    scores = [s for p in mutated_modules() if (s := module_score(p, args.mutants))]
    if not scores:
        print(f"no mutmut results under {args.mutants}: run `make mutation` first")
        return 1
    print(render(scores))
    if args.survivors:
        for s in scores:
            for name in s.survivors:
                print(f"survived   {name}")
            for name in s.untested:
                print(f"no tests   {name}")
    if args.min is not None:
        low = [s.module for s in scores if s.score(without_messages=True) < args.min]
        if low:
            print(f"below {args.min:g} %: {', '.join(low)}")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
