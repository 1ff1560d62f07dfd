"""Options shared by every test directory.

``pytest_addoption`` must live in a conftest that pytest loads at start-up;
this one is, whichever directory under tests/ is given on the command line.
"""


def pytest_addoption(parser):
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files (testdata/*.out.yaml) from the current output "
        "instead of comparing; same as FLUXGATE_UPDATE_GOLDEN=1",
    )
