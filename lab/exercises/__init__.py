"""Troubleshooting exercises for learners: the guide's lab broken on purpose, checked, with hints.

An exercise is a folder under lab/exercises/library/NAME/ holding exercise.yaml: what the learner is told (the
symptom as a user reports it), the fault put into the provisioned lab, the checks that say it is repaired,
up to three hints from gentle to explicit, the solution (the fix, the guide's command that finds the fault
and the line to read in its output) and the walkthrough section it practises. Faults, checks and the
solution's steps are written in the catalogue's vocabulary (lab.catalogue.steps): one language for what a
lab must hold, whether a case or a learner's repair is judged. docs/exercises.md is the reference.

    exercise.py   the folder: exercise.yaml read and checked, nothing else in the folder
    session.py    one exercise in a running lab: start (restore + fault), check, hint, solution, stop; which
                  exercise runs is recorded in the lab's run folder (exercise.json)
    cli.py        `ikedlab exercise list|start|check|hint|solution|stop`
    library/      the exercises, one folder each (package data)
"""

from __future__ import annotations

from pathlib import Path

#: Where the exercises live: package data, so that `ikedlab exercise` works installed, not only in a checkout.
EXERCISES_DIR = Path(__file__).resolve().parent / "library"


def exercise_dirs(root: Path = EXERCISES_DIR) -> list[Path]:
    """Every exercise folder under `root` (a folder with an exercise.yaml), by name."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / "exercise.yaml").is_file())
