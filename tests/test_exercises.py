"""Exercises without VMs: every exercise folder reads, a bad one is one line per problem naming file and
field, `start` breaks the right hosts and is remembered until the lab is reset, hints go from gentle to
explicit, and `check` speaks the learner's words in at most two lines."""

import shutil
from pathlib import Path

import pytest
from fakes import record_blueprint
from test_cli import ikedlab, one_line
from test_lab import fake  # noqa: F401 - the fixture: a Lab on a fake hypervisor and consoles

from lab.blueprint import UpRequest
from lab.catalogue.steps import Tunnel
from lab.exercises import EXERCISES_DIR, exercise_dirs, session
from lab.exercises.cli import verdict_lines
from lab.exercises.exercise import Check, ExerciseError, find, load, load_all
from lab.walkthrough import WALKTHROUGH, sections

GOOD = EXERCISES_DIR / "wrong-srcid"


def test_every_exercise_reads_and_there_are_at_least_eight():
    exercises = load_all()
    assert len(exercises) >= 8
    for e in exercises:
        assert 1 <= len(e.hints) <= 3 and e.checks and e.fault and e.solution, e.name
        assert e.practises in sections(WALKTHROUGH.read_text()), e.name


def test_each_fault_of_the_issue_has_its_exercise():
    # issue 22: wrong srcid, key filed under the wrong name, forwarding off, flows that do not match, a
    # proposal mismatch, UDP 500 blocked on the way, NAT without `peer any`, a syntax error.
    names = {p.name for p in exercise_dirs()}
    assert {
        "wrong-srcid",
        "key-misfiled",
        "forwarding-off",
        "flows-mismatch",
        "proposal-mismatch",
        "ike-blocked",
        "nat-without-peer-any",
        "syntax-error",
    } <= names


def _copy(tmp_path: Path, text: str, name: str = "broken") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "exercise.yaml").write_text(text)
    return folder


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("hints:", "hint:"), "broken/exercise.yaml: hint: unknown field"),
        (("from: initlan", "from: initlen"), "checks[1].ping.from: 'initlen' is not a host of the lab"),
        (("restart: init\n", "reboot: init\n"), "fault[1]: 'reboot': here a step is one of run, restart"),
        (
            ("  - ping:", "  - traffic:"),
            "checks[1]: 'traffic': here a step is one of tunnel, ike_sa, child_sa",
        ),
        (
            ("practises: 1.", "practises: 9."),
            "practises: '9. The two gateways and what each knows of the other' is",
        ),
        (("platforms: [linux]", "platforms: [obsd]"), "platforms: expected a list of platforms"),
        (
            ("    on: resp\n", "    on: nowhere\n"),
            "solution.found_with.on: 'nowhere' is not a host of the lab",
        ),
        (("title:", "title: &t x\ntitle2: *t\nold_title:"), "an alias (*)"),
        (("told:", "title: again\ntold:"), "'title' is defined twice"),
        (("within: 2", "within: soon"), "checks[0].tunnel.within: expected a number of seconds, not 'soon'"),
    ],
)
def test_a_bad_exercise_is_one_line_per_problem_naming_file_and_field(tmp_path, change, problem):
    old, new = change
    text = (GOOD / "exercise.yaml").read_text()
    assert old in text, old
    with pytest.raises(ExerciseError) as e:
        load(_copy(tmp_path, text.replace(old, new, 1)))
    assert problem in e.value.message, e.value.message
    assert "\n" not in e.value.message


def test_hints_are_at_most_three_and_wrong_is_one_line(tmp_path):
    text = (GOOD / "exercise.yaml").read_text()
    more = text.replace("hints:\n", "hints:\n  - one more\n")
    with pytest.raises(ExerciseError, match="hints: expected 1 to 3 texts"):
        load(_copy(tmp_path, more))
    two_lines = text.replace("wrong: initlan gets", "wrong: |-\n      initlan\n      gets")
    with pytest.raises(ExerciseError, match=r"checks\[1\].wrong: one line"):
        load(_copy(tmp_path, two_lines, "other"))


def test_an_exercise_folder_holds_only_its_files(tmp_path):
    folder = _copy(tmp_path, (GOOD / "exercise.yaml").read_text())
    (folder / "fix.sh").write_text("rm -rf /")
    (folder / "README.md").symlink_to("/etc/passwd")
    with pytest.raises(ExerciseError) as e:
        load(folder)
    assert e.value.problems == [
        "broken/README.md: not a plain file (an exercise folder holds only files)",
        "broken/fix.sh: an exercise folder holds exercise.yaml and README.md only",
    ]
    big = _copy(tmp_path, "title: x\n" + "# " + "x" * 40000 + "\n", "big")
    with pytest.raises(ExerciseError, match="big/exercise.yaml: larger than 32 KiB"):
        load(big)


