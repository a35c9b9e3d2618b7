"""Guards on the test suite itself."""


def test_every_test_has_a_timeout(pytestconfig):
    """A livelocked test fails after the ini's timeout instead of stalling CI (pytest-timeout)."""
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "install the test extra: pip install -e '.[test]'"
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
