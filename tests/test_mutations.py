"""The mutation check (tests/mutations.py): its rules on a toy tree, then the check itself on the package.

A mutant counts as caught only when a guarding test's assertion fails; the
toy tree shows each other outcome (survived, an error that is not an
assertion, a guard that fails before any mutation) is not counted as a catch.
"""

import os
import xml.etree.ElementTree as ET

import pytest

from tests import mutations

TOY = {
    "kdkeras/__init__.py": "def add(a, b):\n    return a + b\n\n\ndef sign(x):\n    return 1 if x >= 0 else -1\n",
    "tests/__init__.py": "",
    "tests/test_toy.py": (
        "from kdkeras import add, sign\n\n\n"
        "def test_add():\n    assert add(2, 3) == 5\n\n\n"
        "def test_sign_of_positives():\n    assert sign(3) == 1\n\n\n"
        "def test_broken():\n    assert add(1, 1) == 3\n"
    ),
}


@pytest.fixture
def toy(tmp_path):
    for path, text in TOY.items():
        os.makedirs(os.path.dirname(tmp_path / path), exist_ok=True)
        (tmp_path / path).write_text(text)
    return str(tmp_path)


def _case(what, old, new, *tests):
    return mutations.Case(what, "kdkeras/__init__.py", ((old, new),), tuple(f"tests/test_toy.py::{t}" for t in tests))


def test_only_an_assertion_counts_as_a_catch(toy):
    cases = [
        _case("caught", "return a + b", "return a - b", "test_add"),
        _case("survives: the guard never looks at zero", "if x >= 0", "if x > 0", "test_sign_of_positives"),
        _case("an import error is not a catch", "def add(a, b):", "def add(a, b) oops:", "test_add"),
        _case("a guard that fails unmutated is not a catch", "return a + b", "return a * b", "test_broken"),
    ]
    outcomes = mutations.check(cases, toy, log=lambda line: None)
    assert [o.status for o in outcomes] == ["caught", "survived", "error", "guard fails"]
    # The copy is left as it was after each mutant.
    assert open(os.path.join(toy, "kdkeras/__init__.py")).read() == TOY["kdkeras/__init__.py"]


def test_a_replacement_must_match_exactly_once(toy):
    with pytest.raises(ValueError, match="occurs 0 times"):
        mutations.mutate(toy, _case("stale", "return a / b", "return b", "test_add"))
    with pytest.raises(ValueError, match="occurs 2 times"):
        mutations.mutate(toy, _case("ambiguous", "return", "yield", "test_add"))


def test_the_failure_type_is_read_from_the_traceback():
    rewritten = ET.fromstring('<failure message="assert (300 == 250)">tests/x.py:9: in test\n    assert a == b\n'
                              'E   assert (300 == 250)\ntests/x.py:9: AssertionError</failure>')
    raised = ET.fromstring('<failure message="InvalidArgumentError: cannot compute">...\n'
                           'E   tensorflow.python.framework.errors_impl.InvalidArgumentError: cannot compute\n'
                           'kdkeras/losses.py:120: InvalidArgumentError</failure>')
    failed = ET.fromstring('<failure message="Failed: DID NOT RAISE">tests/x.py:3: Failed</failure>')
    assert [mutations._failure_type(e) for e in (rewritten, raised, failed)] == [
        "AssertionError", "InvalidArgumentError", "Failed"]
    assert mutations._failure_type(ET.fromstring('<failure type="AssertionError" message="x"/>')) == "AssertionError"


def test_every_case_names_tests_that_exist_and_a_text_found_once():
    root = mutations.ROOT
    for case in mutations.CASES:
        with open(os.path.join(root, case.path)) as f:
            text = f.read()
        for old, _ in case.subs:
            assert text.count(old) == 1, f"{case.what}: {old[:60]!r} occurs {text.count(old)} times in {case.path}"
        for test in case.tests:
            path, name = test.split("::")
            with open(os.path.join(root, path)) as f:
                assert f"def {name}(" in f.read(), f"{case.what}: no {test}"


@pytest.mark.slow
def test_every_quick_mutant_is_caught_by_a_test_assertion(tmp_path):
    # The package's numeric paths, each broken on purpose in a copy of the tree (docs/reliability.md, "Mutation
    # check"); the cases whose guards train run by hand: python tests/mutations.py.
    tree = mutations.copy_tree(str(tmp_path / "tree"))
    lines = []
    outcomes = mutations.check([c for c in mutations.CASES if c.quick], tree, log=lines.append)
    assert all(o.status == "caught" for o in outcomes), "\n".join(lines)
