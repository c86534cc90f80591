"""One exercise in a running lab: start it, judge the learner's repair, give hints, show the solution, stop.

`start` restores the lab's warm snapshot (Lab.reset: seconds, not a boot) and puts the fault in without
showing it; the exercise that runs is recorded in the lab's run folder (exercise.json, gone with `reset`,
`up` and `down`), so `check`, `hint`, `solution` and `stop` are separate commands. `check` runs the
exercise's checks (the catalogue's judge) and answers with what the learner would see, not with ikedlab's
commands: a failed check is its `wrong` sentence.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from lab.catalogue.context import lab_context
from lab.catalogue.judge import CheckFailed, Stage, run_step
from lab.errors import IkedlabError, LabError, ProvisionError
from lab.exercises.exercise import Check, Exercise, find, hosts_of
from lab.host import Host
from lab.lab import EXERCISE, Lab
from lab.ownership import ikedlab_for
from lab.parallel import in_parallel
from lab.settings import COMMAND, SA_TIMEOUT
from lab.walkthrough import shows


@dataclass(frozen=True)
class Running:
    """What the run folder remembers of the exercise in the lab."""

    name: str
    started: float  # time.time() when it started
    lab_created: float  # the lab's blueprint: a record left by an earlier lab of this name is not this one's
    hints: int = 0  # hints given so far
    solution_shown: bool = False


@dataclass(frozen=True)
class Failed:
    check: Check
    detail: str  # ikedlab's own words (host, command, expected, found): for --debug and the scenario


@dataclass
class Verdict:
    failed: list[Failed] = field(default_factory=list)
    held: int = 0

    @property
    def repaired(self) -> bool:
        return not self.failed


def running(lab: Lab) -> Running | None:
    """The exercise running in `lab`, or None (none started, stopped, or the lab was reset or rebuilt)."""
    try:
        data = json.loads((lab.run_dir / EXERCISE).read_text())
        found = Running(**data)
    except (OSError, ValueError, TypeError):
        return None
    try:
        created = lab.read().created
    except LabError:
        return None
    return found if found.lab_created == created else None


def current(lab: Lab) -> tuple[Running, Exercise]:
    """The exercise running in `lab` and its folder read again; LabError saying how to start one."""
    found = running(lab)
    if found is None:
        again = ikedlab_for(lab.name)
        raise LabError(
            f"no exercise runs in lab '{lab.name}'",
            f"`{again} exercise list` shows them, `{again} exercise start NAME` starts one",
        )
    topology = lab.read().topology
    return found, find(found.name, topology=topology)


def _remember(lab: Lab, found: Running) -> None:
    path = lab.run_dir / EXERCISE
    partial = path.with_name(f".{EXERCISE}.partial")
    partial.write_text(json.dumps(asdict(found), indent=2))
    partial.replace(path)


def why_not(lab: Lab, exercise: Exercise) -> str | None:
    """Why `exercise` cannot run in `lab` (its gateways' platforms, its hosts), or None."""
    blueprint = lab.read()
    missing = [h for h in exercise.hosts() if h != "gateways" and h not in blueprint.topology.hosts]
    if missing:
        hosts = ", ".join(missing)
        return f"exercise {exercise.name} needs the guide's lab: no host {hosts} in lab '{lab.name}'"
    for gateway in blueprint.topology.gateways:
        platform = blueprint.platforms[gateway.name].name
        if platform not in exercise.platforms:
            return (
                f"exercise {exercise.name} is written for {', '.join(exercise.platforms)} gateways; "
                f"{gateway.name} runs {platform}"
            )
    return None


def stage(lab: Lab, hosts: dict[str, Host]) -> Stage:
    """What the catalogue's judge needs to run steps on `lab` (its hosts attached)."""
    blueprint = lab.read()
    platforms = {name: p.name for name, p in blueprint.platforms.items()}
    context = lab_context(blueprint.topology, platforms)
    return Stage(hosts, context, [g.name for g in blueprint.topology.gateways])


def needed_hosts(lab: Lab, exercise: Exercise) -> list[str]:
    """The hosts an exercise's steps act on or read, `gateways` as the lab's gateways."""
    topology = lab.read().topology
    names: list[str] = []
    for name in exercise.hosts():
        for one in [g.name for g in topology.gateways] if name == "gateways" else [name]:
            if one in topology.hosts and one not in names:
                names.append(one)
    return names


def start(
    lab: Lab, exercise: Exercise, attach: Callable[[list[str]], dict[str, Host]] | None = None
) -> float:
    """Restore `lab` from its warm snapshot and put the exercise's fault in; the seconds it took.

    `attach` opens the consoles of hosts that a restore did not leave open (the lab's own by default)."""
    if problem := why_not(lab, exercise):
        raise LabError(problem)
    started = time.monotonic()
    lab.reset()  # whatever the learner did before, and any earlier exercise, is gone
    hosts = (attach or _open(lab))(needed_hosts(lab, exercise))
    on = stage(lab, hosts)
    for i, step in enumerate(exercise.fault):
        try:
            run_step(on, f"{exercise.name}: fault[{i}]", step)
        except IkedlabError as e:
            raise LabError(
                f"exercise {exercise.name}: its fault could not be put in: {e.message}",
                f"`{ikedlab_for(lab.name)} reset` puts the lab back",
            ) from None
    _remember(lab, Running(exercise.name, time.time(), lab.read().created))
    return time.monotonic() - started


def judge(lab: Lab, exercise: Exercise, hosts: dict[str, Host]) -> Verdict:
    """Every check of `exercise`, on the lab as it is now (each waits at most what its step says).

    Checks that read different hosts run at once (a tunnel on the gateways, a ping from initlan): a first
    `check` on a broken lab waits for the slowest, not for the sum (4.7 s -> 2.7 s for wrong-srcid)."""
    on = stage(lab, hosts)
    # What iked logged before this judgement is history: a new process would read the whole log, and an old
    # "parent terminating" ended the wait for a tunnel that was still coming up.
    in_parallel([h for h in on.targets(("gateways",)) if not h.ike_log_mark], lambda h: h.mark_ike_log())
    results: dict[int, Failed | None] = {}

    def run_lane(lane: list[int]) -> None:
        for i in lane:
            check = exercise.checks[i]
            try:
                run_step(on, f"{exercise.name}: {check.where}", check.step)
                results[i] = None
            except CheckFailed as e:
                results[i] = Failed(check, e.message)
            except IkedlabError as e:  # a host that does not answer as a check expects: not repaired either
                results[i] = Failed(check, f"{exercise.name}: {check.where}: {e.message}")

    in_parallel(lanes(exercise, on), run_lane)
    verdict = Verdict()
    for i in range(len(exercise.checks)):
        if (failed := results[i]) is None:
            verdict.held += 1
        else:
            verdict.failed.append(failed)
    return verdict


def lanes(exercise: Exercise, on: Stage) -> list[list[int]]:
    """The checks (by index) in lanes that share no host: checks on one host keep their order in one lane
    (one console answers one command at a time)."""
    found: list[tuple[set[str], list[int]]] = []
    for i, check in enumerate(exercise.checks):
        hosts = {h.name for h in on.targets(tuple(hosts_of(check.step)))}
        joined = [lane for lane in found if lane[0] & hosts]
        merged = (
            hosts.union(*(lane[0] for lane in joined)),
            sorted(j for lane in joined for j in lane[1]) + [i],
        )
        found = [lane for lane in found if lane not in joined] + [merged]
    return [indices for _, indices in found]


def shown_by_guide_command(
    lab: Lab, exercise: Exercise, hosts: dict[str, Host], within: float = SA_TIMEOUT
) -> tuple[bool, str]:
    """Whether the solution's guide command, run where it says, shows the line the solution names within
    `within` seconds (a fault can take an exchange to show: init's next attempt, resp's new flows); and what
    it printed last. The scenario holds every exercise to it: a learner can find the fault that way."""
    found = exercise.found_with
    host = hosts[found.on]
    try:
        output = host.wait_until(
            f"`{found.command}` showing {found.shows!r}",
            lambda: host.run(found.command, timeout=COMMAND).output,
            lambda text: shows(found.shows, text),
            within,
            interval=1.0,
        )
    except ProvisionError as e:
        return False, e.message
    return True, output


def repair(lab: Lab, exercise: Exercise, hosts: dict[str, Host]) -> None:
    """Apply the solution's steps, as a learner following `solution` would."""
    on = stage(lab, hosts)
    for i, step in enumerate(exercise.solution):
        run_step(on, f"{exercise.name}: solution.steps[{i}]", step)


def hint(lab: Lab) -> tuple[int, Exercise]:
    """The number of the next hint (1-based, the last one again once all were given), recorded as given."""
    found, exercise = current(lab)
    number = min(found.hints + 1, len(exercise.hints))
    _remember(lab, replace(found, hints=max(found.hints, number)))
    return number, exercise


def solution(lab: Lab) -> Exercise:
    found, exercise = current(lab)
    _remember(lab, replace(found, solution_shown=True))
    return exercise


def stop(lab: Lab) -> Exercise | None:
    """Put the lab back as `up` made it (Lab.reset also forgets the exercise); the exercise that ran."""
    found = running(lab)
    exercise = None
    if found is not None:
        try:
            exercise = find(found.name, topology=lab.read().topology)
        except IkedlabError:
            exercise = None  # its folder is gone or broken: the lab is put back all the same
    lab.reset()
    return exercise


def _open(lab: Lab) -> Callable[[list[str]], dict[str, Host]]:
    def attach(names: list[str]) -> dict[str, Host]:
        missing = [n for n in names if n not in lab.hosts]
        if missing:
            lab.attach(only=missing)
        return {n: lab.hosts[n] for n in names}

    return attach