def test_an_unknown_or_odd_name_lists_the_exercises():
    with pytest.raises(ExerciseError, match=r"no exercise nope \(exercises: both-passive, flows-mismatch"):
        find("nope")
    with pytest.raises(ExerciseError, match=r"no exercise '\.\./\.\./etc'"):
        find("../../etc")


def _verdict(*wrong: str) -> session.Verdict:
    step = Tunnel(state="established")
    return session.Verdict(
        [session.Failed(Check(f"checks[{i}]", step, w), "detail") for i, w in enumerate(wrong)]
    )


def test_check_says_what_is_still_wrong_in_the_learners_words_in_two_lines_at_most():
    exercise = find("wrong-srcid")
    one = verdict_lines(_verdict("no tunnel"), exercise, "ikedlab")
    assert one == "not yet: no tunnel"
    three = verdict_lines(_verdict("no tunnel", "no answer", "no NAT-T"), exercise, "ikedlab").splitlines()
    assert three == ["not yet: no tunnel", "         no answer (and 1 more)"]
    done = verdict_lines(session.Verdict(held=2), exercise, "ikedlab --name x")
    assert (
        done == "repaired: all 2 checks hold. `ikedlab --name x exercise stop` puts the lab back as it was."
    )
    assert "detail" in verdict_lines(_verdict("no tunnel"), exercise, "ikedlab", debug=True)


def test_start_breaks_the_lab_quietly_and_is_remembered_until_reset(fake):  # noqa: F811
    lab, _, consoles = fake
    lab.up(UpRequest(platform="linux"))
    exercise = find("wrong-srcid")
    session.start(lab, exercise)
    init = consoles["init"].log  # the consoles of the restored lab
    assert any("srcid init.example.net" in str(c) for c in init), init
    assert session.running(lab).name == "wrong-srcid"
    assert [session.hint(lab)[0] for _ in range(4)] == [1, 2, 3, 3]
    assert session.running(lab).hints == 3
    lab.reset()
    assert session.running(lab) is None, "a reset lab holds no exercise"


def test_an_exercise_written_for_linux_is_refused_on_openbsd_gateways(fake):  # noqa: F811
    lab, _, _ = fake
    lab.up(UpRequest(platform="openbsd"))
    with pytest.raises(Exception, match="written for linux gateways; init runs openbsd"):
        session.start(lab, find("wrong-srcid"))
    assert session.running(lab) is None


def test_a_record_of_an_earlier_lab_is_not_this_labs(tmp_path, monkeypatch):
    monkeypatch.setenv("IKEDLAB_STATE_DIR", str(tmp_path / "state"))
    from lab.lab import EXERCISE, Lab

    lab = Lab("t")
    record_blueprint(lab.run_dir, "t")
    (lab.run_dir / EXERCISE).write_text('{"name": "wrong-srcid", "started": 1, "lab_created": 2}')
    assert session.running(lab) is None


def test_the_cli_without_a_running_exercise_is_one_line(tmp_path):
    record_blueprint(tmp_path / "state" / "labs" / "default")
    line = one_line(ikedlab("exercise", "hint", tmp_path=tmp_path))
    assert line == "ikedlab: no exercise runs in lab 'default'"
    listed = ikedlab("exercise", "list", tmp_path=tmp_path)
    assert listed.returncode == 0 and "wrong-srcid" in listed.stdout, listed.stderr
    assert len(listed.stdout.splitlines()) == len(exercise_dirs()) + 1
    shutil.rmtree(tmp_path / "state")
    assert one_line(ikedlab("exercise", "start", "nope", tmp_path=tmp_path)).startswith(
        "ikedlab: no exercise nope"
    )


def test_checks_on_different_hosts_run_at_once_and_checks_on_one_host_in_order():
    from lab.catalogue.context import lab_context
    from lab.catalogue.judge import Stage
    from lab.placement import load_topology

    topology = load_topology(None)
    hosts = {name: type("H", (), {"name": name})() for name in topology.hosts}
    on = Stage(hosts, lab_context(topology, {}), ["init", "resp"])  # type: ignore[arg-type]
    assert session.lanes(find("wrong-srcid"), on) == [[0], [1]]  # gateways; initlan
    assert session.lanes(find("nat-without-peer-any"), on) == [[0, 1], [2]]  # gateways, then init; initlan
