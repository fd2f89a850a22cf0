"""One version number: pyproject.toml's, reported by flowkit.__version__ and heading the changelog."""

import re
import tomllib

import flowkit
from helpers import REPO


def test_version_agrees_everywhere():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    changelog = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    newest = re.search(r"^## (\S+)", changelog, re.MULTILINE).group(1)
    assert flowkit.__version__ == declared == newest
