"""minicount.notebook: the helpers the tutorials share."""

import pytest

from minicount.notebook import check_exercise, repository_root


def _stub(x):
    raise NotImplementedError


def _test_doubles(f):
    if f(2) != 4:  # raised by hand: pytest rewrites the asserts of a test module
        raise AssertionError(f"f(2) = {f(2)}, want 4")


@pytest.mark.parametrize(
    "attempt, passed, said",
    [
        (lambda x: 2 * x, True, "[ex] passed"),
        (lambda x: x + 1, False, "[ex] not right yet: f(2) = 3, want 4"),
        (_stub, False, "[ex] not done yet"),
    ],
)
def test_check_exercise_says_how_the_exercise_stands(attempt, passed, said, capsys):
    assert check_exercise("ex", attempt, _test_doubles) is passed
    assert capsys.readouterr().out.startswith(said)


def test_check_exercise_adds_the_explanation_to_a_failure(capsys):
    assert not check_exercise("ex", lambda x: 0, _test_doubles, explain=lambda e: "why: " + str(e))
    assert capsys.readouterr().out.splitlines() == [
        "[ex] not right yet: f(2) = 0, want 4",
        "why: f(2) = 0, want 4",
    ]


def test_other_errors_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        check_exercise("ex", lambda x: 1 / 0, _test_doubles)


def test_repository_root_is_found_from_a_subfolder(monkeypatch):
    root = repository_root()
    monkeypatch.chdir(root / "tutorials")
    assert repository_root() == root and (root / "pyproject.toml").is_file()
