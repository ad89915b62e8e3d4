"""The browser tier: an operator logged in to the session's Airflow in headless Chromium
(tests/browser.py; the session's browser is the `browser` fixture of tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.browser import Operator, log_in


@pytest.fixture
def operator(browser, airflow, request) -> Operator:
    op = log_in(browser, request.node.name)
    yield op
    op.close()
