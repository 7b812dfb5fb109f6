"""In CI a skipped test fails the run unless tests/allowed_skips.py lists it with its reason; locally a
skip stays a skip. Checked on a throwaway suite run by pytest in a subprocess, with the hooks of
tests/conftest.py and nothing else of ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.allowed_skips import ALLOWED_SKIPS

REPO = Path(__file__).resolve().parent.parent
LISTED = "tests/test_deploy.py::test_docker_compose_config_validates"

CONFTEST = "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n"

# Named after a listed test, so that its node ids are the listed ones.
LISTED_MODULE = """
import pytest

@pytest.mark.parametrize("profile", [None, "staging"])
def test_docker_compose_config_validates(profile):
    pytest.skip("the docker client has no compose plugin")
"""

UNLISTED_MODULE = """
import pytest

@pytest.mark.skip(reason="a marker that skips")
def test_marked():
    pass

def test_skips_itself():
    pytest.skip("the tool is missing")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_failure():
    assert False

def test_passes():
    pass
"""

SKIPPED_MODULE = """
import pytest

pytest.importorskip("no_such_module_for_the_ci_skip_check")

def test_never_collected():
    pass
"""


@pytest.fixture
def suite(pytester, monkeypatch):
    assert LISTED in ALLOWED_SKIPS and ALLOWED_SKIPS[LISTED].strip()
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # our `tests` package, not the throwaway one
    pytester.makeconftest(CONFTEST)
    tests = pytester.mkdir("tests")
    (tests / "test_deploy.py").write_text(LISTED_MODULE)
    (tests / "test_probe.py").write_text(UNLISTED_MODULE)
    (tests / "test_whole_module.py").write_text(SKIPPED_MODULE)

    def run(ci: bool):
        if ci:
            monkeypatch.setenv("CI", "true")
        else:
            monkeypatch.delenv("CI", raising=False)
        return pytester.runpytest_subprocess(
            "-p", "no:django", "-p", "no:cacheprovider", "--continue-on-collection-errors", "-rA"
        )

    return run


def test_in_ci_an_unlisted_skip_fails_and_a_listed_one_stays_a_skip(suite):
    result = suite(ci=True)

    result.assert_outcomes(passed=1, skipped=2, xfailed=1, failed=1, errors=2)
    output = result.stdout.str()
    assert result.ret != 0
    assert "skipped in CI: the tool is missing" in output  # the skip in the test's body: a failure
    assert "skipped in CI: a marker that skips" in output  # the skip at setup: an error
    assert "skipped in CI: could not import 'no_such_module_for_the_ci_skip_check'" in output  # the module
    assert "tests/allowed_skips.py lists the test with its reason" in output
    result.stdout.fnmatch_lines(["SKIPPED ?2? tests/test_deploy.py:*: the docker client has no compose plugin"])


def test_outside_ci_skips_stay_skips(suite):
    result = suite(ci=False)

    result.assert_outcomes(passed=1, skipped=5, xfailed=1)
    assert result.ret == 0
    assert "skipped in CI" not in result.stdout.str()
